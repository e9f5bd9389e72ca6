"""Learned against exact on the first N problems of a random family (``align2d`` or ``compose2d``).

``python -m cda_lite.bench sweep align2d --n N [--seed S]`` runs Algorithm 1 on
``cda_lite.exact.problems.random_alignment(S), …, (S+N−1)`` — every seed in the range, never seeds picked
because they pass — and prints one row per problem: λ*(q), λ*(q̂) of the pretrained sampler, the
learned λ, the relative error ‖λ − λ*‖/‖λ*‖ split into pretraining and optimisation, the worst slack
(σ units) and the seconds. ``sweep compose2d`` runs Algorithm 2 on ``random_composition`` and
reports ‖λ − λ*‖∞, the exact max-KL at the learned λ against the optimum and the spread of the exact
KLs of the active experts at the learned λ. A summary gives medians, worst cases and time per
problem; a figure (learned vs exact λ, and the error split into its parts) is saved to ``--figure``.
Chapters 4 and 5.
"""
from __future__ import annotations

import contextlib
import json
import os

import numpy as np
import torch

from cda_lite.profile import PROFILES


def add_arguments(p) -> None:
    p.add_argument("family", choices=("align2d", "compose2d"), help="random_alignment (Algorithm 1) or "
                   "random_composition (Algorithm 2)")
    p.add_argument("--n", type=int, default=8, help="number of problems: seeds S … S+N−1 (default 8)")
    p.add_argument("--seed", type=int, default=0, help="first seed S (default 0)")
    p.add_argument("--profile", choices=PROFILES, default=None, help="effort (default: $CDA_PROFILE or fast)")
    p.add_argument("--sampler-samples", type=int, default=100_000, metavar="N",
                   help="align2d: samples of the pretrained sampler for λ*(q̂) (default 100000)")
    p.add_argument("--figure", default=None, metavar="PATH",
                   help="where to save the figure (default build/sweep/sweep_FAMILY.png; 'none' to skip)")
    p.add_argument("--rows", default=None, metavar="FILE",
                   help="JSON-lines file of finished rows: rows already there (same family, profile and seed) are "
                        "reused, new ones appended as each problem finishes (an interrupted sweep resumes)")
    p.add_argument("--primal", choices=("pathwise", "tilted_dsm"), default=None,
                   help="align2d: Algorithm 1's primal step (default: the bench preset's, pathwise)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar on stderr")


def run(args) -> dict:
    torch.set_num_threads(1)
    if args.n < 1:
        raise ValueError(f"--n must be ≥ 1, got {args.n}")
    if args.seed < 0:
        raise ValueError(f"--seed must be ≥ 0, got {args.seed}")
    if args.sampler_samples < 1000:
        raise ValueError(f"--sampler-samples must be ≥ 1000, got {args.sampler_samples}")
    profile = args.profile or os.environ.get("CDA_PROFILE", "fast")
    seeds = list(range(args.seed, args.seed + args.n))
    if args.primal and args.family != "align2d":
        raise ValueError("--primal applies to align2d only")
    result = sweep(args.family, seeds, profile, n_sampler=args.sampler_samples, progress=not args.no_progress,
                   rows_file=args.rows, primal=args.primal)
    figure = args.figure or os.path.join("build", "sweep", f"sweep_{args.family}.png")
    if figure != "none":
        os.makedirs(os.path.dirname(figure) or ".", exist_ok=True)
        plot(result, figure)
        result["figure"] = figure
    return result


