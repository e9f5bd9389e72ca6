"""Reverse-time samplers over any ε-model: DDPM ancestral, DDIM with η, the probability-flow ODE.

One step rule serves them all (DDIM, Song et al. 2021, eq. 12): from x_t,

    x̂₀ = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t
    σ_t = η √((1−ᾱ_s)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_s)
    x_s = √ᾱ_s x̂₀ + √(1−ᾱ_s−σ_t²) ε̂ + σ_t z,

for the next (smaller) timestep s. With η = 1 and every timestep this is DDPM's ancestral sampler
(σ_t² = β̃_t); with η = 0 it is a first-order integrator of the probability-flow ODE. The step's
mean and σ are exposed (:func:`step_mean_std`) because the path-wise KL and the rivals need them.
Chapter 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from cda_lite._checks import InputError, check_count, check_finite
from cda_lite.schedules import Schedule, timesteps


def batch_shape(n: int, dim) -> tuple:
    """(n, dim) for vector data (``dim`` an int) or ``(n, *dim)`` for any per-sample shape, e.g. (1, 8, 8)
    digit images: the samplers, DAS, the blends and Algorithm 3 draw x_T with this shape."""
    n = check_count(n, "n")
    if isinstance(dim, (int, np.integer)):
        if dim < 1:
            raise ValueError(f"dim: expected a positive size or a shape tuple, got {dim}")
        return (int(n), int(dim))
    shape = tuple(int(d) for d in dim)
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"dim: expected a positive size or a shape tuple, got {dim}")
    return (int(n), *shape)


def tweedie_x0(x: torch.Tensor, eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """Tweedie's denoised estimate x̂₀ = (x − √(1−ᾱ) ε̂)/√ᾱ."""
    ab = torch.as_tensor(alpha_bar, dtype=x.dtype, device=x.device)
    return (x - torch.sqrt(1 - ab) * eps) / torch.sqrt(ab)


LARGE = "large"
"""``eta=LARGE``: DDPM's other variance choice σ_t² = 1 − ᾱ_t/ᾱ_s (= β_t for consecutive steps; Ho et al.
2020, §3.2: exact for x₀ ~ N(0, I), where σ² = β̃_t (η = 1) is exact for a single point x₀), with the
η = 1 mean. On the 2-D problems its samples keep the data's variance where η = 1 narrows every mode by
5–10 % at 100 steps (Chapter 4)."""


def _mean_eta(eta) -> float:
    return 1.0 if eta == LARGE else float(eta)


def step_sigma(ab_t: float, ab_s: float, eta) -> float:
    """σ_t = η √((1−ᾱ_s)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_s) of the DDIM(η) step ᾱ_t → ᾱ_s (0 when ᾱ_s = 1);
    with ``eta=LARGE``, σ_t = √(1 − ᾱ_t/ᾱ_s)."""
    if ab_s >= 1:
        return 0.0
    if eta == LARGE:
        return math.sqrt(max(1 - ab_t / ab_s, 0.0))
    return eta * math.sqrt((1 - ab_s) / (1 - ab_t)) * math.sqrt(max(1 - ab_t / ab_s, 0.0))


