"""Inference-time rivals at Stable Diffusion scale, by the very samplers of Chapter 7
(:mod:`cda_lite.inference`) — no second implementation. Two adapters make SD look like the 2-D
models those samplers take:

- :class:`FlatEps`: the classifier-free-guided UNet as an ε-model on flat vectors (n, 4·h·w), with a
  fixed prompt per row, a chosen LoRA adapter state (as is / one adapter / all disabled), evaluated
  in chunks of rows — each chunk through gradient checkpointing when a graph is being built, so
  DAS's look-ahead gradient needs the memory of one chunk, not of all particles;
- :class:`LatentReward`: r(decode(x̂₀)) on flat latents, chunked and checkpointed the same way.

The samplers keep their particles on the CPU in float64 (a latent is 16 k numbers at 512 px) and the
wrappers move each chunk to the UNet's device and dtype.

- :func:`sd_das`: DAS (SMC towards q·e^{r/α}): Tweedie look-ahead x̂₀ decoded by the VAE and scored,
  gradient-shifted proposal, exponential tempering (γ = 0.008 over 100 steps in the paper), ESS-triggered
  systematic resampling, one SMC run per prompt (``groups``), and — unlike DAS's public image
  pipeline, which returns the arg-max-weight particle — resampled, equally weighted output.
- :func:`sd_db_mpa`, :func:`sd_db_kla`, :func:`sd_blend_corrected`: Diffusion Blend over LoRA
  adapters (ε̂ = Σ w_i ε_i; (1−λ) ε_pre + λ ε_ft; the importance-weighted correction).
  DB-MPA with w = λ is exactly the sampler of Algorithm 3's product (:mod:`cda_lite.sd.compose`).

Chapter 11 (and the presets ``das`` and ``blend`` in :mod:`cda_lite.sd.presets`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from cda_lite import inference as inf
from cda_lite.sd import lora as L
from cda_lite.sd import sampling as S


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    f = pipe.vae_scale_factor
    if height % f or width % f:
        raise ValueError(f"height/width must be multiples of the VAE factor {f}, got {height}×{width}")
    return (pipe.unet.config.in_channels, height // f, width // f)


def rows_of(prompts: list[str], per_prompt: int) -> list[str]:
    """The prompt of each row when ``per_prompt`` rows follow each prompt (group-major, as SMC groups)."""
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts: expected a non-empty list of strings")
    if int(per_prompt) < 1:
        raise ValueError(f"per_prompt must be >= 1, got {per_prompt}")
    return [p for p in prompts for _ in range(int(per_prompt))]


def _chunks(n: int, chunk: int | None):
    c = n if chunk is None else int(chunk)
    if c < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return [(i, min(i + c, n)) for i in range(0, n, c)]


class FlatEps(torch.nn.Module):
    """ε(x, t) on flat latents (n, c·h·w) of an SD UNet with CFG and one prompt per row.

    ``adapter``: ``None`` leaves the UNet's adapters as they are, ``"off"`` disables all (the
    pretrained model), a name makes that adapter the only active one. The module holds no parameters
    of its own (the UNet is not registered), so the Chapter 7 samplers run in float64 on the CPU.
    """

    def __init__(self, pipe, prompts_per_row: list[str], guidance: float, shape, adapter: str | None = None,
                 chunk: int | None = None):
        super().__init__()
        self._sd = (S.SDEps(pipe.unet, guidance),)  # a tuple: not a registered submodule
        self.cond = S.encode_prompts(pipe, list(prompts_per_row))
        self.uncond = S.encode_prompts(pipe, [""]) if guidance != 1.0 else None
        self.shape, self.adapter, self.chunk = tuple(shape), adapter, chunk

    @property
    def sd(self) -> S.SDEps:
        return self._sd[0]

    def _state(self):
        unet = self.sd.unet
        if self.adapter == "off":
            return S.adapters_disabled(unet)
        if self.adapter is not None:
            L.set_active(unet, self.adapter)
        return contextlib.nullcontext()

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        n = x.shape[0]
        if n != self.cond.shape[0]:
            raise ValueError(f"FlatEps: {n} rows for {self.cond.shape[0]} prompts")
        unet = self.sd.unet
        dev, dt = next(unet.parameters()).device, next(unet.parameters()).dtype
        t_ = torch.as_tensor(t)
        outs = []
        for a, b in _chunks(n, self.chunk):
            ti = t_ if t_.ndim == 0 else t_[a:b]
            cond = self.cond[a:b].to(dev)
            unc = None if self.uncond is None else self.uncond.to(dev)

            def call(z, ti=ti, cond=cond, unc=unc):
                with self._state():
                    return self.sd.eps_with(z, ti.to(dev), cond, unc)

            z = x[a:b].reshape(b - a, *self.shape).to(dev, dt)
            e = _checkpoint(call, z, use_reentrant=False) if torch.is_grad_enabled() and x.requires_grad else call(z)
            outs.append(e.reshape(b - a, -1).to(x.device, x.dtype))
        return torch.cat(outs)


class LatentReward:
    """r(decode(z), prompt of the row) on flat latents, in chunks (checkpointed under autograd)."""

    def __init__(self, pipe, reward, prompts_per_row: list[str], shape, chunk: int | None = None):
        from cda_lite.sd.rewards import follow

        reward = follow(reward, next(pipe.vae.parameters()).device)  # score where the images are decoded
        self.pipe, self.reward, self.prompts, self.shape, self.chunk = pipe, reward, list(prompts_per_row), tuple(shape), chunk

    def images(self, z_flat: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        dev, dt = next(vae.parameters()).device, next(vae.parameters()).dtype
        return S.decode(self.pipe, z_flat.reshape(-1, *self.shape).to(dev, dt))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n != len(self.prompts):
            raise ValueError(f"LatentReward: {n} rows for {len(self.prompts)} prompts")
        outs = []
        for a, b in _chunks(n, self.chunk):
            prompts = self.prompts[a:b]

            def score(z, prompts=prompts):
                return self.reward(self.images(z), prompts)

            r = _checkpoint(score, x[a:b], use_reentrant=False) if torch.is_grad_enabled() and x.requires_grad \
                else score(x[a:b])
            outs.append(torch.as_tensor(r).reshape(-1).to(x.device, x.dtype))
        return torch.cat(outs)


@dataclass
class SDSample:
    """Samples of an SD sampler: flat latents, decoded images in [0, 1], the prompt of each row, and the
    SMC diagnostics (None for the plain blends)."""

    latents: torch.Tensor  # (n, c·h·w) float64
    images: torch.Tensor  # (n, 3, H, W)
    prompts: list
    smc: inf.SMCResult | None = None


@torch.no_grad()
def _decode_all(pipe, x, shape, chunk):
    dec = LatentReward(pipe, None, [""] * x.shape[0], shape, chunk)
    return torch.cat([dec.images(x[a:b]).float().cpu() for a, b in _chunks(x.shape[0], chunk)])


def sd_das(pipe, reward, prompts: list[str], particles: int = 4, steps: int = 100, alpha: float = 0.01,
           gamma: float | None = 0.008, eta: float = 1.0, guidance: float = 5.0, height: int = 512,
           width: int = 512, tempering: str = "exp", chunk: int | None = None, seed: int = 0,
           progress: bool = False) -> SDSample:
    """DAS over SD latents: ``particles`` per prompt, one SMC run per prompt (:func:`cda_lite.inference.das`
    with ``groups=len(prompts)``), target p_SD(x₀ | prompt)·e^{r(decode x₀, prompt)/α}. Returns the
    resampled particles (``particles`` images per prompt, equally weighted) and the SMC diagnostics."""
    shape = latent_shape(pipe, height, width)
    rows = rows_of(prompts, particles)
    eps = FlatEps(pipe, rows, guidance, shape, chunk=chunk)
    r = LatentReward(pipe, reward, rows, shape, chunk)
    res = inf.das(eps, r, S.schedule_of(pipe), n=particles, alpha=alpha, steps=steps, eta=eta, tempering=tempering,
                  gamma=gamma, groups=len(prompts), dim=int(torch.tensor(shape).prod()), seed=seed, progress=progress)
    return SDSample(res.x, _decode_all(pipe, res.x, shape, chunk), rows, res)


def _experts(pipe, adapters, rows, guidance, shape, chunk, steps=None, eta=1.0, base_final_step=False):
    """One :class:`FlatEps` per adapter. ``base_final_step``: each adapter's ε is the base model's on the
    chain's final (σ = 0) step, as the chain it was trained with (:func:`cda_lite.sd.train.aligned_eps`)."""
    models = [FlatEps(pipe, rows, guidance, shape, adapter=a, chunk=chunk) for a in adapters]
    if not base_final_step:
        return models
    from cda_lite.align import AlignedEps
    from cda_lite.sampling import Chain

    tail = int(Chain.make(S.schedule_of(pipe), steps, eta).ts[-1])
    base = FlatEps(pipe, rows, guidance, shape, adapter="off", chunk=chunk)
    return [m if a == "off" else AlignedEps(m, base, tail) for m, a in zip(models, adapters)]


