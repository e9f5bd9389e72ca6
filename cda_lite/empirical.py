"""The dual of Theorem 1 on an empirical law: λ*(q̂) of a sampler known only by its samples.

For samples x_1..x_n of a model q̂ and rewards r_i, the constrained problem
min_p KL(p ‖ q̂_n) s.t. E_p r_i ≥ b_i over reweightings p of the empirical law q̂_n has the same form
as Theorem 1: p_j ∝ exp(λᵀ r(x_j)) with

    λ*(q̂) = argmax_{λ ≥ 0}  λᵀb − log (1/n) Σ_j exp(λᵀ r(x_j)).

As n grows λ*(q̂_n) → λ*(q̂), the multiplier a perfect fine-tune of that sampler would reach, so
λ*(q̂) − λ*(q) measures what pretraining costs and λ_learned − λ*(q̂) what the primal-dual
optimisation costs (Chapter 4, ``python -m cda_lite.bench align2d``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from cda_lite.errors import InfeasibleConstraintError


@dataclass
class EmpiricalDual:
    lam: np.ndarray  # λ*(q̂_n) ≥ 0
    expected: np.ndarray  # E_p r_i under the reweighted samples
    kl: float  # KL(p ‖ q̂_n) of the reweighting
    ess: float  # effective sample size 1/Σ p_j² of the weights
    n: int


def empirical_align_dual(values, thresholds, lam_max: float = 1e4, lower=None) -> EmpiricalDual:
    """λ*(q̂_n) from reward values ``values`` of shape (m, n) (row i: r_i at the n samples) and
    levels ``thresholds`` (m,), by L-BFGS-B on the concave dual. Raises
    :class:`~cda_lite.exact.InfeasibleConstraintError` when no reweighting of the samples meets a
    level (it lies beyond the largest sampled reward, or λ runs to ``lam_max``).

    ``lower`` (m,), default 0: lower bounds on λ. A sampler that already carries a tilt λ̄ (a fine-tuned
    model, ideally ∝ q̂ e^{λ̄ᵀr}) is corrected by δ ≥ −λ̄: λ̄ + δ is the multiplier at which the tilt of
    the base meets the levels (:func:`refine_multipliers`)."""
    R = np.asarray(values, dtype=float)
    if R.ndim != 2 or R.shape[1] < 2:
        raise ValueError(f"values: expected an (m, n) array with n ≥ 2 samples, got shape {R.shape}")
    if not np.all(np.isfinite(R)):
        raise ValueError("values: reward values must be finite")
    b = np.asarray(thresholds, dtype=float).reshape(-1)
    if b.shape != (R.shape[0],) or not np.all(np.isfinite(b)):
        raise ValueError(f"thresholds: expected {R.shape[0]} finite levels, got {thresholds!r}")
    m, n = R.shape
    over = [i for i in range(m) if b[i] >= R[i].max()]
    if over:
        raise InfeasibleConstraintError("; ".join(
            f"constraint {i}: level {b[i]:g} is above every sampled reward (max {R[i].max():.4g})" for i in over), over)
    # Work in standardised units so one tolerance fits every reward scale.
    mu, sd = R.mean(1), R.std(1)
    sd = np.where(sd > 0, sd, 1.0)
    Z = (R - mu[:, None]) / sd[:, None]
    bz = (b - mu) / sd

    def neg_dual(u):
        s = u @ Z
        lse = logsumexp(s) - np.log(n)
        p = softmax(s)
        return -(u @ bz - lse), -(bz - Z @ p)

    lo = np.zeros(m) if lower is None else np.minimum(np.asarray(lower, dtype=float).reshape(-1) * sd, 0.0)
    if lo.shape != (m,) or not np.all(np.isfinite(lo)):
        raise ValueError(f"lower: expected {m} finite bounds, got {lower!r}")
    res = minimize(neg_dual, np.zeros(m), jac=True, method="L-BFGS-B", bounds=[(l, lam_max) for l in lo],
                   options=dict(maxiter=2000, ftol=1e-15, gtol=1e-10))
    u = np.clip(res.x, lo, lam_max)
    p = softmax(u @ Z)
    expected = R @ p
    lam = u / sd
    tol = 1e-4 * np.maximum(1.0, np.abs(b))
    bad = [i for i in range(m) if expected[i] < b[i] - tol[i] or u[i] >= 0.999 * lam_max]
    if bad:
        raise InfeasibleConstraintError("; ".join(
            f"constraint {i}: level {b[i]:g}, best reachable by reweighting ≈ {expected[i]:.4g}" for i in bad), bad)
    kl = float(np.sum(p * np.log(np.maximum(p * n, 1e-300))))
    return EmpiricalDual(lam, expected, kl, float(1.0 / np.sum(p**2)), n)


def refine_multipliers(values, thresholds, lam) -> EmpiricalDual:
    """The last dual step of Algorithm 1 solved exactly on the fine-tuned model's own samples.

    If the aligned model p_θ is the tilt q̂ e^{λ̄ᵀr}/Z of its base (Theorem 1 at λ̄), then reweighting
    its samples by e^{δᵀr} gives the tilt at λ̄ + δ, so the δ ≥ −λ̄ that makes the reweighted samples meet
    the levels (:func:`empirical_align_dual` with ``lower=−λ̄``) puts λ̄ + δ at λ*(q̂). ``values`` (m, n):
    the rewards at n samples of p_θ; ``lam``: λ̄ in the rewards' units. Returns the EmpiricalDual whose
    ``lam`` is λ̄ + δ. What is left of λ̄ + δ − λ*(q̂) is the primal's share: p_θ is not exactly a tilt."""
    lam = np.asarray(lam, dtype=float).reshape(-1)
    if not np.all(np.isfinite(lam)) or np.any(lam < 0):
        raise ValueError(f"lam: expected finite multipliers ≥ 0, got {lam.tolist()}")
    out = empirical_align_dual(values, thresholds, lower=-lam)
    out.lam = np.maximum(lam + out.lam, 0.0)
    return out
