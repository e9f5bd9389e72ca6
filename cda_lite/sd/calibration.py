"""How our KL estimates relate to the public code's, and the step sizes that make the dual dynamics
comparable (Chapter 10, "Calibration to the paper").

Composition (Algorithm 3). Ours is Lemma 2: KL_ours = Σ_{t=0}^{T−1} w_t E‖ε_λ − ε_i‖², w_t = β_t/(2(1−ᾱ_t)),
the squared norm summed over the D latent dimensions. The public code (Khalafi et al., concept composition,
``compute_KL``) sums, over the k timesteps of the sampler, ``F.mse_loss`` — the same difference averaged
over dimensions and batch, unweighted. If the per-dimension error e_t varies slowly with t,

    KL_ours / KL_pub ≈ ρ = D · Σ_t w_t / k,

and the dual step λ ← Proj_Δ(λ + η·KL) moves λ identically when η_ours = η_pub / ρ (:func:`composition_ratio`).

Alignment (Algorithm 1). Our regulariser is Lemma 1's path-wise KL Σ_steps c²/(2σ²) ‖Δε‖² (summed over
dimensions). The paper's KL weight 0.1 is never applied by the public code, so nothing ran to match; if it
multiplies the same kind of per-dimension, unweighted sum over the k sampler steps, the equivalent weight on
ours is 0.1 / ρ_path, ρ_path = D · Σ_steps c²/(2σ²) / k (:func:`pathwise_ratio`). The alignment dual steps
need no change: they act on z-normalised reward slacks in both codes.
"""
from __future__ import annotations

import numpy as np

from cda_lite.kl import lemma2_weights, pathwise_weights
from cda_lite.sampling import Chain
from cda_lite.schedules import Schedule


def sd_schedule(T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Schedule:
    """SD 1.x's "scaled_linear" β schedule (√β linear), as in its scheduler config."""
    return Schedule(np.linspace(beta_start**0.5, beta_end**0.5, T) ** 2, name="scaled_linear")


def latent_dims(height: int, width: int, factor: int = 8, channels: int = 4) -> int:
    """D = channels · (H/f) · (W/f): 16,384 for SD at 512 px."""
    return channels * (height // factor) * (width // factor)


def composition_ratio(dims: int, sampler_steps: int, schedule: Schedule | None = None) -> float:
    """ρ = D Σ_t w_t / k: Lemma 2's KL (weighted, summed over D dims, all T timesteps) over the public
    code's (unweighted per-dimension MSE summed over the k sampler timesteps), for a flat error profile."""
    s = schedule or sd_schedule()
    return float(dims * lemma2_weights(s).sum() / sampler_steps)


def pathwise_ratio(dims: int, sampler_steps: int, eta: float = 1.0, schedule: Schedule | None = None) -> float:
    """ρ_path = D Σ_steps c²/(2σ²) / k for the trailing DDIM(η) chain of ``sampler_steps`` steps."""
    s = schedule or sd_schedule()
    return float(dims * pathwise_weights(Chain.make(s, sampler_steps, eta)).sum() / sampler_steps)


def dual_lr(paper_lr: float, dims: int, sampler_steps: int) -> float:
    """Our η_0 for Algorithm 3 that reproduces the paper's λ steps: η_pub / ρ."""
    return float(paper_lr) / composition_ratio(dims, sampler_steps)


def kl_weight(paper_weight: float, dims: int, sampler_steps: int, eta: float = 1.0) -> float:
    """Our weight on the path-wise KL equivalent to the paper's (unapplied) weight: w_pub / ρ_path."""
    return float(paper_weight) / pathwise_ratio(dims, sampler_steps, eta)


def refit_stats(pipe, preset, n: int = 64, seed: int = 0, batch: int = 8) -> dict:
    """Table 7's role for *this* sampler: (mean, std) of every constraint's raw reward on ``n`` images of the
    base model (adapters off) sampled by the preset's chain from its training prompts, fitted with
    :meth:`cda_lite.constraints.RewardNormalizer.fit`. Put the result in ``preset.reward_stats``."""
    import torch

    from cda_lite.constraints import RewardNormalizer
    from cda_lite.differentiable import sample_differentiable
    from cda_lite.sd import sampling as S
    from cda_lite.sd.device import pipe_device
    from cda_lite.sd.registry import get_reward
    from cda_lite.sd.rewards import follow

    gen = torch.Generator().manual_seed(seed)
    device = pipe_device(pipe)
    rewards = {c.reward: follow(get_reward(c.reward), device) for c in preset.constraints}
    values = {k: [] for k in rewards}
    chain = S.make_chain(pipe, preset.sample_steps, preset.eta)
    eps = S.SDEps(pipe.unet, preset.guidance)
    with torch.no_grad(), S.adapters_disabled(pipe.unet):
        for start in range(0, n, batch):
            m = min(batch, n - start)
            idx = torch.randint(len(preset.train_prompts), (m,), generator=gen).tolist()
            prompts = [preset.train_prompts[i] for i in idx]
            eps.set_prompts(pipe, prompts)
            x_T = S.initial_latents(pipe, m, preset.height, preset.width, gen, device=device)
            images = S.decode(pipe, sample_differentiable(eps, chain, x_T, generator=gen).x0)
            for k, r in rewards.items():
                values[k].append(torch.as_tensor(r(images, prompts)).detach().double().cpu())
    out = {}
    for k, v in values.items():
        fit = RewardNormalizer.fit(torch.cat(v))
        out[k] = (fit.mean, fit.std)
    return out