@torch.no_grad()
def sd_db_mpa(pipe, adapters: list[str], weights, prompts: list[str], per_prompt: int = 1, steps: int = 50,
              eta: float = 1.0, guidance: float = 5.0, height: int = 512, width: int = 512, chunk: int | None = None,
              seed: int = 0, base_final_step: bool = True) -> SDSample:
    """DB-MPA over LoRA adapters: the DDIM(η) sampler on ε̂ = Σ_i w_i ε_i (Σ w = 1), ε_i = the UNet
    with adapter i alone (:func:`cda_lite.inference.sample_db_mpa`)."""
    shape = latent_shape(pipe, height, width)
    rows = rows_of(prompts, per_prompt)
    models = _experts(pipe, adapters, rows, guidance, shape, chunk, steps, eta, base_final_step)
    x = inf.sample_db_mpa(models, weights, S.schedule_of(pipe), len(rows), steps=steps, eta=eta, seed=seed,
                          dim=int(torch.tensor(shape).prod()))
    return SDSample(x, _decode_all(pipe, x, shape, chunk), rows)


@torch.no_grad()
def sd_db_kla(pipe, adapter: str, lam: float, prompts: list[str], per_prompt: int = 1, steps: int = 50,
              eta: float = 1.0, guidance: float = 5.0, height: int = 512, width: int = 512, chunk: int | None = None,
              seed: int = 0, base_final_step: bool = True) -> SDSample:
    """DB-KLA: ε̂ = (1−λ) ε_pre + λ ε_adapter, ε_pre = the UNet with every adapter disabled, λ ∈ [0, 2]."""
    shape = latent_shape(pipe, height, width)
    rows = rows_of(prompts, per_prompt)
    pre, ft = _experts(pipe, ["off", adapter], rows, guidance, shape, chunk, steps, eta, base_final_step)
    x = inf.sample_db_kla(pre, ft, lam, S.schedule_of(pipe), len(rows), steps=steps, eta=eta, seed=seed,
                          dim=int(torch.tensor(shape).prod()))
    return SDSample(x, _decode_all(pipe, x, shape, chunk), rows)


