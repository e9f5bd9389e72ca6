"""Exact product composition (UR-C "AND", Theorem 3): the tilted product ∝ ∏ q_i^{λ_i} with λ on the
simplex minimising max_i KL. :class:`GaussianProduct` is the closed form for single-Gaussian experts,
:class:`GridProduct` a fine 2-D grid for mixtures; both are the references the learned AND
(:mod:`cda_lite.compose`) is checked against. Chapter 5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from cda_lite.exact.simplex import check_experts, simplex_solve
from cda_lite.gmm import GaussianMixture
from cda_lite.grid import Grid, GridDensity

__all__ = ["gaussian_kl", "ProductResult", "GaussianProduct", "GridProduct", "product_dual"]


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


class GaussianProduct:
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

    def log_density_cov(self, lam):
        """Cov_p(log q_i, log q_j) under the product p = N(m, S): for quadratics of a Gaussian,
        ½ tr(P_i S P_j S) + (m − μ_i)ᵀ P_i S P_j (m − μ_j)."""
        m, S = self.gaussian(np.asarray(lam, float))
        PS = self.prec @ S  # (k, d, d): P_i S
        u = np.einsum("ijk,ik->ij", self.prec, m - self.mu) # P_i (m − μ_i)
        return 0.5 * np.einsum("iab,jba->ij", PS, PS) + u @ S @ u.T

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


class GridProduct:
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

    def log_density_cov(self, lam):
        """Cov_p(log q_i, log q_j) under the product p, as sums over the grid."""
        logits = np.asarray(lam) @ self.logq
        w = np.exp(logits - logsumexp(logits))
        centred = self.logq - (self.logq @ w)[:, None]
        return (centred * w) @ centred.T


def product_dual(experts, grid_n: int = 300) -> ProductResult:
    """Exact AND composition (Theorem 3): λ* on the simplex minimising max_i KL(q^λ_AND ‖ q_i),
    with q^λ_AND ∝ ∏ q_i^{λ_i}. D(λ) = −log Z_AND(λ) is maximised; at λ*, experts with λ*_i > 0 share
    one KL. Closed form when every expert is a single Gaussian; a 2-D grid otherwise."""
    experts = check_experts(experts)
    m = len(experts)
    fam = GaussianProduct(experts) if all(e.n_components == 1 for e in experts) else GridProduct(experts, grid_n)
    lam = simplex_solve(fam.log_Z, fam.kls, m, maximise=False)
    return ProductResult(lam, fam.kls(lam), fam.target(lam), "closed form" if isinstance(fam, GaussianProduct) else "grid")
