"""VP noise schedules: β_t, α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s (agree with diffusers' schedulers).

Timesteps are integer indices t = 0..T−1 into these arrays, as in diffusers. Chapter 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Schedule:
    """A discrete VP schedule. ``betas`` has length T; everything else is derived."""

    betas: np.ndarray
    name: str = "custom"

    def __post_init__(self):
        b = np.asarray(self.betas, dtype=np.float64)
        if b.ndim != 1 or len(b) < 1:
            raise ValueError(f"betas: expected a non-empty 1-D array, got shape {b.shape}")
        if np.any(~np.isfinite(b)) or np.any(b <= 0) or np.any(b >= 1):
            raise ValueError("betas: every β_t must lie in (0, 1)")
        object.__setattr__(self, "betas", b)

    @property
    def T(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> np.ndarray:
        return 1.0 - self.betas

    @property
    def alphas_cumprod(self) -> np.ndarray:
        """ᾱ_t, t = 0..T−1."""
        return np.cumprod(self.alphas)

    def sigma(self, t) -> np.ndarray:
        """Noise level √(1−ᾱ_t)."""
        return np.sqrt(1.0 - self.alphas_cumprod[np.asarray(t)])

    def __repr__(self) -> str:
        return f"Schedule({self.name}, T={self.T})"


def q_sample(x0, t, noise, schedule: Schedule):
    """Forward noising q(x_t | x₀): x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε (Ho et al. 2020, eq. 4; diffusers'
    ``scheduler.add_noise``). ``x0`` and ``noise`` are torch tensors of one shape; ``t`` is one index or an
    (n,) tensor of indices, one per sample. The coefficients take x₀'s dtype and device. Every forward
    noising of the library (training, the KL estimators, composition) goes through here."""
    import torch  # this module stays NumPy-only on import

    ab = torch.as_tensor(schedule.alphas_cumprod, dtype=x0.dtype, device=x0.device)[t]
    if ab.ndim == 1:
        ab = ab.view(-1, *([1] * (x0.ndim - 1)))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def linear(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """DDPM's linear β schedule (diffusers ``beta_schedule="linear"``)."""
    return Schedule(np.linspace(beta_start, beta_end, T, dtype=np.float64), name=f"linear({beta_start:g}->{beta_end:g})")


def scaled_linear(T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Schedule:
    """Stable Diffusion's schedule: β linear in √β (diffusers ``"scaled_linear"``)."""
    b = np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), T, dtype=np.float64) ** 2
    return Schedule(b, name="scaled_linear")


def cosine(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Nichol & Dhariwal's cosine schedule (diffusers ``"squaredcos_cap_v2"``)."""

    def f(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    b = np.array([min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)])
    return Schedule(b, name="cosine")


def by_name(name: str, T: int = 1000, **kw) -> Schedule:
    """``linear``, ``scaled_linear`` or ``cosine``."""
    table = {"linear": linear, "scaled_linear": scaled_linear, "cosine": cosine}
    if name not in table:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(table)}")
    return table[name](T, **kw)


def timesteps(schedule: Schedule, steps: int | None = None, spacing: str = "trailing") -> np.ndarray:
    """Decreasing timestep indices for a sampler with ``steps`` steps.

    ``"trailing"`` (default) always starts at T−1 and spaces evenly down, so the last step is never
    the trivial t = 0 when ``steps`` is small; ``"leading"`` is diffusers' default for DDIM
    (0, T/steps, ...). With ``steps = T`` both give T−1, ..., 0.
    """
    T = schedule.T
    steps = T if steps is None else int(steps)
    if not 1 <= steps <= T:
        raise ValueError(f"steps must lie in [1, {T}], got {steps}")
    if spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / steps)).astype(int) - 1
    elif spacing == "leading":
        ts = (np.arange(steps) * (T // steps))[::-1]
    else:
        raise ValueError(f"spacing must be 'trailing' or 'leading', got {spacing!r}")
    return ts
