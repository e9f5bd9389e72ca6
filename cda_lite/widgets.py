"""Interactive explorers for the chapters (JupyterLab), built on plain drawing functions.

Each explorer comes in two parts:

- a **view**: a plain function that solves a problem exactly and draws it on a matplotlib axis.
  The chapters call it to draw the static figure that the rendered book shows, and tests call it;
- a **builder** ``*_explorer(...)`` that wraps the view in ipywidgets sliders. ipywidgets is
  imported inside the builder, so ``import cda_lite.widgets`` stays light (numpy + matplotlib).
  The builder returns an :class:`ipywidgets.interactive`; its ``.f`` is the plain callback the
  sliders call (a test can call it with keyword thresholds) and ``.result`` its last return value.

Explorers:

- alignment (chapter 3): :func:`alignment_view`, :func:`alignment_frame`, :func:`alignment_explorer`;
- composition weights → product (chapter 5): :func:`composition_view`, :func:`composition_frame`,
  :func:`composition_explorer`, static :func:`composition_figure`;
- DAS particle count → distance to the exact tilt (chapter 7): :func:`das_view`, :func:`das_frame`,
  :func:`das_explorer`, static :func:`das_figure`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cda_lite.exact import InfeasibleConstraintError, align_dual
from cda_lite.viz import box_of, density_grid

__all__ = ["alignment_view", "alignment_frame", "alignment_explorer",
           "CompositionFrame", "composition_view", "composition_frame", "composition_explorer", "composition_figure",
           "DASFrame", "das_view", "das_frame", "das_explorer", "das_figure"]


# --------------------------------------------------------------------------- shared helpers
def _axis(ax, figsize=(5.0, 5.0)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _parse_ranges(ranges, n: int, name: str = "ranges"):
    """[(lo, hi, step)] from ranges given as (lo, hi) or (lo, hi, step), one per slider."""
    ranges = list(ranges)
    if len(ranges) != n:
        raise ValueError(f"{name}: expected {n} ranges (one per reward), got {len(ranges)}")
    out = []
    for i, r in enumerate(ranges):
        r = tuple(float(v) for v in r)
        if len(r) not in (2, 3) or not np.all(np.isfinite(r)):
            raise ValueError(f"{name}[{i}]: expected finite (lo, hi) or (lo, hi, step), got {ranges[i]!r}")
        lo, hi = r[:2]
        step = r[2] if len(r) == 3 else (hi - lo) / 100
        if not lo < hi or step <= 0:
            raise ValueError(f"{name}[{i}]: need lo < hi and step > 0, got {ranges[i]!r}")
        out.append((lo, hi, step))
    return out


def _float_sliders(labels, ranges, values):
    """One ipywidgets FloatSlider per (label, (lo, hi, step), value); updates on release only."""
    import ipywidgets as widgets

    return {
        label: widgets.FloatSlider(value=float(v), min=lo, max=hi, step=step, description=label,
                                   continuous_update=False, readout_format=".3g")
        for label, (lo, hi, step), v in zip(labels, ranges, values)
    }


# --------------------------------------------------------------------------- alignment (chapter 3)
def _reward_label(reward, i):
    return getattr(reward, "name", None) or f"r{i + 1}"


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


# --------------------------------------------------------------------------- composition (chapter 5)
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


# --------------------------------------------------------------------------- DAS (chapter 7)
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
