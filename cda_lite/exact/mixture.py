"""Exact mixture composition ("OR", Theorem 5): the mixture Σ λ_i q_i of maximal entropy, on a 2-D grid.
Chapter 6."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cda_lite.exact.simplex import check_experts, simplex_solve
from cda_lite.gmm import GaussianMixture
from cda_lite.grid import Grid

__all__ = ["MixtureResult", "mixture_dual"]


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
    experts = check_experts(experts)
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

    lam = simplex_solve(entropy, cross_entropies, len(experts), maximise=True)
    return MixtureResult(lam, GaussianMixture.mixture_of(experts, lam), entropy(lam), cross_entropies(lam))
