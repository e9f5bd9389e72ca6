"""Alignment explorer (chapter 3): levels of the constraints → the exact tilted model (Theorem 1)."""
from __future__ import annotations

import numpy as np

from cda_lite.exact import InfeasibleConstraintError, align_dual
from cda_lite.viz import box_of, density_grid
from cda_lite.widgets._common import _axis, _float_sliders, _parse_ranges, _reward_label


def alignment_view(gm, rewards, thresholds, ax=None, box=None, n: int = 150, legend: bool = True):
    """Solve UR-A exactly (:func:`cda_lite.exact.align_dual`, Theorem 1) and draw it on ``ax``:
    the base density q (grey contour lines), the tilted optimum q_{λ*} (filled contours), each
    reward's level set {r_i(x) = b_i} (dashed), and the means of q (×) and of q_{λ*} (★).

    Returns the :class:`~cda_lite.exact.AlignResult`, or ``None`` when the levels are infeasible
    (then only q and the level sets are drawn, and the title names the infeasible rewards).
    Chapter 3 (static figure and the slider explorer).
    """
    rewards = list(rewards)
    b = np.atleast_1d(np.asarray(thresholds, dtype=float))
    if gm.dim != 2:
        raise ValueError(f"gm: alignment_view draws 2-D problems, got dimension {gm.dim}")
    ax = _axis(ax)
    try:
        res = align_dual(gm, rewards, b)
    except InfeasibleConstraintError as e:
        res, err = None, e
    if box is None:
        box = box_of(gm, pad=2.5) if res is None else box_of(gm, res.target, pad=2.5)
    X, Y, Zq = density_grid(gm.log_prob, box, n)
    if res is not None:
        _, _, Zp = density_grid(res.target.log_prob, box, n)
        ax.contourf(X, Y, Zp, levels=12, cmap="Blues")
    ax.contour(X, Y, Zq, levels=6, colors="0.45", linewidths=0.8)
    pts = np.stack([X.ravel(), Y.ravel()], 1)
    colors = ["tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown"]
    for i, (r, level) in enumerate(zip(rewards, b)):
        R = np.asarray(r(pts)).reshape(X.shape)
        if R.min() < level < R.max():
            ax.contour(X, Y, R, levels=[level], colors=colors[i % len(colors)], linestyles="--", linewidths=1.5)
        ax.plot([], [], ls="--", color=colors[i % len(colors)], label=f"{_reward_label(r, i)} = {level:.3g}")
    m = gm.mean()
    ax.plot(*m, "x", color="0.2", ms=9, mew=2, label="mean of q")
    if res is not None:
        ax.plot(*res.target.mean(), "*", color="k", ms=13, label="mean of $q_{\\lambda^*}$")
        lam = ", ".join(f"{v:.3g}" for v in res.lam)
        ax.set_title(f"$\\lambda^*$ = ({lam}),  KL = {res.kl:.3g}", fontsize=10)
    else:
        names = ", ".join(_reward_label(rewards[i], i) for i in err.constraints)
        ax.set_title(f"infeasible: {names}", fontsize=10, color="tab:red")
    ax.set_xlim(box[0][0], box[1][0])
    ax.set_ylim(box[0][1], box[1][1])
    ax.set_aspect("equal")
    if legend:
        ax.legend(loc="lower left", fontsize=7, framealpha=0.8)
    return res


def alignment_frame(gm, rewards, thresholds, box=None, figsize=(5.0, 5.0)):
    """One frame of :func:`alignment_explorer`: a new figure with :func:`alignment_view`, plus a one-line
    summary (λ*, E r, KL) printed under it. Returns the AlignResult (or ``None`` if infeasible)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    res = alignment_view(gm, rewards, thresholds, ax=ax, box=box)
    if res is None:
        print(f"no λ ≥ 0 reaches these levels ({ax.get_title()})")
    else:
        print(f"λ* = {np.round(res.lam, 4).tolist()}, E r = {np.round(res.expected, 4).tolist()}, "
              f"KL(q_λ*‖q) = {res.kl:.4f}")
    plt.show()
    return res


def alignment_explorer(gm, rewards, ranges, thresholds=None, box=None):
    """Sliders for the constraint levels b_i; each release re-solves UR-A and redraws
    :func:`alignment_view`. ``ranges``: one (lo, hi) or (lo, hi, step) per reward; ``thresholds``: the
    starting levels (default: the middle of each range). The plotting box is fixed (from the base
    and the tilts at the range ends) so frames are comparable.

    Returns an ``ipywidgets.interactive``: display it in JupyterLab; ``.f(b1=..., b2=...)`` is the
    plain callback (returns the AlignResult or ``None``). Chapter 3.
    """
    import ipywidgets as widgets

    rewards = list(rewards)
    rng = _parse_ranges(ranges, len(rewards))
    if thresholds is None:
        thresholds = [(lo + hi) / 2 for lo, hi, _ in rng]
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=float))
    if len(thresholds) != len(rewards):
        raise ValueError(f"thresholds: expected {len(rewards)} levels (one per reward), got {len(thresholds)}")
    if box is None:
        shown = [gm]
        for corner in ([lo for lo, _, _ in rng], [hi for _, hi, _ in rng], thresholds):
            try:
                shown.append(align_dual(gm, rewards, corner).target)
            except InfeasibleConstraintError:
                pass
        box = box_of(*shown, pad=2.0)
    labels = [f"b{i + 1}" for i in range(len(rewards))]

    def frame(**levels):
        return alignment_frame(gm, rewards, [levels[k] for k in labels], box=box)

    sliders = _float_sliders(labels, rng, thresholds)
    return widgets.interactive(frame, **sliders)