def step_mean_std(x: torch.Tensor, eps: torch.Tensor, ab_t: float, ab_s: float, eta: float):
    """Mean and standard deviation of the DDIM(η) transition x_t → x_s (s < t; ab_s = 1 at the end).

    Returns ``(mean, sigma)`` with ``sigma`` a Python float.
    """
    sigma_mean = step_sigma(ab_t, ab_s, _mean_eta(eta))
    x0 = (x - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
    mean = math.sqrt(ab_s) * x0 + math.sqrt(max(1 - ab_s - sigma_mean**2, 0.0)) * eps
    return mean, step_sigma(ab_t, ab_s, eta)


def mean_eps_coefficient(ab_t: float, ab_s: float, eta: float) -> float:
    """c such that mean = a·x_t + c·ε̂ (the coefficient of ε̂ in :func:`step_mean_std`).

    The path-wise KL weights ‖Δε‖² by c²/(2σ²) (Lemma 1).
    """
    sigma = step_sigma(ab_t, ab_s, _mean_eta(eta))
    return -math.sqrt(ab_s) * math.sqrt(1 - ab_t) / math.sqrt(ab_t) + math.sqrt(max(1 - ab_s - sigma**2, 0.0))


@dataclass
class Chain:
    """The timesteps a sampler visits and its ᾱ before and after each step."""

    ts: np.ndarray  # decreasing timestep indices
    ab_t: np.ndarray  # ᾱ at each visited t
    ab_s: np.ndarray  # ᾱ after the step (1.0 after the last)
    eta: float | str  # DDIM's η ≥ 0, or LARGE (σ² = 1 − ᾱ_t/ᾱ_s with the η = 1 mean)

    @classmethod
    def make(cls, schedule: Schedule, steps: int | None = None, eta: float | str = 1.0, spacing: str = "trailing"):
        if eta != LARGE and (isinstance(eta, str) or not math.isfinite(eta) or eta < 0):
            raise InputError(f"eta must be a finite number >= 0 or {LARGE!r}, got {eta!r}")
        ts = timesteps(schedule, steps, spacing)
        ab = schedule.alphas_cumprod
        ab_t = ab[ts]
        ab_s = np.append(ab[ts[1:]], 1.0)
        return cls(ts, ab_t, ab_s, eta if eta == LARGE else float(eta))

    @property
    def stochastic(self) -> bool:
        """Whether the chain injects noise (η > 0 or LARGE): what the path-wise KL needs."""
        return self.eta == LARGE or self.eta > 0

    def __len__(self):
        return len(self.ts)

    def steps(self, progress: bool = False, desc: str = "sampling") -> Iterator[ChainStep]:
        """The chain's steps in order, each a :class:`ChainStep` ``(k, t, ab_t, ab_s)`` of Python numbers
        (a tqdm bar when ``progress``): the one step loop of the samplers, DAS, the blends and MSDDA."""
        for k in tqdm(range(len(self)), disable=not progress, desc=desc, leave=False):
            yield ChainStep(k, int(self.ts[k]), float(self.ab_t[k]), float(self.ab_s[k]))


class ChainStep(NamedTuple):
    """One step x_t → x_s of a :class:`Chain`: its index k, timestep t, and ᾱ_t, ᾱ_s (1.0 after the last)."""

    k: int
    t: int
    ab_t: float
    ab_s: float


@dataclass
class SampleResult:
    x: torch.Tensor
    trajectory: list = field(default_factory=list)


def _seeded_generator(seed):
    g = torch.Generator()
    g.manual_seed(0 if seed is None else int(seed))
    return g


@torch.no_grad()
def sample(
    eps_model,
    schedule: Schedule,
    shape,
    steps: int | None = None,
    eta: float = 1.0,
    seed: int | None = 0,
    x_T: torch.Tensor | None = None,
    spacing: str = "trailing",
    return_trajectory: bool = False,
    progress: bool = False,
    dtype=torch.float32,
):
    """Sample ``shape`` = (n, ...) from an ε-model with DDIM(η) steps.

    ``eta=1`` with ``steps=None`` is DDPM ancestral sampling; ``eta=0`` integrates the
    probability-flow ODE. Returns a tensor (or a :class:`SampleResult` with the trajectory).
    """
    chain = Chain.make(schedule, steps, eta, spacing)
    gen = _seeded_generator(seed)
    if x_T is not None:
        check_finite(x_T, "x_T")
    x = torch.randn(shape, generator=gen, dtype=dtype) if x_T is None else x_T.clone().to(dtype)
    traj = [x.clone()] if return_trajectory else []
    for step in chain.steps(progress):
        x = _step(eps_model, x, chain, step.k, gen)
        if return_trajectory:
            traj.append(x.clone())
    return SampleResult(x, traj) if return_trajectory else x


def _step(eps_model, x, chain: Chain, i: int, gen, noise=None):
    t = int(chain.ts[i])
    eps = eps_model(x, t)
    mean, sigma = step_mean_std(x, eps, float(chain.ab_t[i]), float(chain.ab_s[i]), chain.eta)
    if sigma > 0:
        # drawn on the generator's device (the CPU stream is the same whatever device x is on), then moved
        z = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=gen.device) if noise is None else noise
        return mean + sigma * z.to(x.device)
    return mean


def sample_ddpm(eps_model, schedule, n: int, dim: int = 2, seed: int | None = 0, **kw):
    """DDPM ancestral sampling over every timestep (η = 1). Returns (n, dim) NumPy samples (``dim`` may be a
    shape tuple, e.g. (1, 8, 8))."""
    return sample(eps_model, schedule, batch_shape(n, dim), steps=None, eta=1.0, seed=seed, **kw).double().numpy()


def sample_ddim(eps_model, schedule, n: int, dim: int = 2, steps: int = 50, eta: float = 0.0, seed: int | None = 0, **kw):
    """DDIM sampling with ``steps`` steps and stochasticity η. Returns NumPy samples."""
    return sample(eps_model, schedule, batch_shape(n, dim), steps=steps, eta=eta, seed=seed, **kw).double().numpy()


def sample_pf_ode(eps_model, schedule, n: int, dim: int = 2, steps: int | None = None, seed: int | None = 0, **kw):
    """Deterministic sampling along the probability-flow ODE (DDIM with η = 0). Returns NumPy samples."""
    return sample(eps_model, schedule, batch_shape(n, dim), steps=steps, eta=0.0, seed=seed, **kw).double().numpy()