def sweep(family: str, seeds, profile: str = "fast", n_sampler: int = 100_000, progress: bool = False,
          rows_file: str | None = None, primal: str | None = None) -> dict:
    """Rows and summary of ``family`` on ``seeds`` (see the module docstring). With ``rows_file`` every
    finished row is appended to that JSON-lines file at once, and rows found there are reused (same
    family, profile and, for align2d, primal step). ``primal``: Algorithm 1's primal step (None: the
    preset's, :func:`cda_lite.bench.align2d.default_config`)."""
    from tqdm.auto import tqdm

    if family not in ("align2d", "compose2d"):
        raise ValueError(f"family: expected 'align2d' or 'compose2d', got {family!r}")
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {PROFILES}, got {profile!r}")
    if family == "align2d":
        from cda_lite.bench.align2d import default_config

        primal = primal or default_config(profile).primal
        row_fn = lambda seed, profile, n_sampler: _align_row(seed, profile, n_sampler, primal)  # noqa: E731
    else:
        row_fn = _compose_row
    done = _read_rows(rows_file, family, profile, primal)
    rows = []
    bar = tqdm(list(seeds), desc=f"sweep {family}", disable=not progress)
    for seed in bar:
        row = done.get(int(seed))
        fresh = row is None
        if fresh:
            row = row_fn(int(seed), profile, n_sampler)
        elif family == "align2d" and n_sampler and "lam_chain" not in row:
            row = {**row, **_chain_parts(row, profile, n_sampler)}  # a row from before the split: no training needed
            fresh = True
        if family == "align2d" and "kl_excess" not in row:  # a row from before the cost columns: exact, seconds
            from cda_lite.bench.align2d import cost_of_lambda
            from cda_lite.exact.problems import random_alignment

            row = {**row, **cost_of_lambda(random_alignment(int(seed)), row["lam_learned"])}
            fresh = True
        if fresh:
            if rows_file:
                with open(rows_file, "a") as f:
                    f.write(json.dumps({"family": family, "profile": profile, "load_average": _load(), **row}) + "\n")
        rows.append({k: v for k, v in row.items() if k not in ("family", "profile", "load_average")})
        bar.set_postfix(err=f"{rows[-1]['error']:.3f}")
    out = {"family": family, "profile": profile, "seeds": [int(s) for s in seeds], "rows": rows,
           "summary": summarize(family, rows), "load_average": _load()}
    if primal:
        out["primal_step"] = primal
    return out


@contextlib.contextmanager
def _profile(profile: str):
    """CDA_PROFILE set to ``profile`` for the block (the compose presets read it through ``pick``)."""
    old = os.environ.get("CDA_PROFILE")
    os.environ["CDA_PROFILE"] = profile
    try:
        yield
    finally:
        if old is None:
            del os.environ["CDA_PROFILE"]
        else:
            os.environ["CDA_PROFILE"] = old


def _read_rows(path, family: str, profile: str, primal: str | None = None) -> dict:
    """{seed: row} of the finished rows in a JSON-lines file (missing file: none); align2d rows must
    also have been run with ``primal`` (rows from before the option: "pathwise")."""
    if not path or not os.path.exists(path):
        return {}
    out = {}
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"--rows {path}: line {i} is not JSON") from None
            if row.get("family") == family and row.get("profile") == profile and \
                    (primal is None or row.get("primal_step", "pathwise") == primal):
                out[int(row["seed"])] = row
    return out


def _load():
    try:
        return list(os.getloadavg())
    except OSError:  # pragma: no cover - platforms without getloadavg
        return None


def _align_row(seed: int, profile: str, n_sampler: int, primal: str = "pathwise") -> dict:
    from cda_lite.bench.align2d import PRETRAIN_EMA, REFINE_SAMPLES, cost_of_lambda, default_config, learned_alignment
    from cda_lite.exact.problems import random_alignment

    problem = random_alignment(seed)
    cfg = default_config(profile, dual_precondition=True, primal=primal)
    r = learned_alignment(problem, cfg, pretrain_steps={"fast": 1500, "full": 3000}[profile],
                          n_sampler=n_sampler, pretrain_ema=PRETRAIN_EMA, n_refine=REFINE_SAMPLES).result
    return {"seed": seed, "components": problem.base.n_components, "primal_step": primal,
            "lam_exact": r["lam_exact"], "lam_sampler": r.get("lam_sampler"), "lam_learned": r["lam_learned"],
            "error": r["rel_error"], "pretraining": r.get("rel_pretraining"), "optimisation": r.get("rel_optimisation"),
            "lam_refined": r.get("lam_refined"), "error_refined": r.get("rel_error_refined"),
            "dual": r.get("rel_dual"), "primal": r.get("rel_primal"),
            "lam_chain": r.get("lam_chain"), "sampler": r.get("rel_sampler"), "network": r.get("rel_network"),
            "slack_sigma": r["slack_sigma"], "worst_slack_sigma": float(min(r["slack_sigma"])),
            **cost_of_lambda(problem, r["lam_learned"]),
            "kl_exact": r["kl_exact"], "kl_path": r["kl_path"],
            "seconds": r["seconds"], "seconds_algorithm": r["seconds_algorithm"]}


