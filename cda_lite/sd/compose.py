"""Composition of SD experts by Algorithm 3 — the core's :func:`cda_lite.compose.and_dual_only`, unchanged.
This module only makes SD experts look like the ε-models the core composes:

- :class:`LoraExperts` (ε_i = the classifier-free-guided UNet with adapter i alone) and
  :class:`PromptExperts` (ε_i = the base UNet conditioned on prompt i; all prompts and the unconditional
  branch in one UNet call) compute every component in one go (:meth:`components`, on the UNet's device);
- ``experts.models`` are the per-expert ε-models the core takes. They share a one-entry cache, so the
  core's ε_λ = Σ λ_i ε_i (:func:`cda_lite.compose.surrogate_eps`) and the m estimates of Lemma 2
  (:func:`cda_lite.kl.pointwise_kl`, same seed, so the same x_t) cost m UNet evaluations per x_t, not m(m+1).
  They take CPU tensors (the core's samplers and KL estimators run there) and move each call to the UNet's
  device and back (:mod:`cda_lite.sd.device`).

The same ε_λ samples and enters the KL — never a weight-space LoRA merge for one and the score product
for the other. λ ← Proj_Δ(λ + η_k KL), η_k = η_0 · decay^k. The result is the core's
:class:`cda_lite.compose.ComposeResult`; its ``extra`` holds the expert names, the KLs and the images
*at the reported λ* (drawn after the last dual step). Chapter 11.
"""
from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch

from cda_lite.compose import ComposeConfig, and_dual_only, run_rounds, surrogate_eps, surrogate_kls
from cda_lite.kl import pointwise_kl
from cda_lite.sampling import Chain
from cda_lite.sd import lora as L
from cda_lite.sd import sampling as S


class _Component(torch.nn.Module):
    """ε_i(x, t) of one expert, read from the shared cache of its expert set (the core's ε-model interface)."""

    def __init__(self, experts, i: int):
        super().__init__()
        self._experts, self.i = (experts,), i  # a tuple: the pipeline is not a submodule

    def forward(self, x, t):
        return self._experts[0].cached(x, t)[self.i]


class _Experts:
    """Shared by both kinds: the device move, the cache, the guidance override and the aligned final step."""

    def __init__(self, pipe, names, guidance: float):
        self.pipe, self.names, self.guidance = pipe, list(names), float(guidance)
        self.base_below = -1  # t ≤ base_below: every expert is the base model (the aligned chain's σ = 0 step)
        self._cache = None
        self.models = [_Component(self, i) for i in range(len(self.names))]

    def clear(self):
        self._cache = None

    def align_final_step(self, steps: int | None, on: bool = True):
        """Make every expert the base model on the final (σ = 0) step of the ``steps``-step trailing chain —
        the chain the adapters were trained with (:func:`cda_lite.sd.train.aligned_eps`); ``on=False`` undoes it."""
        self.base_below = int(Chain.make(S.schedule_of(self.pipe), steps, 1.0).ts[-1]) if on else -1
        self.clear()
        return self

    @contextlib.contextmanager
    def guided(self, guidance: float | None):
        """Evaluate the components with another CFG scale inside the block (e.g. Table 1's KL)."""
        g0 = self.guidance
        if guidance is not None:
            self.guidance = float(guidance)
        self.clear()
        try:
            yield self
        finally:
            self.guidance = g0
            self.clear()

    def cached(self, x: torch.Tensor, t) -> torch.Tensor:
        """:meth:`components` of (x, t) on x's device and dtype, recomputed only when x, t or the state change."""
        tk = torch.as_tensor(t).cpu()
        c = self._cache
        if c is not None and c[1].shape == tk.shape and torch.equal(c[1], tk) and c[0].shape == x.shape \
                and c[0].device == x.device and torch.equal(c[0], x):
            return c[2]
        p = next(self.pipe.unet.parameters())
        out = self.components(x.to(p.device, p.dtype), tk.to(p.device)).to(x.device, x.dtype)
        self._cache = (x.detach().clone(), tk, out)
        return out

    def components(self, x, t, guidance=None) -> torch.Tensor:
        """(m, n, ...): every expert's ε at (x, t), x and t on the UNet's device."""
        g = self.guidance if guidance is None else float(guidance)
        t_ = torch.as_tensor(t, device=x.device)  # diffusers moves only 0-d timesteps to the sample's device
        return self._components(x, t_, g)


