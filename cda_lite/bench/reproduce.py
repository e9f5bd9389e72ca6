"""Reproduce the paper's 2-D figures: ``python -m cda_lite.bench.reproduce fig1|fig2 [--out DIR] [--experts ...]``.

- **fig1** (AND, Theorem 3): three experts ≈ (1, 0), (−1, ±0.2) with variance 0.05 — experts, equal
  weights, constrained (Algorithm 2) — plus two variants: three experts 120° apart on radius 2, and
  unequal variances ((1, 0) var 0.025 vs (−1, 0) var 0.5), where Algorithm 3's fixed point is not λ*
  (checked at the paper's T = 1000, β 1e-4 → 0.02 with exact experts).
- **fig2** (OR, Theorem 5): q1 = N((0.75, 0), 0.025 I), q2 = ½N((−0.75, ±0.75), 0.025 I); equal weights
  give mode masses ½, ¼, ¼, the constrained mixture ⅓ each.

Saves ``DIR/fig1.png`` / ``fig2.png`` and ``.json`` (default DIR: build/figures) and prints our numbers
beside the published ones. ``--experts auto`` uses DSM-trained experts for the main panels and exact
experts for the variants under the fast profile (``CDA_PROFILE=full``: trained everywhere). Chapters 5–6.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from cda_lite import pick, profile
from cda_lite._cli import Parser, entry_point, writable_dir
from cda_lite.gmm import GaussianMixture
from cda_lite.paths import data_path
from cda_lite.exact.problems import load_problem
from cda_lite.schedules import linear

# Published (paper) and reference numbers put beside ours.
PUBLISHED = {
    "fig1": {"mean_equal": [-0.19, 0.02], "mean_constrained": [0.00, -0.02], "lam_star": [0.495, 0.2525, 0.2525]},
    "triangle": {"lam_star": [1 / 3, 1 / 3, 1 / 3]},
    "unequal": {"lam_star": [0.210, 0.790], "max_kl_star": 3.638, "lam_dual_only": [0.502, 0.498],
                "max_kl_dual_only": 3.675,
                "note": "methods.md: exact propagation of the surrogate DDPM sampler with σ_t² = β_t, T = 1000"},
    "fig2": {"mode_masses_constrained": [1 / 3, 1 / 3, 1 / 3], "mode_masses_equal": [0.5, 0.25, 0.25]},
}
PAPER_SCHEDULE_T1000 = dict(T=1000, beta_start=1e-4, beta_end=0.02)


def triangle_experts(radius: float = 2.0, var: float = 0.05):
    """Three Gaussian experts at 0°, 120°, 240° on a circle (Fig. 1 variant; λ* = 1/3 each)."""
    ang = np.deg2rad([0.0, 120.0, 240.0])
    return [GaussianMixture.gaussian(radius * np.array([np.cos(a), np.sin(a)]), var) for a in ang]


def _experts(name):
    return load_problem(data_path("problems", f"{name}.json")).experts


def fig1_numbers(experts: str = "auto", seed: int = 0, log=print) -> dict:
    """Run the three AND problems; returns {name: result dict of cda_lite.bench.compose2d.and_experiment}."""
    from cda_lite.bench.compose2d import and_experiment, default_config

    kind_main = "learned" if experts == "auto" else experts
    kind_var = ("exact" if profile() == "fast" else "learned") if experts == "auto" else experts
    cfg = default_config(seed=seed)
    out = {}
    log(f"fig1: main panel ({kind_main} experts) ...")
    out["fig1"] = and_experiment(_experts("fig1_and"), experts=kind_main, config=cfg)
    log(f"fig1: 120° variant ({kind_var} experts) ...")
    out["triangle"] = and_experiment(triangle_experts(), experts=kind_var, config=cfg)
    log(f"fig1: unequal variances ({kind_var} experts; Algorithm 3 with exact experts at T = 1000) ...")
    cfg3 = default_config(seed=seed, kl_timesteps=pick(8, 16))
    out["unequal"] = and_experiment(_experts("fig1_unequal"), experts=kind_var, config=cfg3,
                                    dual_only_schedule=None if kind_var == "learned" else linear(
                                        PAPER_SCHEDULE_T1000["T"], PAPER_SCHEDULE_T1000["beta_start"],
                                        PAPER_SCHEDULE_T1000["beta_end"]))
    return out


def fig2_numbers(experts: str = "auto", seed: int = 0, log=print) -> dict:
    from cda_lite.bench.compose2d import default_config, or_experiment

    kind = "learned" if experts == "auto" else experts
    log(f"fig2: OR composition ({kind} experts) ...")
    return {"fig2": or_experiment(_experts("fig2_or"), experts=kind, config=default_config(seed=seed))}


def _r(v, d=3):
    return np.round(np.asarray(v, float), d).tolist()


def fig1_table(res: dict) -> str:
    rows = ["| problem | λ* (exact) | Algorithm 2 | Algorithm 3 | Alg. 3 fixed point (exact KLs) | max KL at λ* | "
            "max KL at Alg. 2's λ | max KL of Alg. 3's fixed point |", "|" + " --- |" * 8]
    for name, r in res.items():
        rows.append(f"| {name} ({r['experts']}) | {_r(r['lam_exact'])} | {_r(r['lam_learned'])} | "
                    f"{_r(r.get('lam_dual_only', []))} | {_r(r.get('lam_dual_only_fixed_point', []))} | "
                    f"{r['max_kl_exact']:.3f} | {r['max_kl_at_lam_learned']:.3f} | "
                    f"{r.get('max_kl_dual_only_fixed_point', float('nan')):.3f} |")
    f = res["fig1"]
    rows += ["", "| Fig. 1 sample mean | ours (learned) | exact | published |", "| --- | --- | --- | --- |",
             f"| equal weights | {_r(f['mean_equal_learned'], 2)} | {_r(f['mean_equal_exact'], 2)} | "
             f"{PUBLISHED['fig1']['mean_equal']} |",
             f"| constrained | {_r(f['mean_learned'], 2)} | {_r(f['mean_exact'], 2)} | "
             f"{PUBLISHED['fig1']['mean_constrained']} |"]
    u = PUBLISHED["unequal"]
    rows += ["", f"Unequal variances, reference: λ* = {u['lam_star']} (max KL {u['max_kl_star']}), Algorithm 3's fixed "
             f"point {u['lam_dual_only']} (max KL {u['max_kl_dual_only']}; {u['note']})."]
    return "\n".join(rows)


def fig2_table(res: dict) -> str:
    r = res["fig2"]
    p = PUBLISHED["fig2"]
    return "\n".join([
        "| Fig. 2 | λ | mode masses (learned samples) | exact | published |", "| --- | --- | --- | --- | --- |",
        f"| equal weights | [0.5, 0.5] | {_r(r['mode_masses_equal'])} | {_r(r['mode_masses_equal_exact'])} | "
        f"{_r(p['mode_masses_equal'])} |",
        f"| constrained (learned λ) | {_r(r['lam_learned'])} | {_r(r['mode_masses'])} | {_r(r['mode_masses_exact'])} | "
        f"{_r(p['mode_masses_constrained'])} |",
        f"| dual with exact primal | {_r(r.get('lam_dual_only', []))} | | | |",
        f"| λ* (mixture_dual) | {_r(r['lam_exact'])} | | | |"])


# --------------------------------------------------------------------------- figures
def plot_fig1(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cda_lite.compose import product_of_experts
    from cda_lite.viz import plot_dual_trajectory

    problems = {"fig1": _experts("fig1_and"), "triangle": triangle_experts(), "unequal": _experts("fig1_unequal")}
    fig, axes = plt.subplots(len(res), 4, figsize=(16, 4 * len(res)))
    axes = np.atleast_2d(axes)
    for row, (name, r) in zip(axes, res.items()):
        gms = problems[name]
        box = _box(gms)
        for g in gms:
            _contours(row[0], g.log_prob, box, "Greys")
        row[0].set_title(f"{name}: experts")
        x_eq = np.asarray(r["samples_equal_learned"])
        row[1].scatter(x_eq[:, 0], x_eq[:, 1], s=2, alpha=0.3, color="tab:orange")
        _contours(row[1], product_of_experts(gms, np.full(len(gms), 1 / len(gms))).log_prob, box, "Blues")
        row[1].set_title(f"equal weights: mean {_r(np.mean(x_eq, 0), 2)}")
        x = np.asarray(r["samples_learned"])
        row[2].scatter(x[:, 0], x[:, 1], s=2, alpha=0.3, color="tab:green")
        _contours(row[2], product_of_experts(gms, np.asarray(r["lam_exact"])).log_prob, box, "Blues")
        row[2].set_title(f"constrained (Alg. 2): λ = {_r(r['lam_learned'], 2)}")
        for ax in row[:3]:
            for g in gms:
                ax.plot(*g.means[0], "k+", ms=10)
            ax.set_xlim(box[0][0], box[1][0])
            ax.set_ylim(box[0][1], box[1][1])
            ax.set_aspect("equal")
        plot_dual_trajectory(np.asarray(r["lam_history_learned"]), exact=np.asarray(r["lam_exact"]), ax=row[3],
                             xlabel="round")
        if "lam_history_dual_only" in r:
            h3 = np.asarray(r["lam_history_dual_only"])
            for i in range(h3.shape[1]):
                row[3].plot(h3[:, i], ls=":", color=f"C{i}")
        row[3].set_title("λ: Alg. 2 —, Alg. 3 ···, λ* - -")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fig2(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cda_lite.viz import plot_dual_trajectory

    gms = _experts("fig2_or")
    r = res["fig2"]
    box = _box(gms)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for g, c in zip(gms, ("Blues", "Reds")):
        _contours(axes[0], g.log_prob, box, c)
    axes[0].set_title("experts q1 (blue), q2 (red)")
    for ax, key, title in ((axes[1], "samples_equal_learned", "equal weights"),
                           (axes[2], "samples_learned", "constrained")):
        x = np.asarray(r[key])
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.3)
        masses = r["mode_masses_equal"] if key == "samples_equal_learned" else r["mode_masses"]
        ax.set_title(f"{title}: mode masses {_r(masses, 2)}")
    for ax in axes[:3]:
        ax.set_xlim(box[0][0], box[1][0])
        ax.set_ylim(box[0][1], box[1][1])
        ax.set_aspect("equal")
    plot_dual_trajectory(np.asarray(r["lam_history_learned"]), exact=np.asarray(r["lam_exact"]), ax=axes[3],
                         xlabel="round")
    axes[3].set_title("λ (learned) and λ* (dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _box(gms, pad=0.8):
    means = np.concatenate([g.means for g in gms])
    lo, hi = means.min(0) - pad, means.max(0) + pad
    half = (hi - lo).max() / 2
    c = (lo + hi) / 2
    return (c - half, c + half)


def _contours(ax, log_prob, box, cmap, n=150):
    xs = np.linspace(box[0][0], box[1][0], n)
    ys = np.linspace(box[0][1], box[1][1], n)
    X, Y = np.meshgrid(xs, ys)
    Z = np.exp(log_prob(np.stack([X.ravel(), Y.ravel()], 1))).reshape(n, n)
    ax.contour(X, Y, Z, levels=6, cmap=cmap)


def _jsonable(res: dict) -> dict:
    from cda_lite.bench.__main__ import _jsonable as j
    from cda_lite.bench.compose2d import strip_samples

    return {k: j(strip_samples(v)) for k, v in res.items()}


@entry_point("python -m cda_lite.bench.reproduce")
def main(argv=None) -> int:
    import torch

    p = Parser(prog="python -m cda_lite.bench.reproduce", description=__doc__.split("\n")[0])
    p.add_argument("figure", choices=("fig1", "fig2"))
    p.add_argument("--out", default=os.path.join("build", "figures"), help="folder for the figure and its numbers")
    p.add_argument("--experts", choices=("auto", "learned", "exact"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    writable_dir(args.out)  # before the experiments run
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.figure == "fig1":
        res = fig1_numbers(args.experts, args.seed, log)
        table, plot = fig1_table(res), plot_fig1
    else:
        res = fig2_numbers(args.experts, args.seed, log)
        table, plot = fig2_table(res), plot_fig2
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, f"{args.figure}.png")
    plot(res, png)
    seconds = time.perf_counter() - t0
    with open(os.path.join(args.out, f"{args.figure}.json"), "w") as f:
        json.dump({"profile": profile(), "seconds": seconds, "published": PUBLISHED, "results": _jsonable(res)}, f, indent=1)
    print(table)
    print(f"\nprofile {profile()}, {seconds:.0f} s; figure {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