def _chain_parts(row: dict, profile: str, n_sampler: int) -> dict:
    """The sampler/network split of a finished row's pretraining part (the exact ε through the chain,
    :func:`cda_lite.bench.align2d.chain_dual`; seconds, no training)."""
    from cda_lite.bench.align2d import chain_dual, decompose, default_config
    from cda_lite.exact.problems import random_alignment

    lam_chain = chain_dual(random_alignment(row["seed"]), default_config(profile), n_sampler, seed=row["seed"] + 7)  # = learned_alignment's gen_seed + 6
    d = decompose(row["lam_exact"], row.get("lam_sampler"), row["lam_learned"], None, lam_chain)
    return {"lam_chain": d.get("lam_chain"), "sampler": d.get("rel_sampler"), "network": d.get("rel_network")}


def _compose_row(seed: int, profile: str, n_sampler: int) -> dict:
    from cda_lite.bench.compose2d import and_experiment, default_config
    from cda_lite.compose import product_kls
    from cda_lite.pretrained import PRETRAIN_AFFINE, PRETRAIN_EMA, PRETRAIN_SIGMA
    from cda_lite.exact.problems import random_composition

    problem = random_composition(seed)
    with _profile(profile):
        cfg = default_config(seed=seed)
        r = and_experiment(problem.experts, experts="learned", config=cfg, dual_only=False, expert_seed=seed,
                           decompose=True, expert_ema=PRETRAIN_EMA, expert_affine=PRETRAIN_AFFINE,
                           expert_sigma=PRETRAIN_SIGMA)
    lam, star = np.asarray(r["lam_learned"], float), np.asarray(r["lam_exact"], float)
    kls = np.asarray(product_kls(problem.experts, lam), float)
    active = star > 1e-6
    return {"seed": seed, "experts": len(problem.experts), "lam_exact": star.tolist(), "lam_learned": lam.tolist(),
            "error": float(np.abs(lam - star).max()),
            "max_kl_exact": float(r["max_kl_exact"]), "max_kl_at_lam_learned": float(kls.max()),
            "max_kl_excess": float(kls.max() / r["max_kl_exact"] - 1.0),
            "kls_at_lam_learned": kls.tolist(), "kls_exact": np.asarray(r["kls_exact"], float).tolist(),
            "active_kl_spread": float(kls[active].max() / kls[active].min() - 1.0),
            "inactive_experts": int((~active).sum()),
            "lam_exact_kls": np.asarray(r["lam_exact_kls"], float).tolist(),
            "lam_exact_experts": np.asarray(r["lam_exact_experts"], float).tolist(),
            **{f"error_{k}": v for k, v in r["error_parts"].items()},
            "seconds": float(r["seconds"])}


def _median_worst(rows: list, keys) -> dict:
    """``median_KEY`` and ``worst_KEY`` of every column in ``keys`` that some row has."""
    out = {}
    for key in keys:
        v = np.array([r[key] for r in rows if r.get(key) is not None])
        if len(v):
            out[f"median_{key}"], out[f"worst_{key}"] = float(np.median(v)), float(v.max())
    return out


