"""ε-models: anything callable as ``eps(x, t) -> tensor`` with x of shape (n, ...) and t integer
timestep indices (an int or an (n,) tensor).

- :class:`ExactEps` wraps a :class:`~cda_lite.gmm.GaussianMixture`: ε*(x, t) = −√(1−ᾱ_t) ∇log p_t(x)
  with p_t the exact VP marginal (the analytic ideal denoiser).
- :class:`MLPEps` and :class:`ResNetEps` are small networks for 2-D data (Chapter 1).

Samplers, KL estimators, DAS and blends accept any of them.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from cda_lite.gmm import GaussianMixture, noised_score
from cda_lite.schedules import Schedule


def _as_t(t, n: int, device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        t = t.expand(n)
    return t.long()


def _t_for_embedding(t, device) -> torch.Tensor:
    """Timesteps for a time embedding: one row when every sample shares t (then broadcast), else (n,)."""
    t = torch.as_tensor(t, device=device).long()
    return t.reshape(1) if t.ndim == 0 else t


class ExactEps(nn.Module):
    """The exact ε of a Gaussian mixture under a schedule: ε*(x,t) = −√(1−ᾱ_t) s_t(x)."""

    def __init__(self, gm: GaussianMixture, schedule: Schedule):
        super().__init__()
        self.gm, self.schedule = gm, schedule
        self.register_buffer("alphas_cumprod", torch.as_tensor(schedule.alphas_cumprod))

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = _as_t(t, x.shape[0], x.device)
        ab = self.alphas_cumprod.to(x.dtype)[t]
        score = noised_score(self.gm, x.to(torch.float64), ab.to(torch.float64)).to(x.dtype)
        return -torch.sqrt(1 - ab)[:, None] * score


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t/T followed by a linear layer."""

    def __init__(self, T: int, dim: int):
        super().__init__()
        self.T, self.dim = T, dim
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self._cache: dict = {}

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # A frozen embedding (no parameter requires grad: a pretrained or reference network) of one
        # shared t is a constant: cache it, keyed by the weights' version counters so that any in-place
        # change of the weights (load_state_dict, an optimiser step) misses the cache. It is ~40 % of a
        # small MLP's forward pass at batch 64, and a sampler calls it at every step.
        params = list(self.proj.parameters())
        if t.numel() == 1 and not any(p.requires_grad for p in params):
            key = (int(t), t.device, params[0].dtype, tuple(p._version for p in params))
            hit = self._cache.get(key)
            if hit is None:
                if len(self._cache) > 4 * self.T:
                    self._cache.clear()
                hit = self._cache[key] = self._embed(t.reshape(1)).detach()
            return hit
        return self._embed(t)

    def _embed(self, t: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(t).to(self.proj[0].weight.dtype))  # float64 models too

    def features(self, t: torch.Tensor) -> torch.Tensor:
        """Sinusoids of t at angular frequencies 10 down to 0.01 per timestep (DDPM's embedding)."""
        half = self.dim // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / half)
        arg = (t.float() / self.T)[:, None] * 1000.0 * freqs[None]
        return torch.cat([arg.sin(), arg.cos()], dim=1)


