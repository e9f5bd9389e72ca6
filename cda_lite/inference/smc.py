"""Sequential Monte Carlo pieces shared by DAS and the corrected blend: effective sample size and
systematic resampling (Doucet & Johansen, "A tutorial on particle filtering and smoothing", §3.4).

Particles may come in ``G`` independent groups (G SMC runs side by side in one tensor): log-weights
then have shape (G, N) and every function works row by row. Chapter 7.
"""
from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from cda_lite._checks import as_float_array


def normalize_log_weights(log_w) -> np.ndarray:
    """log ŵ_j = log w_j − log Σ_k w_k (row by row for a (G, N) array)."""
    lw = as_float_array(log_w, "log_w")
    if lw.ndim not in (1, 2):
        raise ValueError(f"log_w: expected shape (N,) or (G, N), got {lw.shape}")
    if np.any(np.isnan(lw)) or np.any(lw == np.inf):
        raise ValueError("log_w: contains NaN or +inf")
    return lw - logsumexp(lw, axis=-1, keepdims=True)


def ess(log_w) -> np.ndarray | float:
    """Effective sample size (Σ w)² / Σ w² = 1 / Σ ŵ², computed from log-weights.

    Between 1 (one particle carries all the weight) and N (equal weights). Returns a float for an
    (N,) input and a (G,) array for a (G, N) input.
    """
    lw = normalize_log_weights(log_w)
    out = np.exp(-logsumexp(2 * lw, axis=-1))
    return float(out) if np.ndim(out) == 0 else out


def systematic_resample(weights, rng: np.random.Generator) -> np.ndarray:
    """Systematic resampling: one uniform u ~ U[0, 1/N) and the N points u + k/N, k = 0..N−1,
    each picks the particle whose cumulative-weight interval contains it.

    Unbiased: particle j is copied N·ŵ_j times in expectation, and always ⌊N ŵ_j⌋ or ⌈N ŵ_j⌉ times.
    ``weights`` (N,) or (G, N), non-negative (normalised here). Returns integer indices of the same
    shape, indexing within each row.
    """
    w = as_float_array(weights, "weights")
    if w.ndim not in (1, 2) or w.shape[-1] == 0:
        raise ValueError(f"weights: expected shape (N,) or (G, N) with N >= 1, got {w.shape}")
    if np.any(~np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights: must be finite and non-negative")
    total = w.sum(-1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("weights: every row needs a positive total weight")
    w2 = np.atleast_2d(w / total)
    G, N = w2.shape
    cum = np.cumsum(w2, axis=1)
    cum[:, -1] = 1.0  # guard against round-off leaving the last interval short of 1
    points = (rng.random((G, 1)) + np.arange(N)[None, :]) / N
    idx = np.stack([np.searchsorted(cum[g], points[g], side="right") for g in range(G)])
    idx = np.minimum(idx, N - 1)
    return idx[0] if w.ndim == 1 else idx


def flat_indices(idx: np.ndarray) -> np.ndarray:
    """Row-wise indices of a (G, N) resampling turned into indices into the flat G·N particle array."""
    idx = np.atleast_2d(idx)
    G, N = idx.shape
    return (idx + N * np.arange(G)[:, None]).ravel()
