"""Composition explorer (chapter 5): weights λ → the product ∏ q_i^{λ_i} (Theorem 3) and its KLs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cda_lite.viz import box_of
from cda_lite.widgets._common import _axis, _float_sliders


@dataclass
class CompositionFrame:
    """One picture of the product q^λ ∝ ∏ q_i^{λ_i} (Theorem 3)."""

    lam: np.ndarray  # λ on the simplex
    kls: np.ndarray  # KL(q^λ ‖ q_i), exact (closed form for Gaussian experts, a fine grid for mixtures)
    product: object  # q^λ: GaussianMixture (Gaussian experts) or GridDensity
    lam_star: np.ndarray | None = None  # the min–max weights (exact.product_dual), if given
    kls_star: np.ndarray | None = None  # KL(q^{λ*} ‖ q_i)

    @property
    def max_kl(self) -> float:
        return float(self.kls.max())


def _simplex_weights(weights, m: int, name: str = "lam") -> np.ndarray:
    """Non-negative weights, one per expert, normalised to the simplex (ValueError otherwise)."""
    w = np.atleast_1d(np.asarray(weights, dtype=float))
    if w.shape != (m,):
        raise ValueError(f"{name}: expected {m} weights (one per expert), got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"{name}: weights must be finite, >= 0 and not all zero, got {w.tolist()}")
    return w / w.sum()


def _two_d_experts(experts):
    experts = list(experts)
    if len(experts) < 2:
        raise ValueError(f"experts: a product needs at least two experts, got {len(experts)}")
    if any(getattr(e, "dim", None) != 2 for e in experts):
        raise ValueError("experts: the composition pictures draw 2-D Gaussian mixtures")
    return experts


_EXPERT_COLOURS = ["tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"]


def composition_view(experts, lam, ax=None, kl_ax=None, box=None, n: int = 150, lam_star=None,
                     legend: bool = True) -> CompositionFrame:
    """Draw the product of experts q^λ ∝ ∏ q_i^{λ_i} for weights ``lam`` (normalised to the simplex).

    On ``ax``: each expert's density (coloured contour lines), the product (filled contours, computed
    on the plotting grid as Σ λ_i log q_i — exact up to normalisation) and its mean (★). On
    ``kl_ax`` (optional): a bar per expert with KL(q^λ ‖ q_i) (:func:`cda_lite.compose.product_kls`),
    and, when ``lam_star`` is given, the min–max value max_i KL(q^{λ*} ‖ q_i) as a dashed line: no λ
    has all bars below it (Theorem 3). Returns a :class:`CompositionFrame`. Chapter 5.
    """
    from cda_lite.compose import product_kls, product_of_experts

    experts = _two_d_experts(experts)
    lam = _simplex_weights(lam, len(experts))
    ax = _axis(ax)
    product = product_of_experts(experts, lam)
    kls = product_kls(experts, lam)
    frame = CompositionFrame(lam=lam, kls=kls, product=product)
    if lam_star is not None:
        frame.lam_star = _simplex_weights(lam_star, len(experts), "lam_star")
        frame.kls_star = product_kls(experts, frame.lam_star)
    if box is None:
        box = box_of(*experts, pad=1.0)
    (x0, y0), (x1, y1) = box
    X, Y = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    pts = np.stack([X.ravel(), Y.ravel()], 1)
    logs = np.stack([np.asarray(e.log_prob(pts), dtype=float) for e in experts])  # (m, n²)
    log_p = lam @ logs
    Zp = np.exp(log_p - log_p.max()).reshape(X.shape)
    ax.contourf(X, Y, Zp, levels=12, cmap="Blues")
    for i, lq in enumerate(logs):
        Zq = np.exp(lq - lq.max()).reshape(X.shape)
        colour = _EXPERT_COLOURS[i % len(_EXPERT_COLOURS)]
        ax.contour(X, Y, Zq, levels=[0.05, 0.3, 0.7], colors=colour, linewidths=0.9)
        ax.plot([], [], color=colour, label=f"q{i + 1}")
    ax.plot(*np.asarray(product.mean()), "*", color="k", ms=13, label="mean of $q^\\lambda$")
    lam_txt = ", ".join(f"{v:.3g}" for v in lam)
    ax.set_title(f"$\\lambda$ = ({lam_txt}),  max KL = {frame.max_kl:.3g}", fontsize=10)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    if legend:
        ax.legend(loc="lower left", fontsize=9, framealpha=0.8)
    if kl_ax is not None:
        idx = np.arange(len(experts))
        kl_ax.bar(idx, kls, color=[_EXPERT_COLOURS[i % len(_EXPERT_COLOURS)] for i in idx], alpha=0.8)
        if frame.kls_star is not None:
            kl_ax.axhline(frame.kls_star.max(), ls="--", color="k", lw=1,
                          label=f"min–max KL {frame.kls_star.max():.3g} (at $\\lambda^*$)")
            kl_ax.legend(fontsize=7, loc="upper right")
        kl_ax.set_xticks(idx, [f"q{i + 1}" for i in idx])
        kl_ax.set_ylabel("KL($q^\\lambda$ ‖ $q_i$)")
        kl_ax.set_title("KL to each expert", fontsize=10)
    return frame


def composition_frame(experts, lam, lam_star=None, box=None, figsize=(9.0, 4.2)) -> CompositionFrame:
    """One frame of :func:`composition_explorer`: a new figure with the product (left) and the KL bars
    (right), and a one-line summary printed under it. Returns the :class:`CompositionFrame`."""
    import matplotlib.pyplot as plt

    fig, (ax, kl_ax) = plt.subplots(1, 2, figsize=figsize, gridspec_kw={"width_ratios": [1.3, 1]})
    frame = composition_view(experts, lam, ax=ax, kl_ax=kl_ax, box=box, lam_star=lam_star)
    fig.tight_layout()
    line = f"λ = {np.round(frame.lam, 3).tolist()}, KL(q^λ‖q_i) = {np.round(frame.kls, 3).tolist()}"
    if frame.kls_star is not None:
        line += f"; at λ* = {np.round(frame.lam_star, 3).tolist()} every KL ≤ {frame.kls_star.max():.3f}"
    print(line)
    plt.show()
    return frame


def composition_explorer(experts, weights=None, box=None):
    """Sliders for the composition weights: one raw weight w_i ∈ [0, 1] per expert, λ = w / Σ w. Each
    release redraws :func:`composition_view` (product and KL bars) against λ* (computed once by
    :func:`cda_lite.exact.product_dual`). ``weights``: starting values (default: equal).

    Returns an ``ipywidgets.interactive``; ``.f(w1=..., w2=..., ...)`` is the plain callback (returns
    the :class:`CompositionFrame`, or ``None`` when every weight is zero). Chapter 5.
    """
    import ipywidgets as widgets

    from cda_lite.exact import product_dual

    experts = _two_d_experts(experts)
    m = len(experts)
    start = np.full(m, 1.0 / m) if weights is None else _simplex_weights(weights, m, "weights")
    lam_star = product_dual(experts).lam
    box = box_of(*experts, pad=1.0) if box is None else box
    labels = [f"w{i + 1}" for i in range(m)]

    def frame(**w):
        raw = np.array([w[k] for k in labels], dtype=float)
        if raw.sum() <= 0:
            print("all weights are zero: raise at least one")
            return None
        return composition_frame(experts, raw, lam_star=lam_star, box=box)

    sliders = _float_sliders(labels, [(0.0, 1.0, 0.01)] * m, start)
    return widgets.interactive(frame, **sliders)


def composition_figure(experts, lams, labels=None, box=None, lam_star=None, figsize=None):
    """Static figure for the rendered book: one product panel per weight vector in ``lams`` and one
    panel of KL bars (grouped by expert, one colour per λ) with the min–max level at ``lam_star``
    (default: :func:`cda_lite.exact.product_dual`). Returns the list of :class:`CompositionFrame`."""
    import matplotlib.pyplot as plt

    from cda_lite.exact import product_dual

    experts = _two_d_experts(experts)
    lams = [np.asarray(v, dtype=float) for v in lams]
    if not lams:
        raise ValueError("lams: give at least one weight vector")
    labels = list(labels) if labels is not None else [f"λ{k + 1}" for k in range(len(lams))]
    if len(labels) != len(lams):
        raise ValueError(f"labels: expected {len(lams)} labels, got {len(labels)}")
    if lam_star is None:
        lam_star = product_dual(experts).lam
    box = box_of(*experts, pad=1.0) if box is None else box
    k = len(lams)
    # At most two panels per row: the book's text column is about 7 inches wide, and a row of four
    # panels shrinks their legends and titles below legibility.
    ncols = min(2, k + 1)
    nrows = -(-(k + 1) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=figsize or (4.3 * ncols, 4.0 * nrows), squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[k + 1:]:
        ax.remove()  # an odd number of panels leaves one grid cell empty
    axes = axes[:k + 1]
    frames = []
    for ax, lam, label in zip(axes[:-1], lams, labels):
        f = composition_view(experts, lam, ax=ax, box=box, lam_star=lam_star, legend=ax is axes[0])
        ax.set_title(f"{label}: max KL {f.max_kl:.3g}", fontsize=11)
        frames.append(f)
    kl_ax = axes[-1]
    m = len(experts)
    width = 0.8 / k
    for j, (f, label) in enumerate(zip(frames, labels)):
        kl_ax.bar(np.arange(m) + (j - (k - 1) / 2) * width, f.kls, width=width, label=label)
    kl_ax.axhline(frames[0].kls_star.max(), ls="--", color="k", lw=1, label="min–max KL")
    kl_ax.set_xticks(np.arange(m), [f"q{i + 1}" for i in range(m)])
    kl_ax.set_ylabel("KL($q^\\lambda$ ‖ $q_i$)")
    kl_ax.legend(fontsize=9)
    kl_ax.set_title("KL to each expert", fontsize=11)
    fig.tight_layout()
    return frames
