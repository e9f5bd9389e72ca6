"""Distances between samples and exact targets (methods.md §8): grid KL, sliced Wasserstein,
exact EMD on subsets, mode masses, and a two-sample reference level for "as close as sampling noise".
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from cda_lite._checks import as_float_array


def _samples(x, name):
    a = as_float_array(x, name, ndim=2)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: samples contain NaN or inf")
    return a


def sliced_wasserstein(x, y, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance: the mean over random unit directions θ of W₁(θᵀx, θᵀy)."""
    x, y = _samples(x, "x"), _samples(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y have different dimensions ({x.shape[1]} vs {y.shape[1]})")
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((n_projections, x.shape[1]))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    px, py = x @ theta.T, y @ theta.T
    if len(px) == len(py):  # equal sizes: W₁ in 1-D is the mean gap between sorted projections
        return float(np.abs(np.sort(px, 0) - np.sort(py, 0)).mean())
    return float(np.mean([stats.wasserstein_distance(px[:, j], py[:, j]) for j in range(n_projections)]))


def emd(x, y, n: int = 500, seed: int = 0) -> float:
    """Exact earth mover's distance (W₁) between random subsets of ``n`` points of each sample set,
    as in the DAS paper's 2-D toys. With equal sizes and uniform weights the optimal transport plan
    is a permutation, found exactly by ``scipy.optimize.linear_sum_assignment``."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    x, y = _samples(x, "x"), _samples(y, "y")
    rng = np.random.default_rng(seed)
    k = min(n, len(x), len(y))
    xs = x[rng.choice(len(x), size=k, replace=False)]
    ys = y[rng.choice(len(y), size=k, replace=False)]
    cost = cdist(xs, ys)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def histogram_kl(samples, target, bins: int = 40, box=None, pseudo_count: float = 0.5) -> float:
    """KL(P̂ ‖ P) between the binned sample distribution P̂ and the target's bin masses P.

    ``target`` has ``log_prob`` (a GaussianMixture or GridDensity); its bin masses are integrated
    with a 4×4 sub-grid per bin. A finite sample of n points has a positive bias of about
    (bins² − 1)/(2n) even when it comes from the target: compare with :func:`histogram_kl_floor`.
    """
    x = _samples(samples, "samples")
    if x.shape[1] != 2:
        raise ValueError("histogram_kl is for 2-D samples")
    if box is None:
        lo, hi = np.percentile(x, 0.5, axis=0), np.percentile(x, 99.5, axis=0)
        pad = 0.1 * (hi - lo)
        box = (lo - pad, hi + pad)
    lo, hi = np.asarray(box[0], float), np.asarray(box[1], float)
    edges = [np.linspace(lo[i], hi[i], bins + 1) for i in range(2)]
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=edges)
    phat = (counts + pseudo_count) / (counts.sum() + pseudo_count * bins * bins)
    sub = 4
    fine = [np.linspace(lo[i], hi[i], bins * sub + 1) for i in range(2)]
    cx = [(f[:-1] + f[1:]) / 2 for f in fine]
    X, Y = np.meshgrid(cx[0], cx[1], indexing="ij")
    dens = np.exp(target.log_prob(np.stack([X.ravel(), Y.ravel()], 1))).reshape(bins * sub, bins * sub)
    mass = dens.reshape(bins, sub, bins, sub).sum((1, 3))
    mass = np.maximum(mass / mass.sum(), 1e-300)
    return float(np.sum(phat * (np.log(phat) - np.log(mass))))


def histogram_kl_floor(n: int, bins: int = 40) -> float:
    """The approximate bias (bins² − 1)/(2n) of :func:`histogram_kl` for exact samples."""
    return (bins * bins - 1) / (2 * n)


def mode_masses(samples, centers) -> np.ndarray:
    """Fraction of samples nearest to each centre (Fig. 2's mode masses)."""
    x = _samples(samples, "samples")
    c = as_float_array(centers, "centers", ndim=2)
    d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    return np.bincount(d.argmin(1), minlength=len(c)) / len(x)


def mean_distance(x, y) -> float:
    """‖mean(x) − mean(y)‖."""
    return float(np.linalg.norm(np.mean(_samples(x, "x"), 0) - np.mean(_samples(y, "y"), 0)))