def summarize(family: str, rows: list) -> dict:
    """Median and worst of each error column, and the time per problem (align2d also: the exact tilt
    at the learned λ: the median of ``abs(KL/KL* − 1)``, the worst excess and how many are within 5 %)."""
    err = np.array([r["error"] for r in rows])
    sec = np.array([r["seconds"] for r in rows])
    out = {"n": len(rows), "median_error": float(np.median(err)), "worst_error": float(err.max()),
           "worst_seed": int(rows[int(err.argmax())]["seed"]),
           "median_seconds": float(np.median(sec)), "max_seconds": float(sec.max()), "total_seconds": float(sec.sum())}
    if family == "align2d":
        out.update(_median_worst(rows, ("pretraining", "optimisation", "sampler", "network", "error_refined",
                                        "dual", "primal")))
        out["worst_slack_sigma"] = float(min(r["worst_slack_sigma"] for r in rows))
        kle = [r["kl_excess"] for r in rows if r.get("kl_excess") is not None]
        if kle:  # the exact tilt at the learned λ against KL*: abs(KL/KL* − 1) per problem
            out["median_abs_kl_excess"] = float(np.median(np.abs(kle)))
            out["worst_kl_excess"] = float(max(kle))
            out["within_5pct_kl"] = int(sum(abs(k) < 0.05 for k in kle))
        out["median_seconds_algorithm"] = float(np.median([r["seconds_algorithm"] for r in rows]))
    else:
        exc = np.array([r["max_kl_excess"] for r in rows])
        spread = np.array([r["active_kl_spread"] for r in rows])
        out.update(_median_worst(rows, ("error_dual_schedule", "error_estimates", "error_experts")))
        out.update({"median_max_kl_excess": float(np.median(exc)), "worst_max_kl_excess": float(exc.max()),
                    "median_active_kl_spread": float(np.median(spread)), "worst_active_kl_spread": float(spread.max())})
    return out


