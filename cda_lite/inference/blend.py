"""Diffusion Blend (arXiv 2505.18547): inference-time blends of per-reward fine-tuned models, and
the importance-weighted correction of their bias. Chapter 7.

Each ε_i is a model of q_i ∝ q·e^{r_i/α}. With Σ w_i = 1 the nominal target of the blends is

    q·e^{Σ_i w_i r_i/α} ∝ ∏_i q_i^{w_i}.

- DB-MPA: ε̂ = Σ_i w_i ε_i. Exact only where the noised tilts stay "log-linear" (a Gaussian base
  with linear rewards); on mixtures the swap of log and expectation in the Doob h-transform (a
  Jensen gap) biases it.
- DB-KLA: ε̂ = (1−λ) ε_pre + λ ε_ft, λ ∈ [0, 2] (λ > 1 extrapolates): nominally q·e^{λ r/α}.
- DB-MPA-LS: at every step each trajectory follows one model, drawn with probability w_i.
- Corrected blend (ours, methods.md §6): the product of the models' Gaussian steps factorises as
  ∏_i N(x'; μ_i, σ²)^{w_i} = Z_t(x) · N(x'; μ̄, σ²) with μ̄ = Σ w_i μ_i and
  log Z_t = −Σ_i w_i ‖μ_i − μ̄‖²/(2σ²). So the blended chain (which moves with N(μ̄, σ²)) weighted
  by ∏_t Z_t(x_t) is the geometric mean ∏_i P_i^{w_i} of the models' path measures, whose terminal
  law is the nominal target when each P_i is the h-transform of the pretrained chain. We run it as
  SMC: accumulate log Z_t, resample when the ESS drops, resample at the end.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from cda_lite._checks import as_float_array, check_finite, check_simplex
from cda_lite.inference.common import common_dtype, new_generator
from cda_lite.inference.das import SMCResult
from cda_lite.inference.smc import ess, flat_indices, normalize_log_weights, systematic_resample
from cda_lite.models import LinearCombinationEps
from cda_lite.sampling import Chain, batch_shape, sample, step_mean_std


def check_blend_weights(weights, n_models: int, name: str = "weights") -> np.ndarray:
    """Blend weights: one per model, non-negative, summing to 1 (else ValueError naming ``name``)."""
    w = as_float_array(weights, name, ndim=1)
    check_finite(w, name)
    if len(w) != n_models:
        raise ValueError(f"{name}: expected {n_models} weights (one per model), got {len(w)}")
    check_simplex(w, name)
    return w


def db_mpa_eps(models, weights) -> LinearCombinationEps:
    """DB-MPA's ε̂ = Σ_i w_i ε_i with Σ w_i = 1."""
    models = list(models)
    return LinearCombinationEps(models, check_blend_weights(weights, len(models)))


def db_kla_eps(pretrained, finetuned, lam: float) -> LinearCombinationEps:
    """DB-KLA's ε̂ = (1−λ) ε_pre + λ ε_ft, λ ∈ [0, 2]: a fine-tune at KL weight α now aims at α/λ."""
    lam = float(lam)
    if not (0.0 <= lam <= 2.0):
        raise ValueError(f"lam: DB-KLA's λ must lie in [0, 2], got {lam}")
    return LinearCombinationEps([pretrained, finetuned], [1.0 - lam, lam])


class RandomChoiceEps(nn.Module):
    """DB-MPA-LS as an ε-model: each call (one sampler step) gives every row the ε of one model,
    drawn independently with probabilities ``weights``."""

    def __init__(self, models, weights, seed: int | None = 0):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.weights = check_blend_weights(weights, len(self.models))
        self.gen = new_generator(seed)

    def forward(self, x, t):
        choice = torch.multinomial(torch.as_tensor(self.weights), x.shape[0], replacement=True, generator=self.gen)
        out = torch.empty_like(x)
        t = torch.as_tensor(t)
        for i, m in enumerate(self.models):
            rows = choice == i
            if rows.any():
                out[rows] = m(x[rows], t if t.ndim == 0 else t[rows]).to(x.dtype)
        return out


def db_mpa_ls_eps(models, weights, seed: int | None = 0) -> RandomChoiceEps:
    return RandomChoiceEps(list(models), weights, seed)


def _sample(eps, dtype, schedule, n, steps, eta, seed, dim):
    return sample(eps, schedule, batch_shape(n, dim), steps=steps, eta=eta, seed=seed, dtype=dtype)


