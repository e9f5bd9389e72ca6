"""Plot helpers for the chapters: densities, samples, dual trajectories. Matplotlib only."""
from __future__ import annotations

import numpy as np


def _ax(ax):
    import matplotlib.pyplot as plt

    return ax if ax is not None else plt.gca()


def density_grid(log_prob, box, n: int = 200):
    """Evaluate ``log_prob`` (callable on (N, 2) arrays) on an n×n grid over box = ((x0, y0), (x1, y1))."""
    (x0, y0), (x1, y1) = box
    xs, ys = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
    X, Y = np.meshgrid(xs, ys)
    Z = np.exp(log_prob(np.stack([X.ravel(), Y.ravel()], 1))).reshape(n, n)
    return X, Y, Z


def plot_density(dist, box=((-3, -3), (3, 3)), ax=None, n: int = 200, cmap="viridis", levels: int = 12,
                 filled: bool = True, title: str | None = None, **kw):
    """Contours of a density with ``log_prob`` (GaussianMixture, GridDensity) or a log-density callable."""
    ax = _ax(ax)
    log_prob = dist.log_prob if hasattr(dist, "log_prob") else dist
    X, Y, Z = density_grid(log_prob, box, n)
    (ax.contourf if filled else ax.contour)(X, Y, Z, levels=levels, cmap=cmap, **kw)
    ax.set_aspect("equal")
    ax.set_xlim(box[0][0], box[1][0])
    ax.set_ylim(box[0][1], box[1][1])
    if title:
        ax.set_title(title)
    return ax


def plot_samples(x, ax=None, s: float = 2, alpha: float = 0.4, color="k", label=None, box=None, title=None):
    """Scatter of 2-D samples."""
    ax = _ax(ax)
    x = np.asarray(x)
    ax.scatter(x[:, 0], x[:, 1], s=s, alpha=alpha, color=color, label=label, rasterized=True)
    ax.set_aspect("equal")
    if box is not None:
        ax.set_xlim(box[0][0], box[1][0])
        ax.set_ylim(box[0][1], box[1][1])
    if title:
        ax.set_title(title)
    return ax


def plot_dual_trajectory(history, exact=None, ax=None, names=None, xlabel="dual step"):
    """λ_i over training (``history``: (steps, m) array) with dashed lines at the exact λ*."""
    ax = _ax(ax)
    h = np.asarray(history, dtype=float)
    if h.ndim == 1:
        h = h[:, None]
    for i in range(h.shape[1]):
        name = names[i] if names else f"λ{i + 1}"
        line, = ax.plot(h[:, i], label=name)
        if exact is not None:
            ax.axhline(np.asarray(exact)[i], ls="--", color=line.get_color(), lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("λ")
    ax.legend()
    return ax


def box_of(*arrays, pad: float = 0.5):
    """A plotting box covering every array of 2-D points (or mixtures' means) with padding."""
    pts = np.concatenate([np.asarray(getattr(a, "means", a)) for a in arrays])
    lo, hi = pts.min(0) - pad, pts.max(0) + pad
    return (tuple(lo), tuple(hi))
