"""ε-models: anything callable as ``eps(x, t) -> tensor`` with x of shape (n, ...) and t integer
timestep indices (an int or an (n,) tensor).

- :class:`ExactEps` wraps a :class:`~cda_lite.gmm.GaussianMixture`: ε*(x, t) = −√(1−ᾱ_t) ∇log p_t(x)
  with p_t the exact VP marginal (the analytic ideal denoiser).
- :class:`MLPEps` and :class:`ResNetEps` are small networks for 2-D data (Chapter 1).

Samplers, KL estimators, DAS and blends accept any of them.
"""
from __future__ import annotations

import math

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
        half = self.dim // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / half)
        arg = (t.float() / self.T)[:, None] * 1000.0 * freqs[None]
        feats = torch.cat([arg.sin(), arg.cos()], dim=1).to(self.proj[0].weight.dtype)  # float64 models too
        return self.proj(feats)


class MLPEps(nn.Module):
    """A small MLP ε-network for low-dimensional data: [x, emb(t)] → hidden layers → ε.

    ``affine=True`` adds an affine skip whose coefficients are linear in the time embedding:
    ε(x, t) = A(t) x + b(t) + MLP(x, t), with A and b zero at initialisation. Every Gaussian's ε is
    affine in x at every t, and a mixture's is affine far from its data; the skip makes the network
    extrapolate that way where DSM saw no samples (a product or a tilt puts mass in an expert's tail,
    Chapters 4–5), instead of along whatever slope the MLP's last units happen to take there.
    """

    def __init__(self, T: int, dim: int = 2, hidden: int = 128, layers: int = 3, affine: bool = False):
        super().__init__()
        self.T, self.data_dim = T, dim
        self.time = TimeEmbedding(T, hidden)
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
        if self.affine is None:
            return out
        d = self.data_dim
        coef = self.affine(e)
        A = coef[:, : d * d].reshape(-1, d, d)
        return out + torch.einsum("nij,nj->ni", A, x) + coef[:, d * d:]


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
