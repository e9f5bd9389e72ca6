"""Denoising score matching (DDPM's ε-prediction loss) as a generator that yields its state.

    L(θ) = E_{t, x₀, ε} ‖ε_θ(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t) − ε‖²

``for state in train_dsm(...)`` lets a chapter plot the loss as it trains; :func:`fit` runs the
loop to the end with a progress bar. Chapter 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from cda_lite.schedules import Schedule, q_sample


@dataclass
class TrainState:
    step: int
    loss: float
    model: torch.nn.Module


def dsm_loss(model, x0: torch.Tensor, schedule: Schedule, gen: torch.Generator | None = None,
             t: torch.Tensor | None = None) -> torch.Tensor:
    """The ε-prediction loss on a batch x₀ with uniformly drawn timesteps (unless ``t`` is given)."""
    n = x0.shape[0]
    if t is None:
        t = torch.randint(0, schedule.T, (n,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    xt = q_sample(x0, t, noise, schedule)
    return ((model(xt, t) - noise) ** 2).mean()


def train_dsm(
    model: torch.nn.Module,
    data,
    schedule: Schedule,
    steps: int = 2000,
    batch_size: int = 512,
    lr: float = 2e-3,
    seed: int = 0,
    lr_decay: bool = True,
    weight_decay: float = 0.0,
    ema: float | None = None,
) -> Iterator[TrainState]:
    """Train ``model`` by denoising score matching; yields a :class:`TrainState` after every step.

    ``data`` is an (N, ...) array/tensor of training samples, or a callable ``data(n, gen)``
    returning a fresh batch (e.g. exact samples of a mixture or of a tilted product).
    With ``ema`` (a decay such as 0.999) an exponential moving average of the weights is kept
    (``torch.optim.swa_utils``) and copied into ``model`` after the last step: the averaged
    iterate has less of the last steps' gradient noise (DDPM, Ho et al. 2020, uses 0.9999).
    """
    if ema is not None and not 0.0 < ema < 1.0:
        raise ValueError(f"ema: expected a decay in (0, 1), got {ema}")
    gen = torch.Generator().manual_seed(seed)
    draw = _batch_drawer(data)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05) if lr_decay else None
    averaged = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema))
                if ema is not None else None)
    model.train()
    for step in range(1, steps + 1):
        x0 = draw(batch_size, gen)
        loss = dsm_loss(model, x0, schedule, gen)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"denoising loss became {loss.item()} at step {step}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if sched is not None:
            sched.step()
        if averaged is not None:
            averaged.update_parameters(model)
            if step == steps:  # the returned model carries the averaged weights
                with torch.no_grad():
                    for p, q in zip(model.parameters(), averaged.module.parameters()):
                        p.copy_(q)
        yield TrainState(step, loss.item(), model)
    model.eval()


def fit(model, data, schedule, steps: int = 2000, progress: bool = True, **kw) -> tuple[torch.nn.Module, list[float]]:
    """Run :func:`train_dsm` to the end; returns the model and the loss history."""
    from tqdm.auto import tqdm

    losses = []
    for state in tqdm(train_dsm(model, data, schedule, steps=steps, **kw), total=steps, disable=not progress, desc="DSM"):
        losses.append(state.loss)
    model.eval()
    return model, losses


def _batch_drawer(data) -> Callable[[int, torch.Generator], torch.Tensor]:
    if callable(data):
        return lambda n, gen: torch.as_tensor(data(n, gen), dtype=torch.float32)
    arr = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data, dtype=torch.float32)
    if arr.ndim < 2 or len(arr) == 0:
        raise ValueError(f"data: expected an (N, ...) array of samples, got shape {tuple(arr.shape)}")

    def draw(n, gen):
        idx = torch.randint(0, arr.shape[0], (n,), generator=gen)
        return arr[idx]

    return draw