def plot(result: dict, path: str) -> None:
    """Learned vs exact λ (every component of every problem), and the error per problem in its parts."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plot_axes(result)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_axes(result: dict):
    """The sweep figure as (fig, axes) (a chapter shows it inline)."""
    import matplotlib.pyplot as plt

    rows, family = result["rows"], result["family"]
    fig, (a, b) = plt.subplots(2, 1, figsize=(8.5, 9))  # stacked: legible at a book's page width
    ex = np.concatenate([r["lam_exact"] for r in rows])
    le = np.concatenate([r["lam_learned"] for r in rows])
    hi = max(ex.max(), le.max()) * 1.1 + 1e-3
    lo = 0.0
    a.plot([lo, hi], [lo, hi], color="0.6", lw=1, label="learned = exact")
    if family == "align2d" and all(r.get("lam_sampler") is not None for r in rows):
        sa = np.concatenate([r["lam_sampler"] for r in rows])
        a.scatter(ex, sa, marker="x", color="tab:orange", label="λ*(q̂) of the pretrained sampler")
    a.scatter(ex, le, s=18, color="tab:blue", label="learned λ")
    if family == "align2d" and all(r.get("lam_refined") is not None for r in rows):
        a.scatter(ex, np.concatenate([r["lam_refined"] for r in rows]), s=18, marker="s", facecolors="none",
                  edgecolors="tab:green", label="refined λ (last dual step solved)")
    if family == "align2d":
        a.set_xscale("symlog", linthresh=0.1)
        a.set_yscale("symlog", linthresh=0.1)
    a.set_xlabel("exact λ*")
    a.set_ylabel("λ")
    a.set_title(f"{family}: {len(rows)} random problems, every component of λ")
    a.legend(fontsize=9)
    seeds = [r["seed"] for r in rows]
    x = np.arange(len(rows))
    if family == "align2d":
        parts = [("error", "total ‖λ − λ*(q)‖/‖λ*(q)‖"), ("pretraining", "pretraining ‖λ*(q̂) − λ*(q)‖/‖λ*(q)‖"),
                 ("optimisation", "optimisation ‖λ − λ*(q̂)‖/‖λ*(q)‖")]
        if all(r.get("error_refined") is not None for r in rows):
            parts.append(("error_refined", "refined λ: total"))
        b.set_ylabel("relative error")
    else:
        parts = [("error", "|λ − λ*|∞"), ("max_kl_excess", "max-KL at learned λ / optimum − 1")]
        if all("error_estimates" in r for r in rows):
            parts += [("error_dual_schedule", "part: dual schedule (exact KLs)"),
                      ("error_estimates", "part: Algorithm 2's estimates (exact experts)"),
                      ("error_experts", "part: learned experts")]
        b.set_ylabel("error")
    w = 0.8 / len(parts)  # one bar per part, side by side around each seed
    for k, (key, label) in enumerate(parts):
        b.bar(x + (k - (len(parts) - 1) / 2) * w, [r.get(key) or 0 for r in rows], w, label=label)
    b.set_xticks(x, [str(s) for s in seeds])
    b.set_xlabel("seed")
    b.legend(fontsize=9)
    b.set_title("error per problem, in its parts")
    fig.tight_layout()
    return fig, (a, b)


def format(result: dict) -> str:
    s = result["summary"]
    lines = []
    if result["family"] == "align2d":
        lines.append(f"{'seed':>4} {'K':>2} {'λ*(q)':>18} {'λ*(q̂)':>18} {'learned':>18} {'error':>6} {'pretr':>6} "
                     f"{'optim':>6} {'slack σ':>8} {'s':>5}")
        for r in result["rows"]:
            f = lambda v: str(np.round(v, 3).tolist()) if v is not None else "-"  # noqa: E731
            lines.append(f"{r['seed']:>4} {r['components']:>2} {f(r['lam_exact']):>18} {f(r['lam_sampler']):>18} "
                         f"{f(r['lam_learned']):>18} {r['error']:>6.3f} {r['pretraining'] or float('nan'):>6.3f} "
                         f"{r['optimisation'] or float('nan'):>6.3f} {r['worst_slack_sigma']:>8.3f} {r['seconds']:>5.0f}")
        lines.append(f"median error {s['median_error']:.3f} (pretraining {s.get('median_pretraining', float('nan')):.3f}, "
                     f"optimisation {s.get('median_optimisation', float('nan')):.3f}); worst {s['worst_error']:.3f} "
                     f"(seed {s['worst_seed']}); worst slack {s['worst_slack_sigma']:.3f}σ; "
                     f"{s['median_seconds']:.0f} s per problem (median), {s['max_seconds']:.0f} s max")
        if "median_error_refined" in s:
            lines.append(f"refined λ (last dual step solved on the model's samples): median error "
                         f"{s['median_error_refined']:.3f}, worst {s['worst_error_refined']:.3f}; the optimisation part "
                         f"splits into dual (median {s['median_dual']:.3f}) and primal (median {s.get('median_primal', float('nan')):.3f})")
    else:
        lines.append(f"{'seed':>4} {'m':>2} {'λ*':>26} {'learned':>26} {'|Δλ|∞':>6} {'maxKL*':>7} {'maxKL(λ)':>8} "
                     f"{'spread':>6} {'s':>5}")
        for r in result["rows"]:
            f = lambda v: str(np.round(v, 3).tolist())  # noqa: E731
            lines.append(f"{r['seed']:>4} {r['experts']:>2} {f(r['lam_exact']):>26} {f(r['lam_learned']):>26} "
                         f"{r['error']:>6.3f} {r['max_kl_exact']:>7.3f} {r['max_kl_at_lam_learned']:>8.3f} "
                         f"{r['active_kl_spread']:>6.3f} {r['seconds']:>5.0f}")
        lines.append(f"median |Δλ|∞ {s['median_error']:.3f}, worst {s['worst_error']:.3f} (seed {s['worst_seed']}); "
                     f"max-KL excess median {s['median_max_kl_excess']:.3f}, worst {s['worst_max_kl_excess']:.3f}; "
                     f"{s['median_seconds']:.0f} s per problem (median), {s['max_seconds']:.0f} s max")
        if "median_error_estimates" in s:
            lines.append("‖Δλ‖∞ in its parts (median / worst): " + ", ".join(
                f"{k} {s[f'median_error_{k}']:.3f} / {s[f'worst_error_{k}']:.3f}"
                for k in ("dual_schedule", "estimates", "experts")))
    if "figure" in result:
        lines.append(f"figure: {result['figure']}")
    return "\n".join(lines)
