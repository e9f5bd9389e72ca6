"""DAS explorer (chapter 7): particle count → distance of DAS samples to the exact tilt."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cda_lite.viz import box_of, density_grid


@dataclass
class DASFrame:
    """DAS with N particles per run against the exact tilt p* ∝ q e^{r/α}."""

    n: int  # particles per SMC run
    runs: int  # independent runs pooled (total // n)
    alpha: float
    x: np.ndarray  # (runs·n, 2) pooled resampled particles
    distance: float  # sliced W₁ of the pool to as many exact samples of p*
    floor: float  # the same distance between two exact sample sets (Monte Carlo floor)
    mean_reward: float  # E r over the pool
    target_mean_reward: float  # E_{p*} r, closed form
    min_ess: float  # median over runs of the smallest ESS (out of n)
    resamples: float  # mean number of resampling steps per run


_DAS_TARGETS: dict = {}


def _das_target(base, reward, alpha: float, total: int, seed: int):
    """(exact tilt, its samples, floor), cached per (problem, α, total, seed) so sliders stay fast."""
    from cda_lite.exact import tilt
    from cda_lite.metrics import sliced_wasserstein

    key = (id(base), id(reward), float(alpha), int(total), int(seed))
    if key not in _DAS_TARGETS:
        target = tilt(base, [reward], [1.0 / alpha])
        y = target.sample(total, seed=seed + 1)
        floor = sliced_wasserstein(target.sample(total, seed=seed + 2), y)
        if len(_DAS_TARGETS) > 32:
            _DAS_TARGETS.clear()
        _DAS_TARGETS[key] = (target, y, floor, base, reward)  # keep base/reward alive: ids stay valid
    return _DAS_TARGETS[key][:3]


def das_view(base, reward, n_particles: int, alpha: float = 1.0, total: int = 1024, steps: int = 100,
             schedule=None, eps_model=None, seed: int = 0, ax=None, box=None) -> DASFrame:
    """Run DAS (:func:`cda_lite.inference.das`) with ``n_particles`` per run, ``total // n_particles``
    independent runs side by side, on a 2-D problem (base mixture q, reward r), and draw the pooled
    particles (red) over the exact target p* ∝ q e^{r/α} (blue contours, :func:`cda_lite.exact.tilt`)
    and the base q (grey).

    The pool is a sample of the law of *one* DAS output particle at this N, so its sliced W₁ distance
    to ``total`` exact samples of p* (title; the floor is two exact sample sets) shows SMC's
    consistency: large at N = 1 (DAS is then its proposal alone), near the floor from N ≈ 16.
    ``eps_model``: default the exact ε of q (:class:`cda_lite.models.ExactEps`); ``schedule``: default
    :func:`cda_lite.pretrained.default_schedule`. About 1 s with the defaults. Chapter 7.
    """
    import torch

    from cda_lite import inference as inf
    from cda_lite.metrics import sliced_wasserstein
    from cda_lite.models import ExactEps
    from cda_lite.pretrained import default_schedule

    if getattr(base, "dim", None) != 2:
        raise ValueError("base: das_view draws 2-D problems")
    n, total = int(n_particles), int(total)
    if n < 1:
        raise ValueError(f"n_particles: need at least 1 particle, got {n_particles}")
    if total < n:
        raise ValueError(f"total: need total >= n_particles ({n}), got {total}")
    if not alpha > 0:
        raise ValueError(f"alpha: must be > 0, got {alpha}")
    schedule = default_schedule() if schedule is None else schedule
    eps_model = ExactEps(base, schedule) if eps_model is None else eps_model
    runs = total // n
    target, y, floor = _das_target(base, reward, alpha, runs * n, seed)
    res = inf.das(eps_model, reward, schedule, n, alpha=alpha, steps=steps, groups=runs, seed=seed + n)
    x = res.x.detach().numpy() if isinstance(res.x, torch.Tensor) else np.asarray(res.x)
    dist = sliced_wasserstein(x, y)
    frame = DASFrame(n=n, runs=runs, alpha=float(alpha), x=x, distance=dist, floor=floor,
                     mean_reward=float(np.mean(np.asarray(reward(x)))),
                     target_mean_reward=float(reward.expectation(target)),
                     min_ess=float(np.median(res.ess.min(0))), resamples=float(np.mean(res.n_resamples)))
    if ax is not None:
        if box is None:
            box = box_of(base, pad=2.0)
        (x0, y0), (x1, y1) = box
        X, Y, Zq = density_grid(base.log_prob, box, 150)
        _, _, Zp = density_grid(target.log_prob, box, 150)
        ax.contour(X, Y, Zq, levels=5, colors="0.6", linewidths=0.7)
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.3, color="tab:red", rasterized=True)
        ax.contour(X, Y, Zp, levels=6, cmap="Blues", linewidths=1.2)
        ax.set_title(f"N = {n} ({runs} runs): W₁ {dist:.2f} (floor {floor:.2f})", fontsize=9)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect("equal")
    return frame


def das_frame(base, reward, n_particles: int, alpha: float = 1.0, box=None, figsize=(4.6, 4.6), **kw) -> DASFrame:
    """One frame of :func:`das_explorer`: a new figure with :func:`das_view` and a summary line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    frame = das_view(base, reward, n_particles, alpha=alpha, ax=ax, box=box, **kw)
    fig.tight_layout()
    print(f"N = {frame.n}, {frame.runs} runs: sliced W₁ to p* {frame.distance:.3f} (floor {frame.floor:.3f}); "
          f"E r {frame.mean_reward:.3f} vs exact {frame.target_mean_reward:.3f}; median smallest ESS "
          f"{frame.min_ess:.1f} of {frame.n}; {frame.resamples:.1f} resamplings per run")
    plt.show()
    return frame