@torch.no_grad()
def sd_blend_corrected(pipe, adapters: list[str], weights, prompts: list[str], per_prompt: int = 4, steps: int = 50,
                       eta: float = 1.0, guidance: float = 5.0, height: int = 512, width: int = 512,
                       chunk: int | None = None, seed: int = 0, base_final_step: bool = True) -> SDSample:
    """DB-MPA with the path-weight correction ∏_t Z_t (methods.md §6) as SMC, one run of ``per_prompt``
    particles per prompt (:func:`cda_lite.inference.sample_blend_corrected`); resampled output."""
    shape = latent_shape(pipe, height, width)
    rows = rows_of(prompts, per_prompt)
    models = _experts(pipe, adapters, rows, guidance, shape, chunk, steps, eta, base_final_step)
    res = inf.sample_blend_corrected(models, weights, S.schedule_of(pipe), per_prompt, steps=steps, eta=eta,
                                     groups=len(prompts), dim=int(torch.tensor(shape).prod()), seed=seed)
    return SDSample(res.x, _decode_all(pipe, res.x, shape, chunk), rows, res)


def run(pipe, preset, adapter_dirs: list[str] | None = None, reward=None, progress: bool = False) -> SDSample:
    """Run an :class:`~cda_lite.sd.presets.InferencePreset`. Blends need the Table 2 adapters (one folder
    per name in ``preset.adapters``); on the tiny pipeline random stand-in adapters are attached instead.
    ``reward`` overrides the preset's reward object (DAS)."""
    from cda_lite.sd.registry import get_reward

    kw = dict(guidance=preset.guidance, height=preset.height, width=preset.width, chunk=preset.chunk,
              seed=preset.seed, steps=preset.steps, eta=preset.eta)
    blend_kw = dict(base_final_step=preset.reference_final_step)
    if preset.method == "das":
        r = reward if reward is not None else get_reward(preset.reward)
        return sd_das(pipe, r, preset.prompts, particles=preset.particles, alpha=preset.alpha, gamma=preset.gamma,
                      progress=progress, **kw)
    names = L.attach_adapters(pipe, preset.adapters, adapter_dirs, tiny=preset.tiny, seed=preset.seed)
    if preset.method == "db_mpa":
        return sd_db_mpa(pipe, names, preset.weights, preset.prompts, per_prompt=preset.particles, **kw, **blend_kw)
    if preset.method == "db_kla":
        return sd_db_kla(pipe, names[0], preset.lam, preset.prompts, per_prompt=preset.particles, **kw, **blend_kw)
    if preset.method == "blend_corrected":
        return sd_blend_corrected(pipe, names, preset.weights, preset.prompts, per_prompt=preset.particles, **kw,
                                  **blend_kw)
    raise ValueError(f"unknown method {preset.method!r}")
