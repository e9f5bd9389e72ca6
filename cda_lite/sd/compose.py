"""Composition of SD experts by Algorithm 3 (dual only): λ on the simplex, the composed model's ε is
the score-space product ε_λ = Σ_i λ_i ε_i, and the SAME ε_λ is used to sample and to measure
KL(p_λ ‖ q_i) by Lemma 2 (weights β_t/(2(1−ᾱ_t)), :func:`cda_lite.kl.lemma2_weights`) — never a
weight-space LoRA merge for one and the score product for the other. λ ← Proj_Δ(λ + η_k KL) with
η_k = η_0 · decay^k (:class:`cda_lite.constraints.SimplexDual`).

Experts: LoRA adapters loaded into one UNet (ε_i = UNet with adapter i only, CFG) or prompts
(ε_i = the base UNet conditioned on prompt i; all prompts in one UNet call). Chapter 11.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cda_lite.constraints import SimplexDual
from cda_lite.kl import lemma2_weights
from cda_lite.sampling import sample
from cda_lite.sd import lora as L
from cda_lite.sd import sampling as S


class LoraExperts:
    """ε_i(x, t) = classifier-free-guided UNet with only adapter ``names[i]`` active."""

    def __init__(self, pipe, names: list[str], guidance: float):
        self.pipe, self.names, self.eps = pipe, list(names), S.SDEps(pipe.unet, guidance)

    def set_prompts(self, prompts):
        self.eps.set_prompts(self.pipe, prompts)

    def components(self, x, t, guidance=None) -> torch.Tensor:
        g0 = self.eps.guidance
        if guidance is not None:
            self.eps.guidance = float(guidance)
        out = []
        try:
            for n in self.names:
                L.set_active(self.pipe.unet, n)
                out.append(self.eps(x, t))
        finally:
            self.eps.guidance = g0
        return torch.stack(out)


class PromptExperts:
    """ε_i(x, t) = ε_u + g (ε(x | prompt_i) − ε_u): one UNet call on (m + 1)·n inputs."""

    def __init__(self, pipe, prompts: list[str], guidance: float):
        self.pipe, self.guidance = pipe, float(guidance)
        self.cond = S.encode_prompts(pipe, prompts)  # (m, L, D)
        self.uncond = S.encode_prompts(pipe, [""])
        self.names = list(prompts)

    def set_prompts(self, prompts):  # the experts' prompts are fixed
        pass

    def components(self, x, t, guidance=None) -> torch.Tensor:
        g = self.guidance if guidance is None else float(guidance)
        n, m = x.shape[0], len(self.names)
        emb = torch.cat([self.uncond.expand(n, -1, -1)] + [c[None].expand(n, -1, -1) for c in self.cond])
        t_ = torch.as_tensor(t, device=x.device)  # diffusers moves only 0-d timesteps to the sample's device
        t_ = t_.expand((m + 1) * n) if t_.ndim == 0 else t_.repeat(m + 1)
        out = self.pipe.unet(x.repeat(m + 1, 1, 1, 1), t_, encoder_hidden_states=emb).sample.view(m + 1, n, *x.shape[1:])
        return out[:1] + g * (out[1:] - out[:1])


class ProductEps(torch.nn.Module):
    """ε_λ(x, t) = Σ_i λ_i ε_i(x, t): the composed model, for sampling and for the KL alike."""

    def __init__(self, experts, lam):
        super().__init__()
        self.experts, self.lam = experts, np.asarray(lam, dtype=float)

    @staticmethod
    def combine(components: torch.Tensor, lam) -> torch.Tensor:
        w = torch.as_tensor(np.asarray(lam, dtype=float), dtype=components.dtype, device=components.device)
        return (w.view(-1, *([1] * (components.ndim - 1))) * components).sum(0)

    def forward(self, x, t):
        return self.combine(self.experts.components(x, t), self.lam)


@torch.no_grad()
def product_kls(experts, lam, x0: torch.Tensor, schedule, n_t: int, generator: torch.Generator,
                guidance: float | None = None) -> np.ndarray:
    """Lemma 2's KL(p_λ ‖ q_i) for every expert i from samples ``x0`` of p_λ: forward-noise at ``n_t``
    uniform t per sample, Σ_t w_t ‖ε_λ − ε_i‖² (unbiased: T · mean of w_t ‖·‖²). ε_λ is
    :meth:`ProductEps.combine` of the very components compared with — the sampling distribution."""
    w = torch.as_tensor(lemma2_weights(schedule), dtype=x0.dtype)
    ab = torch.as_tensor(schedule.alphas_cumprod, dtype=x0.dtype)
    n, T = x0.shape[0], schedule.T
    total = np.zeros(len(experts.names))
    view = (-1,) + (1,) * (x0.ndim - 1)
    for _ in range(n_t):
        t = torch.randint(0, T, (n,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        xt = ab[t].sqrt().view(view).to(x0.device) * x0 + (1 - ab[t]).sqrt().view(view).to(x0.device) * noise.to(x0.device)
        comps = experts.components(xt, t.to(x0.device), guidance=guidance)  # (m, n, ...)
        prod = ProductEps.combine(comps, lam)
        d = ((comps - prod[None]) ** 2).flatten(2).sum(2).cpu()  # (m, n)
        total += (w[t][None] * d).mean(1).double().numpy() * T
    return total / n_t


@dataclass
class ComposeResult:
    lam: np.ndarray  # reported λ (mean of the last ``lam_average`` iterates)
    history: list  # per dual step: λ, KLs
    images: torch.Tensor | None  # final samples of the composed model, [0, 1]
    names: list


def run(pipe, experts, preset, progress: bool = False, device=None, keep_images: bool = True) -> ComposeResult:
    """Algorithm 3: each dual step samples ``preset.batch`` images from ε_λ (DDIM η, trailing spacing),
    estimates every KL(p_λ ‖ q_i) by Lemma 2 with the same ε_λ, and steps λ on the simplex."""
    from tqdm.auto import tqdm

    m = len(experts.names)
    dual = SimplexDual(m, lr=preset.dual_lr, decay=preset.dual_decay)
    schedule = S.schedule_of(pipe)
    gen = torch.Generator().manual_seed(preset.seed)
    prompts = [preset.prompts[i % len(preset.prompts)] for i in range(preset.batch)]
    experts.set_prompts(prompts)
    x0 = None
    for _ in tqdm(range(preset.dual_steps), disable=not progress, desc="Algorithm 3", leave=False):
        model = ProductEps(experts, dual.lam)
        x_T = S.initial_latents(pipe, preset.batch, preset.height, preset.width, gen, device=device)
        x0 = sample(model, schedule, x_T.shape, steps=preset.sample_steps, eta=preset.eta, x_T=x_T,
                    spacing="trailing", seed=int(torch.randint(2**31 - 1, (1,), generator=gen)))
        kls = product_kls(experts, dual.lam, x0, schedule, preset.kl_timesteps, gen, guidance=preset.kl_guidance)
        if not np.all(np.isfinite(kls)):
            raise FloatingPointError(f"non-finite KL estimates {kls.tolist()} at dual step {dual.step}")
        dual.update(kls, kl=kls.tolist())
    images = None
    if keep_images and x0 is not None:
        with torch.no_grad():
            images = S.decode(pipe, x0)
    return ComposeResult(dual.averaged(preset.lam_average), list(dual.history), images, list(experts.names))


def make_experts(pipe, preset, adapter_dirs: list[str] | None = None, seed: int = 0):
    """Experts of a preset: prompts, or LoRA adapters loaded from ``adapter_dirs`` (one per name in
    ``preset.adapters``). Without folders on the tiny pipeline, random stand-in adapters are attached."""
    if preset.experts == "prompts":
        return PromptExperts(pipe, preset.prompts, preset.guidance)
    names = L.attach_adapters(pipe, preset.adapters, adapter_dirs, tiny=preset.tiny, seed=seed)
    return LoraExperts(pipe, names, preset.guidance)
