"""MSDDA — multi-objective step-level alignment in closed form (arXiv 2604.14379; methods.md §7,
rebuilt from secondary sources: there is no public code). Chapter 7.

Each denoising step solves a step-level KL-regularised problem whose optimum is the weighted
geometric product of the single-objective Gaussian steps N(μ_i, σ_i²):

    σ_w⁻² = Σ_i w_i σ_i⁻²,     μ_w = σ_w² Σ_i w_i σ_i⁻² μ_i.

With one shared σ and Σ w_i = 1 this is N(Σ w_i μ_i, σ²) — exactly DB-MPA's ε-blend (the step
mean is affine in ε̂). It differs when the models' step variances differ (per-model η, learned
variances) or when the weights do not sum to 1. Its "no approximation error" holds for the
step-level objective, not for the terminal tilt q·e^{Σ w_i r_i/α}.
"""
from __future__ import annotations

import numpy as np
import torch

from cda_lite._checks import as_float_array, check_finite
from cda_lite.inference.common import common_dtype, new_generator
from cda_lite.sampling import Chain, batch_shape, step_mean_std


def check_msdda_weights(weights, n_models: int) -> np.ndarray:
    """Non-negative weights, one per model, not all zero (they need not sum to 1)."""
    w = as_float_array(weights, "weights", ndim=1)
    check_finite(w, "weights")
    if len(w) != n_models:
        raise ValueError(f"weights: expected {n_models} weights (one per model), got {len(w)}")
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights: must be non-negative and not all zero, got {w.tolist()}")
    return w


def msdda_combine(means, sigmas, weights):
    """Precision-weighted product of the Gaussian steps N(μ_i, σ_i²)^{w_i}: returns (μ_w, σ_w).

    ``means``: list of (n, d) tensors; ``sigmas``: list of floats ≥ 0. If some σ_i = 0 the product
    is the limit σ → 0: the w-weighted mean of the zero-variance models' means, σ_w = 0.
    """
    w = check_msdda_weights(weights, len(means))
    s = as_float_array(sigmas, "sigmas", ndim=1)
    if len(s) != len(means) or np.any(s < 0) or not np.all(np.isfinite(s)):
        raise ValueError(f"sigmas: expected {len(means)} finite values >= 0, got {s.tolist()}")
    active = w > 0
    zero = active & (s == 0)
    if zero.any():
        tot = w[zero].sum()
        return sum((w[i] / tot) * means[i] for i in np.flatnonzero(zero)), 0.0
    prec = np.where(active, w / np.where(active, s, 1.0) ** 2, 0.0)
    var = 1.0 / prec.sum()
    mu = sum((var * prec[i]) * means[i] for i in np.flatnonzero(active))
    return mu, float(np.sqrt(var))


@torch.no_grad()
def sample_msdda(models, weights, schedule, n: int, steps: int | None = None, etas=1.0, seed: int | None = 0,
                 dim: int | tuple = 2, spacing: str = "trailing"):
    """n samples of MSDDA: at every step the product of the models' DDIM(η_i) steps.

    ``etas``: one η for all models, or one per model (model i's step is N(μ_i(η_i), σ_i(η_i)²)).
    The chain visits the timesteps of ``Chain.make(schedule, steps)``; noise is drawn as in
    :func:`cda_lite.sampling.sample` (x_T, then one draw per step with σ_w > 0), so with a shared η
    and Σ w = 1 the output equals DB-MPA's for the same seed.
    """
    models = list(models)
    w = check_msdda_weights(weights, len(models))
    etas = np.broadcast_to(as_float_array(etas, "etas"), (len(models),)).astype(float)
    if np.any(etas < 0):
        raise ValueError(f"etas: must be >= 0, got {etas.tolist()}")
    chain = Chain.make(schedule, steps, 1.0, spacing)
    gen = new_generator(seed)
    dtype = common_dtype(models)
    x = torch.randn(batch_shape(n, dim), generator=gen, dtype=dtype)
    for k, t, ab_t, ab_s in chain.steps():
        means, sigmas = [], []
        for m, eta in zip(models, etas):
            mu, s = step_mean_std(x, m(x, t).to(dtype), ab_t, ab_s, float(eta))
            means.append(mu)
            sigmas.append(s)
        mu, s = msdda_combine(means, sigmas, w)
        x = mu + s * torch.randn(x.shape, generator=gen, dtype=dtype) if s > 0 else mu
    return x
