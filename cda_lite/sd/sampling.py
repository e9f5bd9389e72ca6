"""Stable Diffusion as an ε-model ``eps(latents, t)`` so that the core samplers drive it exactly as
they drive the 2-D models: :func:`cda_lite.differentiable.sample_differentiable` (DDIM η, truncated
backprop, checkpointing, path-wise KL) over a :class:`cda_lite.sampling.Chain` built from the
pipeline's own β schedule with *trailing* spacing.

- :func:`encode_prompts` — CLIP text embeddings (cond and the empty-prompt uncond).
- :class:`SDEps` — classifier-free guidance ε̂ = ε_u + g (ε_c − ε_u) with fixed embeddings
  (:meth:`SDEps.set_prompts` per batch); one UNet call on the doubled batch.
- :class:`AdapterOff` — the same UNet with its LoRA adapters disabled: the frozen reference of the
  path-wise KL without a second copy of the weights.
- :func:`decode` — latents → images in [0, 1] (the only place the [−1, 1] → [0, 1] map happens).

Chapter 10.
"""
from __future__ import annotations

import contextlib

import torch

from cda_lite.sampling import Chain
from cda_lite.schedules import Schedule


def schedule_of(pipe) -> Schedule:
    """The pipeline scheduler's β's as a :class:`cda_lite.schedules.Schedule` (SD: scaled_linear, T = 1000)."""
    return Schedule(pipe.scheduler.betas.double().numpy(), name=str(pipe.scheduler.config.beta_schedule))


def make_chain(pipe, steps: int, eta: float = 1.0) -> Chain:
    """DDIM(η) chain over ``steps`` trailing timesteps of the pipeline's schedule (the last step is
    never the trivial t = 0, so gradient through the last K steps moves the sample)."""
    return Chain.make(schedule_of(pipe), steps, eta, spacing="trailing")


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str]) -> torch.Tensor:
    """CLIP text embeddings (n, L, D) of ``prompts`` (padded to the tokenizer's max length)."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts: expected a list of strings")
    from cda_lite.sd.load import as_epsilon
    as_epsilon(pipe)  # every ε caller encodes its prompts here first: a v-prediction UNet becomes an ε-model
    tok = pipe.tokenizer(list(prompts), padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    dev = pipe.text_encoder.device
    return pipe.text_encoder(tok.input_ids.to(dev))[0]


class SDEps(torch.nn.Module):
    """ε̂(x, t) of a Stable Diffusion UNet with classifier-free guidance and fixed prompt embeddings.

    ``cond`` (n, L, D) and ``uncond`` (1 or n, L, D) are set by :meth:`set_prompts`/:meth:`set_embeddings`
    before each batch; ``guidance`` = 1 calls the UNet on the conditional batch only.
    """

    def __init__(self, unet, guidance: float = 5.0):
        super().__init__()
        self.unet, self.guidance = unet, float(guidance)
        self.cond = self.uncond = None

    def set_embeddings(self, cond: torch.Tensor, uncond: torch.Tensor | None = None) -> "SDEps":
        self.cond, self.uncond = cond, uncond
        return self

    def set_prompts(self, pipe, prompts: list[str], negative: str = "") -> "SDEps":
        cond = encode_prompts(pipe, prompts)
        uncond = encode_prompts(pipe, [negative]) if self.guidance != 1.0 else None
        return self.set_embeddings(cond, uncond)

    def _t(self, t, n, device):
        t_ = torch.as_tensor(t, device=device)
        if t_.ndim == 0:
            return t_.expand(n)
        if n % t_.shape[0]:
            raise ValueError(f"SDEps: {t_.shape[0]} timesteps for {n} UNet inputs")
        return t_.repeat(n // t_.shape[0])  # the CFG batch [uncond; cond] repeats the per-sample t

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        if self.cond is None:
            raise ValueError("SDEps: call set_prompts(...) or set_embeddings(...) before sampling")
        return self.eps_with(x, t, self.cond, self.uncond)

    def eps_with(self, x: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor | None = None) -> torch.Tensor:
        """ε̂ with the given embeddings (no state read but the UNet's): what chunked and checkpointed
        callers use, since a recomputation in the backward pass must see the same embeddings."""
        n = x.shape[0]
        if cond.shape[0] != n:
            raise ValueError(f"SDEps: {cond.shape[0]} prompt embeddings for a batch of {n}")
        dt = next(self.unet.parameters()).dtype
        if self.guidance == 1.0:
            return self.unet(x.to(dt), self._t(t, n, x.device), encoder_hidden_states=cond).sample.to(x.dtype)
        unc = uncond.expand(n, -1, -1)
        out = self.unet(torch.cat([x, x]).to(dt), self._t(t, 2 * n, x.device),
                        encoder_hidden_states=torch.cat([unc, cond])).sample.to(x.dtype)
        e_u, e_c = out.chunk(2)
        return e_u + self.guidance * (e_c - e_u)


@contextlib.contextmanager
def adapters_disabled(unet):
    """Run ``unet`` as the base model: every peft LoRA layer bypassed, re-enabled on exit."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
    states = [m.disable_adapters for m in layers]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield unet
    finally:
        for m, was_disabled in zip(layers, states):
            m.enable_adapters(not was_disabled)


class AdapterOff(torch.nn.Module):
    """The wrapped ε-model with the UNet's adapters disabled for the duration of each call (the KL
    reference; gradient checkpointing re-enters ``forward`` and so recomputes it disabled, too)."""

    def __init__(self, eps_model: SDEps):
        super().__init__()
        self.inner = eps_model

    def forward(self, x, t):
        with adapters_disabled(self.inner.unet):
            return self.inner(x, t)


def decode(pipe, latents: torch.Tensor) -> torch.Tensor:
    """VAE-decode latents to images in [0, 1], (n, 3, H, W), differentiably. The map [−1, 1] → [0, 1]
    happens here once; rewards receive these images unchanged."""
    vae = pipe.vae
    z = latents / vae.config.scaling_factor
    img = vae.decode(z.to(next(vae.parameters()).dtype)).sample.to(latents.dtype)
    return (img / 2 + 0.5).clamp(0, 1)


def initial_latents(pipe, n: int, height: int, width: int, generator: torch.Generator, device=None,
                    dtype=torch.float32) -> torch.Tensor:
    """x_T ~ N(0, I) of shape (n, 4, H/f, W/f), f the VAE scale factor (SD: 8; the tiny pipeline: 2)."""
    f = pipe.vae_scale_factor
    if height % f or width % f:
        raise ValueError(f"height/width must be multiples of the VAE factor {f}, got {height}×{width}")
    c = pipe.unet.config.in_channels
    x = torch.randn((n, c, height // f, width // f), generator=generator, dtype=dtype)
    return x.to(device) if device is not None else x
