"""Shared by the exact AND and OR duals (and the learned AND of :mod:`cda_lite.compose`): checking a list
of experts, and optimising a concave/convex function of λ on the simplex with KKT polishing."""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, root

from cda_lite.gmm import GaussianMixture

__all__ = ["simplex_solve", "check_experts"]


def simplex_solve(objective, equalised, m, maximise=False, tol=1e-12, lam0=None):
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


def check_experts(experts):
    experts = list(experts)
    if len(experts) < 2:
        raise ValueError(f"experts: need at least 2 experts to compose, got {len(experts)}")
    for i, e in enumerate(experts):
        if not isinstance(e, GaussianMixture):
            raise ValueError(f"experts[{i}]: expected a GaussianMixture, got {type(e).__name__}")
        if e.dim != experts[0].dim:
            raise ValueError(f"experts[{i}]: dimension {e.dim} differs from experts[0]'s {experts[0].dim}")
    return experts
