"""Annealed Langevin MCMC with a score that is known only as a function (no density).

At each noise level t of a schedule (from noisy to clean) run a few unadjusted Langevin steps

    x ← x + h_t s(x, t) + √(2 h_t) z,        z ~ N(0, I),

so that the particles track the noised target p_t as t decreases (Song & Ermon 2019; Du et al.
2023 use it to sample compositions). Algorithm 2 of Khalafi et al. samples the product
q_AND^λ ∝ ∏ q_i^{λ_i} this way with the surrogate score Σ_i λ_i s_i(x, t): it is the product's score
at t = 0 (and, for experts that share one covariance, at every t), so the last levels — where it is
right — decide where the particles end up. Chapter 5.

Step sizes ``h_t``:

- ``"beta"``: h_t = step_scale · β_t (the paper's code: 10 levels × 10 steps, h_t = 2β_t);
- ``"curvature"``: h_t = step_scale / κ_t with κ_t = E[−∇·s(x, t)]/d estimated on the particles
  (finite differences along random ±1 directions). For a Gaussian, κ is its mean precision, so
  step_scale is the step in units of the target's variance: the stationary variance of the
  unadjusted chain is σ²/(1 − step_scale/2), about 2.5 % too wide at 0.05;
- a number (one h for every level), or a callable ``t -> h``.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from cda_lite._checks import check_finite
from cda_lite.sampling import step_mean_std
from cda_lite.schedules import Schedule


def score_from_eps(eps_model, schedule: Schedule) -> Callable:
    """s(x, t) = −ε(x, t)/√(1 − ᾱ_t): the score of an ε-model at timestep index t (an int)."""
    ab = schedule.alphas_cumprod

    def score(x, t):
        return -eps_model(x, int(t)) / math.sqrt(1.0 - float(ab[int(t)]))

    return score


def langevin_levels(schedule: Schedule, n_levels: int, t_max: int | None = None, t_min: int = 0) -> np.ndarray:
    """``n_levels`` decreasing timesteps from ``t_max`` (default T−1) to ``t_min``, geometric in the
    noise variance 1 − ᾱ_t (the annealing of Song & Ermon); duplicates are dropped."""
    if not isinstance(n_levels, (int, np.integer)) or n_levels < 1:
        raise ValueError(f"n_levels must be a positive integer, got {n_levels!r}")
    t_max = schedule.T - 1 if t_max is None else int(t_max)
    if not 0 <= t_min <= t_max < schedule.T:
        raise ValueError(f"need 0 ≤ t_min ≤ t_max ≤ {schedule.T - 1}, got t_min={t_min}, t_max={t_max}")
    var = 1.0 - schedule.alphas_cumprod
    if n_levels == 1:
        return np.array([t_min])
    targets = np.geomspace(var[t_max], var[t_min], n_levels)
    ts = [t_min + int(np.argmin(np.abs(np.log(var[t_min: t_max + 1]) - np.log(v)))) for v in targets]
    out = []
    for t in ts:
        if not out or t < out[-1]:
            out.append(t)
    if out[-1] != t_min:
        out.append(t_min)
    return np.array(out)


@torch.no_grad()
def denoise_from(eps_model, schedule: Schedule, x: torch.Tensor, t_from: int, seed: int | None = 0) -> torch.Tensor:
    """Carry particles at noise level ``t_from`` to clean data with DDPM ancestral steps
    t_from → … → 0 → x₀ (:func:`cda_lite.sampling.step_mean_std`, η = 1). Used after annealed Langevin
    stops at t_from > 0: the steps use ε, whose error enters scaled by √(1−ᾱ), where a Langevin step
    at t = 0 would follow the score −ε/√(1−ᾱ_0) with its error multiplied by 1/√β_0 = 100."""
    gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
    ab = schedule.alphas_cumprod
    for t in range(int(t_from), -1, -1):
        ab_s = float(ab[t - 1]) if t > 0 else 1.0
        mean, sigma = step_mean_std(x, eps_model(x, t), float(ab[t]), ab_s, 1.0)
        x = mean + sigma * torch.randn(x.shape, generator=gen, dtype=x.dtype) if sigma > 0 else mean
    return x


@torch.no_grad()
def mean_curvature(score: Callable, x: torch.Tensor, t: int, n_probe: int = 512, seed: int = 0) -> float:
    """κ = E[−∇·s(x, t)]/d on (a subset of) the particles x, by central differences along random
    Rademacher directions v: −vᵀ(s(x + εv) − s(x − εv))/(2ε). For N(μ, Σ), κ = tr(Σ⁻¹)/d."""
    gen = torch.Generator().manual_seed(seed)
    xs = x[: n_probe]
    v = torch.randint(0, 2, xs.shape, generator=gen).to(xs.dtype) * 2 - 1
    spread = float(xs.std()) if xs.shape[0] > 1 else 1.0
    eps = 1e-3 * max(spread, 1e-3)
    d = xs[0].numel()
    dv = ((score(xs + eps * v, t) - score(xs - eps * v, t)) * v).flatten(1).sum(1) / (2 * eps)
    kappa = float(-dv.mean()) / d
    if not math.isfinite(kappa) or kappa <= 0:
        raise FloatingPointError(f"the score's mean curvature at t = {t} is {kappa}: the score does not "
                                 "point inwards on these particles; use a fixed step instead")
    return kappa


class LangevinDivergenceError(FloatingPointError):
    """Annealed Langevin blew up (a step size too large for the score's curvature)."""


def _diverged(t, h, step, step_scale):
    raise LangevinDivergenceError(
        f"annealed Langevin diverged at t = {t}: the particles became non-finite with step size h = {h:.3g}; "
        f"use a smaller step (step={step!r}, step_scale={step_scale:g})")


@torch.no_grad()
def annealed_langevin(score: Callable, schedule: Schedule, x, levels=10, steps_per_level: int = 10,
                      step="curvature", step_scale: float = 0.05, seed: int | None = 0,
                      final_steps: int | None = None, return_levels: bool = False, dtype=torch.float32,
                      snapshots: int = 1, precondition: bool = False):
    """Annealed (unadjusted) Langevin sampling with ``score(x, t)``, t a timestep index of ``schedule``.

    ``x`` is the initial particles (an (n, d) tensor) or a shape (then x ~ N(0, I), the VP prior).
    ``levels`` is a number of noise levels (see :func:`langevin_levels`) or an explicit decreasing
    sequence of timesteps; ``steps_per_level`` Langevin steps run at each (``final_steps`` at the
    last, where the particles must settle; default ``steps_per_level``). ``step`` chooses h_t (see
    the module docstring). Returns the particles (and, with ``return_levels``, a list of
    ``(t, h_t, particles)`` after each level). With ``snapshots`` = k > 1 the particles are returned
    as a (k, n, ...) tensor: their states at k evenly spaced steps of the last level (every
    ⌊final/(k+1)⌋ steps, the last one final) — one chain thinned, more samples of the same law for
    the price of recording them. ``precondition`` (vectors only): at each level the step is
    preconditioned by the particles' covariance C, fixed for the level, x ← x + h C s(x) + √(2h) C^½ z,
    whose stationary law is the same; every direction then relaxes at one rate, instead of the
    widest direction of an elongated target ~κ times slower than the narrowest (κ its condition
    number).
    """
    if not isinstance(snapshots, (int, np.integer)) or snapshots < 1:
        raise ValueError(f"snapshots must be a positive integer, got {snapshots!r}")
    if steps_per_level < 1 or (final_steps is not None and final_steps < 1):
        raise ValueError(f"steps_per_level and final_steps must be ≥ 1, got {steps_per_level}, {final_steps}")
    if step_scale <= 0 or not math.isfinite(step_scale):
        raise ValueError(f"step_scale must be a positive number, got {step_scale}")
    ts = langevin_levels(schedule, levels) if isinstance(levels, (int, np.integer)) else np.asarray(levels, int)
    if ts.ndim != 1 or len(ts) == 0 or np.any(ts < 0) or np.any(ts >= schedule.T) or np.any(np.diff(ts) >= 0):
        raise ValueError(f"levels: expected decreasing timesteps in [0, {schedule.T - 1}], got {ts.tolist()}")
    gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
    if isinstance(x, torch.Tensor):
        check_finite(x, "x")
        x = x.clone().to(dtype)
    else:
        x = torch.randn(tuple(x), generator=gen, dtype=dtype)
    if not isinstance(step, (str, int, float)) and not callable(step):
        raise ValueError(f"step: expected 'beta', 'curvature', a number or a callable, got {step!r}")
    if isinstance(step, str) and step not in ("beta", "curvature"):
        raise ValueError(f"step: expected 'beta', 'curvature', a number or a callable, got {step!r}")
    if precondition and x.ndim != 2:
        raise ValueError(f"precondition: needs (n, d) particles, got shape {tuple(x.shape)}")
    n_last = steps_per_level if final_steps is None else final_steps
    if snapshots > 1 and n_last // (snapshots + 1) < 1:  # checked before any step runs
        raise ValueError(f"snapshots: {snapshots} need at least {snapshots + 1} steps at the last level, got {n_last}")
    record, kept = [], []
    base_score = score
    for t in ts:
        t = int(t)
        root = None
        if precondition:  # C = the particles' covariance (ridged), fixed for the level
            C = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
            scale = float(torch.diagonal(C).mean())
            eye = torch.eye(x.shape[1], dtype=x.dtype)
            C = C + 1e-6 * scale * eye if scale > 0 and math.isfinite(scale) else eye  # collapsed particles: no preconditioning
            root = torch.linalg.cholesky(C)
            score = lambda y, tt, C=C: base_score(y, tt) @ C  # noqa: E731  (C symmetric)
        if step == "beta":
            h = step_scale * float(schedule.betas[t])
        elif step == "curvature":
            h = step_scale / mean_curvature(score, x, t, seed=t)
        elif callable(step):
            h = float(step(t))
        else:
            h = float(step)
        if not (h > 0 and math.isfinite(h)):
            raise ValueError(f"step size at t = {t} must be a positive number, got {h}")
        n_steps = steps_per_level if (final_steps is None or t != int(ts[-1])) else final_steps
        last = t == int(ts[-1])
        gap = max(n_steps // (snapshots + 1), 1)
        for i in range(1, n_steps + 1):
            z = torch.randn(x.shape, generator=gen, dtype=x.dtype)
            x = x + h * score(x, t) + math.sqrt(2 * h) * (z if root is None else z @ root.T)
            if not bool(torch.isfinite(x).all()):
                _diverged(t, h, step, step_scale)
            if last and snapshots > 1 and (n_steps - i) % gap == 0 and (n_steps - i) // gap < snapshots:
                kept.append(x.clone())
        if return_levels:
            record.append((t, h, x.clone()))
    if snapshots > 1:
        x = torch.stack(kept)
    return (x, record) if return_levels else x
