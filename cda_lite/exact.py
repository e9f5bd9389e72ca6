"""Exact solutions on Gaussian mixtures: reward tilts, constrained alignment (UR-A, Theorem 1),
product composition (UR-C "AND", Theorem 3) and mixture composition ("OR", Theorem 5).

Everything here is closed form (or a fine 2-D grid where no closed form exists) and serves as the
ground truth that learned and sampled answers are checked against. Chapters 2, 3, 5, 6.

Rewards with a closed-form tilt are linear and concave quadratic. Their λ-weighted sum is

    Σ_i λ_i r_i(x) = −½ xᵀP x + hᵀx + c,

and a Gaussian component N(μ, Σ) tilted by it stays Gaussian with precision Σ⁻¹ + P and mean
(Σ⁻¹ + P)⁻¹(Σ⁻¹μ + h); its weight is multiplied by ∫ N(x; μ, Σ) e^{−½xᵀPx + hᵀx} dx.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize, root
from scipy.special import logsumexp

from cda_lite._checks import (InputError, as_float_array, check_callable_reward, check_finite, check_psd,
                              check_simplex)
from cda_lite.gmm import GaussianMixture
from cda_lite.grid import Grid, GridDensity

__all__ = [
    "LinearReward", "QuadraticReward", "InfeasibleConstraintError", "tilt", "log_partition",
    "expected_rewards", "kl_tilt", "dual_function", "align_dual", "AlignResult", "product_dual",
    "ProductResult", "mixture_dual", "MixtureResult", "gaussian_kl", "reward_from_dict",
]


class InfeasibleConstraintError(ValueError):
    """No λ ≥ 0 reaches the constraint levels (Slater's condition fails)."""

    def __init__(self, message: str, constraints: list[int]):
        super().__init__(message)
        self.constraints = constraints


# --------------------------------------------------------------------------- rewards
def _check_reward_input(x, dim: int) -> None:
    shape = tuple(np.shape(x))
    if not shape or shape[-1] != dim:
        raise InputError(f"x: a reward on {dim}-D points needs shape (n, {dim}), got shape {shape}")


class LinearReward:
    """r(x) = wᵀx (unbounded above: any level is reachable on its own)."""

    kind = "linear"

    def __init__(self, w, name: str | None = None):
        self.w = as_float_array(w, "w", ndim=1)
        check_finite(self.w, "w")
        self.name = name or f"linear{np.round(self.w, 3).tolist()}"

    @property
    def dim(self):
        return len(self.w)

    def __call__(self, x):
        _check_reward_input(x, self.dim)
        if isinstance(x, torch.Tensor):
            return x @ torch.as_tensor(self.w, dtype=x.dtype, device=x.device)
        return np.asarray(x, dtype=float) @ self.w

    def quadratic_form(self):
        """(P, h, c) with r(x) = −½xᵀPx + hᵀx + c."""
        return np.zeros((self.dim, self.dim)), self.w.copy(), 0.0

    def expectation(self, gm: GaussianMixture) -> float:
        return float(self.w @ gm.mean())

    @property
    def sup(self) -> float:
        return math.inf

    def to_dict(self):
        return {"type": "linear", "w": self.w.tolist()}

    def __repr__(self):
        return f"LinearReward(w={self.w.tolist()})"


class QuadraticReward:
    """r(x) = −(x−c)ᵀA(x−c), A symmetric PSD (bounded above by 0, reached only at x = c)."""

    kind = "quadratic"

    def __init__(self, A, c, name: str | None = None):
        self.A = as_float_array(A, "A", ndim=2)
        self.c = as_float_array(c, "c", ndim=1)
        check_finite(self.A, "A")
        check_finite(self.c, "c")
        if self.A.shape != (len(self.c), len(self.c)):
            raise ValueError(f"A: expected shape ({len(self.c)}, {len(self.c)}) to match c, got {self.A.shape}")
        check_psd(self.A, "A")
        self.name = name or "quadratic"

    @property
    def dim(self):
        return len(self.c)

    def __call__(self, x):
        _check_reward_input(x, self.dim)
        if isinstance(x, torch.Tensor):
            A = torch.as_tensor(self.A, dtype=x.dtype, device=x.device)
            d = x - torch.as_tensor(self.c, dtype=x.dtype, device=x.device)
            return -((d @ A) * d).sum(-1)
        d = np.asarray(x, dtype=float) - self.c
        return -np.einsum("ni,ij,nj->n", d, self.A, d)

    def quadratic_form(self):
        return 2 * self.A, 2 * self.A @ self.c, -float(self.c @ self.A @ self.c)

    def expectation(self, gm: GaussianMixture) -> float:
        d = gm.means - self.c
        per = np.einsum("ij,kji->k", self.A, gm.covs) + np.einsum("ki,ij,kj->k", d, self.A, d)
        return float(-gm.weights @ per)

    @property
    def sup(self) -> float:
        return 0.0

    def to_dict(self):
        return {"type": "quadratic", "A": self.A.tolist(), "c": self.c.tolist()}

    def __repr__(self):
        return f"QuadraticReward(A={self.A.tolist()}, c={self.c.tolist()})"


def reward_from_dict(d: dict, name: str = "reward"):
    """Build a reward from its problem-file entry ``{"type": "linear", "w": ...}`` or
    ``{"type": "quadratic", "A": ..., "c": ...}``."""
    if not isinstance(d, dict) or "type" not in d:
        raise ValueError(f"{name}: expected an object with a 'type' key ('linear' or 'quadratic')")
    keys = {"linear": {"type", "w", "name"}, "quadratic": {"type", "A", "c", "name"}}
    kind = d["type"]
    if kind not in keys:
        raise ValueError(f"{name}: unknown reward type {kind!r}; expected 'linear' or 'quadratic'")
    extra = set(d) - keys[kind]
    if extra:
        raise ValueError(f"{name}: unknown key(s) {sorted(extra)} for a {kind} reward")
    try:
        if kind == "linear":
            return LinearReward(d["w"], name=d.get("name"))
        return QuadraticReward(d["A"], d["c"], name=d.get("name"))
    except KeyError as e:
        raise ValueError(f"{name}: missing key {e.args[0]!r} for a {kind} reward") from None
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


# --------------------------------------------------------------------------- tilts
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


# --------------------------------------------------------------------------- AND
def gaussian_kl(mu_p, cov_p, mu_q, cov_q) -> float:
    """KL(N(μ_p, Σ_p) ‖ N(μ_q, Σ_q)) in closed form."""
    d = len(mu_p)
    prec_q = np.linalg.inv(cov_q)
    diff = np.asarray(mu_q) - np.asarray(mu_p)
    return float(0.5 * (np.trace(prec_q @ cov_p) + diff @ prec_q @ diff - d
                        + np.linalg.slogdet(cov_q)[1] - np.linalg.slogdet(cov_p)[1]))


@dataclass
class ProductResult:
    """Solution of min_p max_i KL(p‖q_i): the tilted product ∝ ∏ q_i^{λ_i}, λ on the simplex."""

    lam: np.ndarray
    kls: np.ndarray  # KL(target ‖ q_i)
    target: object  # GaussianMixture (Gaussian experts) or GridDensity (mixtures)
    exact: str  # "closed form" or "grid"

    @property
    def max_kl(self) -> float:
        return float(self.kls.max())


class _GaussianProduct:
    """∏ N(μ_i, Σ_i)^{λ_i}: Gaussian with precision Σλ_iΣ_i⁻¹, in closed form."""

    def __init__(self, experts):
        self.mu = np.stack([e.means[0] for e in experts])
        self.cov = np.stack([e.covs[0] for e in experts])
        self.prec = np.linalg.inv(self.cov)
        self.d = self.mu.shape[1]

    def gaussian(self, lam):
        prec = np.einsum("i,ijk->jk", lam, self.prec)
        cov = np.linalg.inv(prec)
        mean = cov @ np.einsum("i,ijk,ik->j", lam, self.prec, self.mu)
        return mean, cov

    def log_Z(self, lam):
        lam = np.asarray(lam, float)
        prec = np.einsum("i,ijk->jk", lam, self.prec)
        bvec = np.einsum("i,ijk,ik->j", lam, self.prec, self.mu)
        logdet = np.linalg.slogdet(self.cov)[1]
        c0 = np.sum(lam * (-0.5 * (self.d * math.log(2 * math.pi) + logdet)
                           - 0.5 * np.einsum("ij,ijk,ik->i", self.mu, self.prec, self.mu)))
        return float(c0 + 0.5 * bvec @ np.linalg.solve(prec, bvec) + 0.5 * self.d * math.log(2 * math.pi)
                     - 0.5 * np.linalg.slogdet(prec)[1])

    def kls(self, lam):
        mean, cov = self.gaussian(lam)
        return np.array([gaussian_kl(mean, cov, m, c) for m, c in zip(self.mu, self.cov)])

    def target(self, lam):
        mean, cov = self.gaussian(lam)
        return GaussianMixture.gaussian(mean, cov)


class _GridProduct:
    """∏ q_i^{λ_i} for mixtures, normalised on a fine 2-D grid."""

    def __init__(self, experts, n=300):
        self.grid = Grid.around(experts, n=n)
        pts = self.grid.points
        self.logq = np.stack([e.log_prob(pts) for e in experts])  # (m, n²)
        self.log_area = math.log(self.grid.cell_area)

    def log_Z(self, lam):
        return float(logsumexp(np.asarray(lam) @ self.logq) + self.log_area)

    def target(self, lam):
        return GridDensity(self.grid, np.asarray(lam) @ self.logq)

    def kls(self, lam):
        p = self.target(lam)
        return np.array([p.kl_to(lq) for lq in self.logq])


def _simplex_solve(objective, equalised, m, maximise=False, tol=1e-12, lam0=None):
    """Optimise a smooth concave/convex function on the simplex, then polish the KKT conditions
    (``equalised(λ)`` equal across the active set) by root finding."""
    sign = -1.0 if maximise else 1.0
    cons = [{"type": "eq", "fun": lambda l: np.sum(l) - 1.0, "jac": lambda l: np.ones_like(l)}]
    x0 = np.full(m, 1.0 / m) if lam0 is None else np.asarray(lam0, float)
    res = minimize(lambda l: sign * objective(np.clip(l, 0, None)), x0, method="SLSQP", bounds=[(0, 1)] * m,
                   constraints=cons, options=dict(maxiter=1000, ftol=1e-14))
    lam = np.clip(res.x, 0, None)
    lam /= lam.sum()
    active = lam > 1e-6
    for _ in range(m + 1):
        A = np.flatnonzero(active)
        if len(A) == 1:
            lam = np.zeros(m)
            lam[A[0]] = 1.0
        else:
            def eqs_full(la):
                full = np.zeros(m)
                full[A] = la
                v = equalised(full)[A]
                return np.concatenate([v[1:] - v[0], [np.sum(la) - 1.0]])

            sol = root(eqs_full, lam[A] / lam[A].sum(), method="hybr", tol=tol)
            cand = np.zeros(m)
            cand[A] = sol.x
            if sol.success and np.all(cand[A] >= 0):
                lam = cand
            elif np.any(cand[A] < 0):
                active[A[np.argmin(cand[A])]] = False
                continue
        v = equalised(lam)
        level = v[active].max()
        # KKT: an inactive expert's value may not exceed the common level of the active ones — its KL
        # (AND, min-max) or its cross-entropy (OR, where ∂H/∂λ_i = CE_i − 1) would pull λ_i up
        viol = (~active) & (v > level + 1e-9)
        if not viol.any():
            break
        active |= viol
    return lam


def product_dual(experts, grid_n: int = 300) -> ProductResult:
    """Exact AND composition (Theorem 3): λ* on the simplex minimising max_i KL(q^λ_AND ‖ q_i),
    with q^λ_AND ∝ ∏ q_i^{λ_i}. D(λ) = −log Z_AND(λ) is maximised; at λ*, experts with λ*_i > 0 share
    one KL. Closed form when every expert is a single Gaussian; a 2-D grid otherwise."""
    experts = _check_experts(experts)
    m = len(experts)
    fam = _GaussianProduct(experts) if all(e.n_components == 1 for e in experts) else _GridProduct(experts, grid_n)
    lam = _simplex_solve(fam.log_Z, fam.kls, m, maximise=False)
    return ProductResult(lam, fam.kls(lam), fam.target(lam), "closed form" if isinstance(fam, _GaussianProduct) else "grid")


# --------------------------------------------------------------------------- OR
@dataclass
class MixtureResult:
    """Solution of the OR problem: the mixture Σ λ_i q_i of maximal entropy (Theorem 5)."""

    lam: np.ndarray
    target: GaussianMixture
    entropy: float  # H(Σ λ_i q_i)
    cross_entropies: np.ndarray  # −E_{q_i} log target: equal across active experts at λ*


def mixture_dual(experts, grid_n: int = 400) -> MixtureResult:
    """Exact OR composition: λ* = argmax_{λ∈Δ} H(Σ λ_i q_i). At λ*, experts with λ*_i > 0 have equal
    cross-entropy −E_{q_i} log p; with disjoint supports λ*_i ∝ e^{H(q_i)}. Computed on a 2-D grid."""
    experts = _check_experts(experts)
    if experts[0].dim != 2:
        raise ValueError(f"mixture_dual works on 2-D experts (a grid); got dimension {experts[0].dim}")
    grid = Grid.around(experts, n=grid_n)
    pts = grid.points
    q = np.stack([np.exp(e.log_prob(pts)) for e in experts])  # (m, n²)
    area = grid.cell_area
    q = q / (q.sum(1, keepdims=True) * area)

    def cross_entropies(lam):
        p = np.maximum(lam @ q, 1e-300)
        return -(q * np.log(p)).sum(1) * area

    def entropy(lam):
        return float(np.dot(lam, cross_entropies(lam)))  # H(p) = Σ λ_i (−E_{q_i} log p)

    lam = _simplex_solve(entropy, cross_entropies, len(experts), maximise=True)
    return MixtureResult(lam, GaussianMixture.mixture_of(experts, lam), entropy(lam), cross_entropies(lam))


def _check_experts(experts):
    experts = list(experts)
    if len(experts) < 2:
        raise ValueError(f"experts: need at least 2 experts to compose, got {len(experts)}")
    for i, e in enumerate(experts):
        if not isinstance(e, GaussianMixture):
            raise ValueError(f"experts[{i}]: expected a GaussianMixture, got {type(e).__name__}")
        if e.dim != experts[0].dim:
            raise ValueError(f"experts[{i}]: dimension {e.dim} differs from experts[0]'s {experts[0].dim}")
    return experts


# --------------------------------------------------------------------------- CLI
def solve_problem(problem) -> dict:
    """The exact answer to a problem file as a JSON-able dict (see :mod:`cda_lite.problems`)."""
    from cda_lite.problems import AlignmentProblem

    if isinstance(problem, AlignmentProblem):
        return align_dual(problem.base, problem.rewards, problem.thresholds).to_json()
    and_res = product_dual(problem.experts)
    or_res = mixture_dual(problem.experts) if problem.experts[0].dim == 2 else None
    return {"lam_and": and_res.lam.tolist(), "kls_and": and_res.kls.tolist(),
            "lam_or": None if or_res is None else or_res.lam.tolist()}


def main(argv=None) -> int:
    """``python -m cda_lite.exact FILE``: one JSON line; an infeasible problem prints an ``error`` object
    and exits 2; a bad file is one line on stderr and exit 2 (:mod:`cda_lite._cli`)."""
    from cda_lite._cli import Parser, entry_point, existing_file
    from cda_lite.problems import load_problem

    @entry_point("python -m cda_lite.exact")
    def _main(argv):
        p = Parser(prog="python -m cda_lite.exact", description="Print the exact solution of a 2-D problem file as JSON.")
        p.add_argument("problem", type=existing_file, help="path to a problem JSON file")
        args = p.parse_args(argv)
        try:
            out = solve_problem(load_problem(args.problem))
        except InfeasibleConstraintError as e:
            print(json.dumps({"error": "infeasible", "message": str(e), "constraints": e.constraints}))
            return 2
        print(json.dumps(out))
        return 0

    return _main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