class LoraExperts(_Experts):
    """ε_i(x, t) = classifier-free-guided UNet with only adapter ``names[i]`` active."""

    def __init__(self, pipe, names: list[str], guidance: float):
        super().__init__(pipe, names, guidance)
        self.eps = S.SDEps(pipe.unet, guidance)

    def set_prompts(self, prompts):
        self.eps.set_prompts(self.pipe, prompts)
        self.clear()

    def _one(self, name, x, t, g):
        self.eps.guidance = g
        if name is None:
            with S.adapters_disabled(self.pipe.unet):
                return self.eps(x, t)
        L.set_active(self.pipe.unet, name)
        return self.eps(x, t)

    def _components(self, x, t, g):
        g0 = self.eps.guidance
        try:
            tail = t <= self.base_below
            if bool(tail.all()):  # the aligned chain's final step: the base model for every expert
                return self._one(None, x, t, g)[None].expand(len(self.names), *x.shape)
            out = torch.stack([self._one(n, x, t, g) for n in self.names])
            if bool(tail.any()):
                mask = tail.reshape(1, -1, *([1] * (x.ndim - 1))) if tail.ndim else tail
                out = torch.where(mask, self._one(None, x, t, g)[None], out)
            return out
        finally:
            self.eps.guidance = g0


class PromptExperts(_Experts):
    """ε_i(x, t) = ε_u + g (ε(x | prompt_i) − ε_u): one UNet call on (m + 1)·n inputs."""

    def __init__(self, pipe, prompts: list[str], guidance: float):
        super().__init__(pipe, prompts, guidance)
        self.cond = S.encode_prompts(pipe, prompts)  # (m, L, D)
        self.uncond = S.encode_prompts(pipe, [""])

    def set_prompts(self, prompts):  # the experts' prompts are fixed
        pass

    def _components(self, x, t, g):
        n, m = x.shape[0], len(self.names)
        emb = torch.cat([self.uncond.expand(n, -1, -1)] + [c[None].expand(n, -1, -1) for c in self.cond])
        t_ = t.expand((m + 1) * n) if t.ndim == 0 else t.repeat(m + 1)
        out = self.pipe.unet(x.repeat(m + 1, 1, 1, 1), t_, encoder_hidden_states=emb).sample.view(m + 1, n, *x.shape[1:])
        return out[:1] + g * (out[1:] - out[:1])


def ProductEps(experts, lam) -> torch.nn.Module:
    """ε_λ = Σ_i λ_i ε_i: the core's surrogate product (:func:`cda_lite.compose.surrogate_eps`) of the experts."""
    return surrogate_eps(experts.models, lam)


@torch.no_grad()
def product_kls(experts, lam, x0: torch.Tensor, schedule, n_t: int, seed, guidance: float | None = None) -> np.ndarray:
    """Lemma 2's KL(p_λ ‖ q_i) for every expert from samples ``x0`` of p_λ: the core's
    :func:`cda_lite.kl.pointwise_kl` between ε_λ and each ε_i, ``n_t`` random t per sample, one seed (an int
    or a generator to draw it from) for all experts. ``guidance``: the CFG scale inside the KL."""
    if isinstance(seed, torch.Generator):
        seed = int(torch.randint(2**31 - 1, (1,), generator=seed))
    x0 = x0.detach().float().cpu()
    with experts.guided(guidance):
        prod = ProductEps(experts, lam)
        return np.array([pointwise_kl(prod, e, schedule, x0, n_t=n_t, seed=int(seed)) for e in experts.models])


def round_prompts(prompts: list[str], batch: int, k: int) -> list[str]:
    """The row prompts of dual step ``k``: the preset's prompts in turn, continuing across dual steps, so
    every prompt is sampled (batch 4 of 6 prompts: steps 0, 1 cover all six)."""
    return [prompts[(k * batch + i) % len(prompts)] for i in range(batch)]