def sample_db_mpa(models, weights, schedule, n: int, steps=None, eta: float = 1.0, seed=0, dim: int | tuple = 2):
    """n samples of DB-MPA (the shared DDIM(η) sampler on Σ w_i ε_i)."""
    models = list(models)
    return _sample(db_mpa_eps(models, weights), common_dtype(models), schedule, n, steps, eta, seed, dim)


def sample_db_kla(pretrained, finetuned, lam, schedule, n: int, steps=None, eta: float = 1.0, seed=0, dim: int | tuple = 2):
    """n samples of DB-KLA with coefficient λ."""
    return _sample(db_kla_eps(pretrained, finetuned, lam), common_dtype([pretrained, finetuned]),
                   schedule, n, steps, eta, seed, dim)


def sample_db_mpa_ls(models, weights, schedule, n: int, steps=None, eta: float = 1.0, seed=0, dim: int | tuple = 2):
    """n samples of DB-MPA-LS (one model per step and trajectory, drawn with probability w_i)."""
    models = list(models)
    return _sample(db_mpa_ls_eps(models, weights, seed=None if seed is None else seed + 1),
                   common_dtype(models), schedule, n, steps, eta, seed, dim)


def blend_log_z(means, weights, sigma: float) -> torch.Tensor:
    """log Z_t = −Σ_i w_i ‖μ_i − μ̄‖² / (2σ²), μ̄ = Σ_i w_i μ_i (one value per row; the norm runs over
    every non-batch dimension)."""
    mbar = sum(float(w) * m for w, m in zip(weights, means))
    return -sum(float(w) * ((m - mbar) ** 2).flatten(1).sum(1) for w, m in zip(weights, means)) / (2 * sigma**2)


@torch.no_grad()
def sample_blend_corrected(
    models,
    weights,
    schedule,
    n: int,
    steps: int | None = None,
    eta: float = 1.0,
    resample_threshold: float = 0.5,
    groups: int = 1,
    dim: int | tuple = 2,
    seed: int | None = 0,
    spacing: str = "trailing",
    progress: bool = False,
) -> SMCResult:
    """DB-MPA with the path-weight correction ∏_t Z_t(x_t), run as SMC (see the module docstring).

    The particles move exactly as DB-MPA's (same noise for the same seed); their log-weights collect
    log Z_t at every step with σ_t > 0 (the last, deterministic step x₀ = μ̄ carries no weight).
    ``groups`` independent runs of ``n`` particles go side by side; ``dim`` is the size of one sample or
    its shape (e.g. (1, 8, 8)). Returns resampled particles.
    """
    models = list(models)
    w = check_blend_weights(weights, len(models))
    if not 0 <= resample_threshold <= 1:
        raise ValueError(f"resample_threshold must lie in [0, 1], got {resample_threshold}")
    n, G = int(n), int(groups)
    chain = Chain.make(schedule, steps, eta, spacing)
    K = len(chain)
    gen = new_generator(seed)
    rng = np.random.default_rng(None if seed is None else int(seed) + 7919)
    dtype = common_dtype(models)
    x = torch.randn(batch_shape(G * n, dim), generator=gen, dtype=dtype)
    log_w = np.full((G, n), -math.log(n))
    ess_trace, res_trace = [], []
    for k, t, ab_t, ab_s in chain.steps(progress, "blend+IS"):
        means = []
        for m in models:
            mu, sigma = step_mean_std(x, m(x, t).to(dtype), ab_t, ab_s, chain.eta)
            means.append(mu)
        mbar = sum(float(wi) * mu for wi, mu in zip(w, means))
        if sigma > 0:
            log_w = normalize_log_weights(log_w + blend_log_z(means, w, sigma).double().numpy().reshape(G, n))
            e = ess(log_w)
            do = e < resample_threshold * n
            if do.any():
                idx = np.tile(np.arange(n), (G, 1))
                idx[do] = systematic_resample(np.exp(log_w[do]), rng)
                flat = torch.as_tensor(flat_indices(idx))
                mbar = mbar[flat]
                log_w[do] = -math.log(n)
            ess_trace.append(e)
            res_trace.append(do)
            x = mbar + sigma * torch.randn(x.shape, generator=gen, dtype=dtype)
        else:
            x = mbar
    ess_trace.append(ess(log_w))
    res_trace.append(np.ones(G, bool))
    idx = systematic_resample(np.exp(log_w), rng)
    x = x[torch.as_tensor(flat_indices(idx))]
    nfe = K * len(models)
    return SMCResult(x, np.array(ess_trace).reshape(-1, G), None, np.array(res_trace).reshape(-1, G), log_w, nfe, G)
