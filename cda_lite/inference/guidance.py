"""Reward-gradient guidance: the pretrained chain with its mean shifted along ∇ r(x̂₀)/α. Chapter 7.

The tilted chain's exact step is the pretrained Gaussian step times h_{t−1}(x')/h_t(x) with
h_t(x) = E[e^{r(x₀)/α} | x_t = x]; linearising log h around x moves the mean by σ_t² ∇ log h_t(x).
Guidance replaces log h_t by the look-ahead r(x̂₀(x_t))/α:

    x_{t−1} = μ_θ(x_t) + s_t ∇_{x_t} r(x̂₀(x_t))/α + σ_t z,     s_t = σ_t²  (``scaling="sigma2"``).

It is DAS's proposal at λ = 1 without the importance weights, so it is biased wherever the
approximation is. ``scaling="none"`` uses s_t = ``strength`` at every step: the shifts then add up
to ``strength`` × (number of steps) times the reward gradient, whatever the noise level, and the
samples are driven to the reward's maximiser instead of the tilt.
"""
from __future__ import annotations

import torch

from cda_lite.inference.common import check_alpha, lookahead, model_dtype, new_generator, step_sigma
from cda_lite.sampling import Chain, batch_shape, step_mean_std

SCALINGS = ("sigma2", "none")


def sample_guided(eps_model, reward, schedule, n: int, alpha: float = 1.0, steps: int | None = None,
                  eta: float = 1.0, scaling: str = "sigma2", strength: float = 1.0, seed: int | None = 0,
                  dim: int | tuple = 2, spacing: str = "trailing") -> torch.Tensor:
    """n samples of reward-gradient guidance on ``eps_model`` (a forward and a backward pass per step).

    Steps with σ_t = 0 (the last, deterministic step) take no shift.
    """
    alpha = check_alpha(alpha)
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    chain = Chain.make(schedule, steps, eta, spacing)
    gen = new_generator(seed)
    dtype = model_dtype(eps_model)
    x = torch.randn(batch_shape(n, dim), generator=gen, dtype=dtype)
    for k, t, ab_t, ab_s in chain.steps():
        sigma = step_sigma(ab_t, ab_s, chain.eta)
        eps, _, g = lookahead(eps_model, reward, x, t, ab_t, alpha, grad=sigma > 0)
        mean, sigma = step_mean_std(x, eps, ab_t, ab_s, chain.eta)
        if sigma > 0:
            s = sigma**2 if scaling == "sigma2" else 1.0
            x = mean + strength * s * g + sigma * torch.randn(x.shape, generator=gen, dtype=dtype)
        else:
            x = mean
    return x.detach()


def guided_nfe(schedule, steps: int | None = None, eta: float = 1.0, spacing: str = "trailing") -> int:
    """Forward + backward ε-network evaluations per sample of :func:`sample_guided`."""
    chain = Chain.make(schedule, steps, eta, spacing)
    return sum(1 + int(step_sigma(float(a), float(b), eta) > 0) for a, b in zip(chain.ab_t, chain.ab_s))