class NoiseLevelEmbedding(TimeEmbedding):
    """Sinusoids of the noise level σ_t = √(1−ᾱ_t) at low angular frequencies (0.5 to ``max_frequency``
    over σ ∈ (0, 1]), followed by the same two layers as :class:`TimeEmbedding`.

    DDPM's embedding of the integer t reaches 10 radians per timestep, so a network can treat
    neighbouring timesteps as unrelated and must learn each from its own ~1/T of the samples. Slow
    features of σ_t make nearby noise levels share what they learn: the smallest levels, where the
    denoising target carries a signal of size σ_t under unit noise, borrow from their neighbours
    (cf. EDM's conditioning on the noise level, Karras et al. 2022)."""

    def __init__(self, sigmas, dim: int, max_frequency: float = 3.0):
        super().__init__(len(sigmas), dim)
        sig = torch.as_tensor(np.asarray(sigmas, dtype=np.float64), dtype=torch.float32)
        if sig.ndim != 1 or not torch.isfinite(sig).all() or (sig <= 0).any() or (sig > 1).any():
            raise ValueError("sigmas: expected a 1-D array of noise levels in (0, 1], one per timestep")
        if not max_frequency > 0.5:
            raise ValueError(f"max_frequency: expected a value above 0.5, got {max_frequency}")
        self.register_buffer("sigmas", sig)
        self.register_buffer("freqs", torch.exp(torch.linspace(math.log(0.5), math.log(max_frequency), dim // 2)))

    def features(self, t: torch.Tensor) -> torch.Tensor:
        arg = self.sigmas[t.long()][:, None] * self.freqs[None]
        return torch.cat([arg.sin(), arg.cos()], dim=1)


class MLPEps(nn.Module):
    """A small MLP ε-network for low-dimensional data: [x, emb(t)] → hidden layers → ε.

    ``affine=True`` adds an affine skip whose coefficients are linear in the time embedding:
    ε(x, t) = A(t) x + b(t) + MLP(x, t), with A and b zero at initialisation. Every Gaussian's ε is
    affine in x at every t, and a mixture's is affine far from its data; the skip makes the network
    extrapolate that way where DSM saw no samples (a product or a tilt puts mass in an expert's tail,
    Chapters 4–5), instead of along whatever slope the MLP's last units happen to take there.

    ``sigmas`` (σ_t = √(1−ᾱ_t) for t = 0..T−1, e.g. ``schedule.sigma(range(T))``) makes it a
    *noise-level-conditioned score network*: the time embedding is :class:`NoiseLevelEmbedding` and
    ε(x, t) = σ_t · F(x, σ_t), so that F estimates −∇log p_t, which tends to the data score as σ_t → 0
    instead of to 0 as ε does. Under the ε-loss an error δ in ε is an error δ/σ_t in the score that
    Langevin samplers follow; here the small noise levels are tied to their neighbours in F (Chapter 5).
    """

    def __init__(self, T: int, dim: int = 2, hidden: int = 128, layers: int = 3, affine: bool = False,
                 sigmas=None):
        super().__init__()
        self.T, self.data_dim = T, dim
        if sigmas is not None and len(sigmas) != T:
            raise ValueError(f"sigmas: expected {T} noise levels (one per timestep), got {len(sigmas)}")
        self.time = TimeEmbedding(T, hidden) if sigmas is None else NoiseLevelEmbedding(sigmas, hidden)
        self.score_output = sigmas is not None
        self.inp = nn.Linear(dim, hidden)
        self.body = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, dim)
        self.affine = None
        if affine:
            self.affine = nn.Linear(hidden, dim * dim + dim)
            nn.init.zeros_(self.affine.weight)
            nn.init.zeros_(self.affine.bias)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        e = self.time(_t_for_embedding(t, x.device))  # (1, hidden) broadcasts for a shared t
        h = self.inp(x) + e
        for layer in self.body:
            h = torch.nn.functional.silu(layer(h))
        out = self.out(h)
        if self.affine is not None:
            d = self.data_dim
            coef = self.affine(e)
            A = coef[:, : d * d].reshape(-1, d, d)
            out = out + torch.einsum("nij,nj->ni", A, x) + coef[:, d * d:]
        if self.score_output:  # ε = σ_t · F(x, σ_t)
            sig = self.time.sigmas.to(out.dtype)[_t_for_embedding(t, x.device)]
            out = sig[:, None] * out
        return out


class ResNetEps(nn.Module):
    """Residual MLP ε-network (the paper's 2-D model: 4 blocks of width 128), time added per block."""

    def __init__(self, T: int, dim: int = 2, width: int = 128, blocks: int = 4):
        super().__init__()
        self.T, self.data_dim = T, dim
        self.time = TimeEmbedding(T, width)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
            for _ in range(blocks)
        )
        self.temb = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        e = self.time(_t_for_embedding(t, x.device))
        h = self.inp(x)
        for block, temb in zip(self.blocks, self.temb):
            h = h + block(h + temb(e))
        return self.out(h)


class LinearCombinationEps(nn.Module):
    """ε(x,t) = Σ_i c_i ε_i(x,t): the surrogate product (Σ λ_i ε_i) and DB-MPA's blend."""

    def __init__(self, models, coefficients):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.coefficients = [float(c) for c in coefficients]
        if len(self.coefficients) != len(self.models):
            raise ValueError(f"coefficients: expected {len(self.models)}, got {len(self.coefficients)}")

    def forward(self, x, t):
        return sum(c * m(x, t) for c, m in zip(self.coefficients, self.models) if c != 0.0)


class ResidualEps(nn.Module):
    """ε_θ(x, t) = ε_base(x, t) + δ_φ(x, t) with the base frozen and δ zero at initialisation.

    The 2-D analogue of a LoRA adapter: fine-tuning starts exactly at the pretrained model, and the
    path-wise KL penalises δ directly (Σ_t c_t²/(2σ_t²)‖δ‖²). The correction's last Linear or Conv layer
    (in registration order: its output layer) is zeroed, so MLPs and conv nets both work. Chapters 4, 9.
    """

    def __init__(self, base: nn.Module, correction: nn.Module):
        super().__init__()
        self.base, self.correction = base, correction
        for p in self.base.parameters():
            p.requires_grad_(False)
        layers = [m for m in correction.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
        if not layers:
            raise ValueError("correction: needs a Linear or Conv output layer to zero-initialise")
        last = layers[-1]  # the output layer (registered last: MLPs, conv nets, diffusers' conv_out)
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)

    def forward(self, x, t):
        # The base is frozen (requires_grad False) but NOT run under no_grad: gradients must still
        # flow through its dependence on x_t, which depends on the parameters via earlier steps.
        return self.base(x, t) + self.correction(x, t)

    def forward_with_base(self, x, t):
        """(ε_θ, ε_base) from one base call: the path-wise KL to the base needs no second call."""
        e0 = self.base(x, t)
        return e0 + self.correction(x, t), e0
