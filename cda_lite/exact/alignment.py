"""Exact reward tilts and constrained alignment (UR-A, Theorem 1) on Gaussian mixtures. Chapters 2, 3.

A Gaussian component N(μ, Σ) tilted by Σ λ_i r_i(x) = −½ xᵀP x + hᵀx + c stays Gaussian with precision
Σ⁻¹ + P and mean (Σ⁻¹ + P)⁻¹(Σ⁻¹μ + h); its weight is multiplied by ∫ N(x; μ, Σ) e^{−½xᵀPx + hᵀx} dx.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from cda_lite._checks import InputError, as_float_array, check_callable_reward, check_finite
from cda_lite.errors import InfeasibleConstraintError
from cda_lite.gmm import GaussianMixture

__all__ = ["tilt", "log_partition", "expected_rewards", "kl_tilt", "dual_function", "align_dual", "AlignResult",
           "InfeasibleConstraintError"]


REWARD_API = ("quadratic_form", "expectation", "sup", "dim")


def _check_rewards(rewards, needs=REWARD_API) -> list:
    """The exact computations need reward objects with a closed form (LinearReward, QuadraticReward):
    ``needs`` the attributes the caller uses."""
    rewards = list(rewards)
    if not rewards:
        raise InputError("rewards: need at least one reward")
    for i, r in enumerate(rewards):
        check_callable_reward(r, f"rewards[{i}]", needs)
    return rewards


def _is_constant(r) -> bool:
    P, h, _ = r.quadratic_form()
    return not np.any(P) and not np.any(h)


def _levels(thresholds, m: int) -> np.ndarray:
    b = as_float_array(thresholds, "thresholds", ndim=1)
    check_finite(b, "thresholds")
    if len(b) != m:
        raise InputError(f"thresholds: expected {m} levels (one per reward), got {len(b)}")
    return b


def _combined_form(rewards, lam, dim):
    rewards = _check_rewards(rewards, ("quadratic_form", "dim"))
    lam = as_float_array(lam, "lam", ndim=1)
    if len(lam) != len(rewards):
        raise ValueError(f"lam: expected {len(rewards)} multipliers (one per reward), got {len(lam)}")
    check_finite(lam, "lam")
    P, h, c = np.zeros((dim, dim)), np.zeros(dim), 0.0
    for i, (r, l) in enumerate(zip(rewards, lam)):
        if r.dim != dim:
            raise ValueError(f"rewards[{i}]: dimension {r.dim} does not match the mixture's {dim}")
        Pi, hi, ci = r.quadratic_form()
        P, h, c = P + l * Pi, h + l * hi, c + l * ci
    return P, h, c


def _tilt_parts(gm: GaussianMixture, rewards, lam):
    """Tilted components and log Z(λ) = log E_q[e^{λᵀr}]."""
    P, h, c = _combined_form(rewards, lam, gm.dim)
    prec0 = np.linalg.inv(gm.covs)
    prec = prec0 + P
    try:
        chol = np.linalg.cholesky(prec)
    except np.linalg.LinAlgError:
        raise ValueError("lam: the tilt is not normalisable (Σ_k⁻¹ + P is not positive definite)") from None
    cov_new = np.linalg.inv(prec)
    b = np.einsum("kij,kj->ki", prec0, gm.means) + h
    mu_new = np.einsum("kij,kj->ki", cov_new, b)
    _, logdet0 = np.linalg.slogdet(gm.covs)
    logdet_prec = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(1)
    log_int = (-0.5 * np.einsum("ki,kij,kj->k", gm.means, prec0, gm.means)
               + 0.5 * np.einsum("ki,ki->k", mu_new, b) - 0.5 * logdet_prec - 0.5 * logdet0)
    logw = np.log(gm.weights) + log_int
    log_Z = float(logsumexp(logw) + c)
    w_new = np.exp(logw - logsumexp(logw))
    return w_new, mu_new, cov_new, log_Z


def tilt(gm: GaussianMixture, rewards, lam) -> GaussianMixture:
    """The exact tilted mixture q_λ(x) = q(x) e^{Σ λ_i r_i(x)} / Z(λ) (Theorem 1's optimum form)."""
    w, mu, cov, _ = _tilt_parts(gm, list(rewards), lam)
    keep = w > 0
    return GaussianMixture(w[keep] / w[keep].sum(), mu[keep], cov[keep])


def log_partition(gm: GaussianMixture, rewards, lam) -> float:
    """log Z(λ) = log E_q[exp(Σ λ_i r_i)]."""
    return _tilt_parts(gm, list(rewards), lam)[3]


def expected_rewards(gm: GaussianMixture, rewards) -> np.ndarray:
    """[E_gm r_i] in closed form."""
    rewards = _check_rewards(rewards, ("expectation",))
    return np.array([r.expectation(gm) for r in rewards])


def kl_tilt(gm: GaussianMixture, rewards, lam) -> float:
    """KL(q_λ ‖ q) = λᵀ E_{q_λ}[r] − log Z(λ)."""
    rewards = list(rewards)
    q_lam = tilt(gm, rewards, lam)
    return float(np.dot(lam, expected_rewards(q_lam, rewards)) - log_partition(gm, rewards, lam))


def dual_function(gm: GaussianMixture, rewards, thresholds, lam) -> float:
    """D(λ) = λᵀb − log Z(λ): concave, with gradient b − E_{q_λ}[r]."""
    rewards = _check_rewards(rewards, ("quadratic_form", "dim"))
    b = _levels(thresholds, len(rewards))
    log_z = log_partition(gm, rewards, lam)  # checks λ
    return float(np.dot(np.asarray(lam, dtype=float), b) - log_z)


# --------------------------------------------------------------------------- UR-A
@dataclass
class AlignResult:
    """Solution of min KL(p‖q) s.t. E_p r_i ≥ b_i."""

    lam: np.ndarray  # λ* ≥ 0
    target: GaussianMixture  # q_{λ*}
    kl: float  # KL(target ‖ q)
    expected: np.ndarray  # E_target[r_i]
    thresholds: np.ndarray
    active: np.ndarray = field(default=None)  # bool mask: λ*_i > 0

    def to_json(self) -> dict:
        return {"lam": self.lam.tolist(), "kl": self.kl, "expected": self.expected.tolist()}


def _grad_dual(gm, rewards, b, lam):
    return b - expected_rewards(tilt(gm, rewards, lam), rewards)


def align_dual(gm: GaussianMixture, rewards, thresholds, lam_max: float = 1e6, tol: float = 1e-10) -> AlignResult:
    """Exact solution of UR-A (Theorem 1): λ* = argmax_{λ≥0} λᵀb − log Z(λ), target q_{λ*}.

    Raises :class:`InfeasibleConstraintError` naming the constraint(s) that no λ ≥ 0 can meet.
    KKT holds at the answer: active constraints (λ*_i > 0) are met with equality.
    """
    rewards = _check_rewards(rewards)
    b = _levels(thresholds, len(rewards))
    for i, r in enumerate(rewards):
        if r.dim != gm.dim:
            raise InputError(f"rewards[{i}]: dimension {r.dim} does not match the mixture's {gm.dim}")
    # E r ≥ sup r needs all the mass where r = sup: only a constant reward (r ≡ sup) meets it
    bad = [i for i, r in enumerate(rewards) if b[i] > r.sup or (b[i] == r.sup and not _is_constant(r))]
    if bad:
        raise InfeasibleConstraintError(
            "infeasible constraint level(s): " + "; ".join(
                f"constraint {i} ({rewards[i].name}) asks E r ≥ {b[i]:g} but r ≤ {rewards[i].sup:g} everywhere"
                for i in bad), bad)
    m = len(rewards)

    def neg_dual(lam):
        w, mu, cov, logZ = _tilt_parts(gm, rewards, lam)
        g = b - expected_rewards(GaussianMixture(w / w.sum(), mu, cov), rewards)
        return -(lam @ b - logZ), -g

    res = minimize(neg_dual, np.zeros(m), jac=True, method="L-BFGS-B", bounds=[(0, lam_max)] * m,
                   options=dict(maxiter=5000, ftol=1e-15, gtol=1e-12))
    lam = _polish_align(gm, rewards, b, np.clip(res.x, 0, lam_max), tol)
    target = tilt(gm, rewards, lam)
    expected = expected_rewards(target, rewards)
    scale = np.maximum(1.0, np.abs(b))
    violated = [i for i in range(m) if expected[i] < b[i] - 1e-6 * scale[i]]
    if violated or np.any(lam >= 0.999 * lam_max):
        idx = violated or [int(np.argmax(lam))]
        raise InfeasibleConstraintError(
            "no λ ≥ 0 reaches the constraint levels; likely infeasible: " + "; ".join(
                f"constraint {i} ({rewards[i].name}): level {b[i]:g}, best reachable E r ≈ {expected[i]:.4g}"
                for i in idx), idx)
    return AlignResult(lam, target, kl_tilt(gm, rewards, lam), expected, b, lam > 0)


def _polish_align(gm, rewards, b, lam, tol):
    """Newton's method on the active set (E r_A = b_A), with KKT checks of the inactive ones."""
    m = len(lam)
    active = lam > 1e-9
    for _ in range(2 * m + 2):
        lam = np.where(active, lam, 0.0)
        for _ in range(50):
            g = _grad_dual(gm, rewards, b, lam)
            if not active.any() or np.max(np.abs(g[active])) < tol * max(1.0, np.abs(b).max()):
                break
            A = np.flatnonzero(active)
            J = np.empty((len(A), len(A)))
            for j, a in enumerate(A):
                hstep = 1e-6 * max(1.0, lam[a])
                lp, lm = lam.copy(), lam.copy()
                lp[a] += hstep
                lm[a] -= hstep
                J[:, j] = (_grad_dual(gm, rewards, b, lp)[A] - _grad_dual(gm, rewards, b, lm)[A]) / (2 * hstep)
            try:
                step = np.linalg.solve(J, -g[A])
            except np.linalg.LinAlgError:
                break
            lam = lam.copy()
            lam[A] = lam[A] + step
            if np.any(lam[A] < 0):
                break
        g = _grad_dual(gm, rewards, b, np.clip(lam, 0, None))
        neg = active & (lam < 0)
        newly = (~active) & (g > tol * max(1.0, np.abs(b).max()))  # inactive constraint violated
        if not neg.any() and not newly.any():
            return np.clip(lam, 0, None)
        if neg.any():
            active[np.argmin(np.where(active, lam, np.inf))] = False
            lam = np.clip(lam, 0, None)
        else:
            active |= newly
            lam = np.clip(lam, 0, None)
    return np.clip(lam, 0, None)