def das_explorer(base, reward, particles=(1, 2, 4, 8, 16, 32, 64, 128, 256), alphas=(1.0, 0.3, 0.1),
                 n_particles: int = 16, alpha: float = 1.0, box=None, **kw):
    """A slider for DAS's particle count N (``particles``) and a menu for α (``alphas``); each release
    reruns :func:`das_view` (about a second) and redraws. Other keywords go to :func:`das_view`.

    Returns an ``ipywidgets.interactive``; ``.f(N=..., alpha=...)`` is the plain callback (returns the
    :class:`DASFrame`). Chapter 7.
    """
    import ipywidgets as widgets

    particles = [int(v) for v in particles]
    if not particles or min(particles) < 1:
        raise ValueError(f"particles: positive particle counts, got {particles}")
    if int(n_particles) not in particles:
        raise ValueError(f"n_particles: {n_particles} is not one of particles {particles}")
    alphas = [float(a) for a in alphas]
    if float(alpha) not in alphas:
        raise ValueError(f"alpha: {alpha} is not one of alphas {alphas}")
    box = box_of(base, pad=2.0) if box is None else box

    def frame(N, alpha):
        return das_frame(base, reward, N, alpha=alpha, box=box, **kw)

    n_slider = widgets.SelectionSlider(options=particles, value=int(n_particles), description="N",
                                       continuous_update=False)
    a_menu = widgets.Dropdown(options=alphas, value=float(alpha), description="α")
    return widgets.interactive(frame, N=n_slider, alpha=a_menu)


def das_figure(base, reward, particles=(1, 4, 16, 64, 256), show=(1, 16, 256), alpha: float = 1.0,
               box=None, figsize=None, **kw):
    """Static figure for the rendered book: the pooled particles for each N in ``show`` and the
    distance to p* against N for every N in ``particles`` (log–log, with the floor). Returns the
    :class:`DASFrame` of each N in ``particles``."""
    import matplotlib.pyplot as plt

    particles = sorted({int(v) for v in particles} | {int(v) for v in show})
    box = box_of(base, pad=2.0) if box is None else box
    fig, axes = plt.subplots(1, len(show) + 1, figsize=figsize or (3.6 * (len(show) + 1), 3.7))
    panels = dict(zip([int(v) for v in show], axes[:-1]))
    frames = [das_view(base, reward, n, alpha=alpha, ax=panels.get(n), box=box, **kw) for n in particles]
    ax = axes[-1]
    ax.loglog([f.n for f in frames], [f.distance for f in frames], "o-", label=f"DAS, α = {alpha:g}")
    ax.axhline(frames[0].floor, ls=":", color="k", label="exact vs exact")
    ax.set_xlabel("particles N per run")
    ax.set_ylabel("sliced W₁ to $p^*$")
    ax.legend(fontsize=7)
    ax.set_title("distance to the exact tilt", fontsize=10)
    fig.tight_layout()
    return frames