def dual_lr(preset) -> float:
    """η_0 of the dual step for the KL this module computes. A ``kl_guidance`` g' ≠ g scales every KL of
    prompt experts (they share the unconditional branch) by (g'/g)², so it is the same as η_0·(g'/g)²."""
    if preset.kl_guidance is None or preset.kl_guidance == preset.guidance:
        return float(preset.dual_lr)
    if preset.experts != "prompts":
        raise ValueError("kl_guidance differs from guidance only for prompt experts (a shared unconditional branch)")
    return float(preset.dual_lr) * (preset.kl_guidance / preset.guidance) ** 2


def compose_config(preset) -> ComposeConfig:
    """The core's Algorithm 3 settings of a :class:`~cda_lite.sd.presets.ComposePreset`."""
    if preset.eta != 1.0:
        raise ValueError(f"eta: Algorithm 3 samples with DDIM η = 1, got {preset.eta}")
    return ComposeConfig(rounds=preset.dual_steps, dual_lr=dual_lr(preset), dual_decay=preset.dual_decay,
                         average_last=preset.lam_average, n_samples=preset.batch, seed=preset.seed,
                         kl_timesteps=preset.kl_timesteps, sampler_steps=preset.sample_steps)


def run(pipe, experts, preset, progress: bool = False, device=None, keep_images: bool = True):
    """Algorithm 3 (:func:`cda_lite.compose.and_dual_only`) on SD experts: every dual step samples
    ``preset.batch`` latents from ε_λ (DDIM η = 1, trailing), estimates each KL(p_λ ‖ q_i) by Lemma 2 with
    the same ε_λ, and steps λ. The row prompts move on every dual step (:func:`round_prompts`). After the
    last step, the reported λ (mean of the last ``lam_average`` iterates) is sampled once more: those images
    and KLs are in ``result.extra``. With ``preset.reference_final_step`` the chain's final (σ = 0) step is
    the base model's, as in training. ``device`` is unused (the UNet's device is used)."""
    from tqdm.auto import tqdm

    config = compose_config(preset)
    schedule = S.schedule_of(pipe)
    dim = (pipe.unet.config.in_channels, preset.height // pipe.vae_scale_factor, preset.width // pipe.vae_scale_factor)
    if preset.height % pipe.vae_scale_factor or preset.width % pipe.vae_scale_factor:
        raise ValueError(f"height/width must be multiples of the VAE factor {pipe.vae_scale_factor}")
    experts.align_final_step(preset.sample_steps, preset.reference_final_step)

    def rounds():
        experts.set_prompts(round_prompts(preset.prompts, preset.batch, 0))
        for k, r in enumerate(and_dual_only(experts.models, schedule, config, dim)):
            yield r
            experts.set_prompts(round_prompts(preset.prompts, preset.batch, k + 1))

    res = run_rounds(tqdm(rounds(), total=config.rounds, disable=not progress, desc="Algorithm 3", leave=False),
                     config.average_last)
    final = config.rounds  # one more evaluation, at the reported λ
    kls, x0 = surrogate_kls(experts.models, res.lam, schedule, config, dim, sample_seed=config.seed + 1000 * final,
                            kl_seed=config.seed + final)
    if not np.all(np.isfinite(res.values_history)) or not np.all(np.isfinite(kls)):
        raise FloatingPointError(f"non-finite KL estimates: {res.values_history.tolist()}, {kls.tolist()}")
    images = None
    if keep_images:
        with torch.no_grad():
            images = S.decode(pipe, x0.to(next(pipe.vae.parameters()).device))
    extra = {"names": list(experts.names), "kls": kls, "images": images}
    return dataclasses.replace(res, samples=x0.double().numpy(), extra=extra)


def make_experts(pipe, preset, adapter_dirs: list[str] | None = None, seed: int = 0):
    """Experts of a preset: prompts, or LoRA adapters loaded from ``adapter_dirs`` (one per name in
    ``preset.adapters``). Without folders on the tiny pipeline, random stand-in adapters are attached."""
    if preset.experts == "prompts":
        return PromptExperts(pipe, preset.prompts, preset.guidance)
    names = L.attach_adapters(pipe, preset.adapters, adapter_dirs, tiny=preset.tiny, seed=seed)
    return LoraExperts(pipe, names, preset.guidance)
