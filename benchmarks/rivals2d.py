"""Benchmark: inference-time rivals on 2-D (Chapter 7).

    PYTHONPATH=. python benchmarks/rivals2d.py [--quick] [--out DIR] [--json]

1. the DAS toys' published targets (3x3 grid: E r = -0.29; circle: E r = -1.34) from the exact tilt;
2. DAS at N = 100 particles, averaged over independent runs, against those targets;
3. distance to the target vs N = 1..256 (the law of one DAS output particle, pooled over runs);
4. DB-MPA's bias over alpha and w on the four-mode "diamond" (data/problems/blend_diamond.json),
   with and without the path-weight correction;
5. cost vs accuracy: sliced-W distance vs network evaluations per sample for every method;
6. the rivals2d table (``python -m cda_lite.bench rivals2d``) on the three problem files.

Figures go to --out (default: benchmarks/). Everything uses exact epsilon-models of the mixtures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from cda_lite.bench.rivals2d import compare
from cda_lite.exact import tilt
from cda_lite.inference import (
    WeightedReward, das, guided_nfe, sample_blend_corrected, sample_db_kla, sample_db_mpa, sample_db_mpa_ls,
    sample_guided, sample_msdda,
)
from cda_lite.metrics import sliced_wasserstein
from cda_lite.models import ExactEps
from cda_lite.paths import data_path
from cda_lite.pretrained import default_schedule
from cda_lite.exact.problems import load_problem

HERE = os.path.dirname(os.path.abspath(__file__))


def das_toys(sched, runs, n=100, seed=0):
    out = {}
    for name, published in (("das_grid", -0.29), ("das_circle", -1.34)):
        p = load_problem(data_path("problems", f"{name}.json"))
        r = p.rewards[0]
        exact = r.expectation(tilt(p.base, [r], [1.0]))
        res = das(ExactEps(p.base, sched), r, sched, n, alpha=1.0, groups=runs, seed=seed)
        per_run = r(res.x.numpy()).reshape(runs, n).mean(1)
        out[name] = {"published_target": published, "exact_target": round(exact, 4),
                     "das_mean_reward": round(float(per_run.mean()), 4),
                     "das_run_sd": round(float(per_run.std(ddof=1)), 4), "runs": runs, "particles": n,
                     "das_error": round(float(abs(per_run.mean() - exact)), 4)}
    return out


def distance_vs_n(sched, total, ns, seed=0):
    out = {}
    for name in ("das_grid", "das_circle"):
        p = load_problem(data_path("problems", f"{name}.json"))
        r = p.rewards[0]
        y = tilt(p.base, [r], [1.0]).sample(total, seed=seed + 1)
        floor = sliced_wasserstein(tilt(p.base, [r], [1.0]).sample(total, seed=seed + 2), y)
        rows = []
        for n in ns:
            x = das(ExactEps(p.base, sched), r, sched, n, groups=total // n, seed=seed + n).x.numpy()
            rows.append({"N": n, "distance": round(sliced_wasserstein(x, y), 4), "mean_reward": round(float(r(x).mean()), 4)})
        out[name] = {"floor": round(floor, 4), "rows": rows}
    return out


def blend_bias(sched, alphas, ws, n, seed=0):
    p = load_problem(data_path("problems", "blend_diamond.json"))
    rows = []
    for a in alphas:
        singles = [ExactEps(tilt(p.base, [r], [1.0 / a]), sched) for r in p.rewards]
        for w1 in ws:
            w = np.array([w1, 1 - w1])
            m = tilt(p.base, p.rewards, w / a).mean()
            x = sample_db_mpa(singles, w, sched, n, seed=seed).numpy()
            xc = sample_blend_corrected(singles, w, sched, n // 4, groups=4, seed=seed).x.numpy()
            rows.append({"alpha": a, "w": w1, "target_mean": m.round(4).tolist(),
                         "db_mpa_bias": round(float(np.linalg.norm(x.mean(0) - m)), 4),
                         "corrected_bias": round(float(np.linalg.norm(xc.mean(0) - m)), 4)})
    return rows


def cost_vs_accuracy(sched, problem, alpha, w, n, step_list, seed=0):
    p = load_problem(data_path("problems", f"{problem}.json"))
    w = np.asarray(w, float)
    target = tilt(p.base, p.rewards, w / alpha)
    y = target.sample(n, seed=seed + 1)
    pre = ExactEps(p.base, sched)
    singles = [ExactEps(tilt(p.base, [r], [1.0 / alpha]), sched) for r in p.rewards]
    kla = ExactEps(tilt(p.base, p.rewards, w / (0.5 * alpha)), sched)
    rw = WeightedReward(p.rewards, w)
    m = len(singles)
    out = {}
    for K in step_list:
        methods = {
            "das": lambda: (das(pre, rw, sched, n // 8, alpha, K, groups=8, seed=seed).x, 2 * K - 1),
            "db_mpa": lambda: (sample_db_mpa(singles, w, sched, n, K, seed=seed), m * K),
            "db_mpa_corrected": lambda: (sample_blend_corrected(singles, w, sched, n // 8, K, groups=8, seed=seed).x, m * K),
            "db_kla": lambda: (sample_db_kla(pre, kla, 0.5, sched, n, K, seed=seed), 2 * K),
            "db_mpa_ls": lambda: (sample_db_mpa_ls(singles, w, sched, n, K, seed=seed), K),
            "msdda": lambda: (sample_msdda(singles, w, sched, n, K, seed=seed), m * K),
            "guidance": lambda: (sample_guided(pre, rw, sched, n, alpha, K, seed=seed), guided_nfe(sched, K)),
        }
        for name, fn in methods.items():
            x, nfe = fn()
            out.setdefault(name, []).append({"steps": K, "nfe": nfe,
                                             "distance": round(sliced_wasserstein(x.double().numpy(), y), 4)})
    return {"problem": problem, "alpha": alpha, "weights": w.tolist(), "floor": round(sliced_wasserstein(target.sample(n, seed=seed + 2), y), 4),
            "methods": out}


def plot(results, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, d in results["distance_vs_n"].items():
        ns = [r["N"] for r in d["rows"]]
        ax[0].loglog(ns, [r["distance"] for r in d["rows"]], "o-", label=name)
        ax[0].axhline(d["floor"], ls=":", color=ax[0].lines[-1].get_color())
    ax[0].set(xlabel="particles N per SMC run", ylabel="sliced W1 to exact target", title="DAS: one particle's law")
    ax[0].legend()
    rows = results["blend_bias"]
    for a in sorted({r["alpha"] for r in rows}):
        sub = [r for r in rows if r["alpha"] == a]
        l, = ax[1].plot([r["w"] for r in sub], [r["db_mpa_bias"] for r in sub], "o-", label=f"α={a}")
        ax[1].plot([r["w"] for r in sub], [r["corrected_bias"] for r in sub], "x--", color=l.get_color())
    ax[1].set(xlabel="w (weight of reward x)", ylabel="‖mean − target mean‖", title="DB-MPA (o) vs corrected (x)")
    ax[1].legend(fontsize=7)
    cva = results["cost_vs_accuracy"]
    for name, rows in cva["methods"].items():
        ax[2].loglog([r["nfe"] for r in rows], [r["distance"] for r in rows], "o-", label=name)
    ax[2].axhline(cva["floor"], ls=":", color="k")
    ax[2].set(xlabel="network evaluations per sample", ylabel="sliced W1", title=f"cost vs accuracy ({cva['problem']})")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, "rivals2d.png")
    fig.savefig(path, dpi=80)
    paths.append(path)
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    ap.add_argument("--out", default=HERE, help="folder for the figure")
    ap.add_argument("--json", action="store_true", help="print all results as one JSON object")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sched = default_schedule()
    q = args.quick
    t0 = time.perf_counter()
    res = {"schedule": repr(sched), "steps": 100}
    res["das_toys"] = das_toys(sched, runs=10 if q else 40, seed=args.seed)
    res["distance_vs_n"] = distance_vs_n(sched, 1024 if q else 4096, [1, 4, 16, 64, 256] if q else [1, 2, 4, 8, 16, 32, 64, 128, 256], args.seed)
    res["blend_bias"] = blend_bias(sched, [0.25, 1.0] if q else [0.25, 0.5, 1.0, 2.0], [0.1, 0.3, 0.5, 0.7, 0.9], 1000 if q else 4000, args.seed)
    res["cost_vs_accuracy"] = cost_vs_accuracy(sched, "blend_diamond", 0.25, [0.3, 0.7], 1024 if q else 2048,
                                               [10, 25, 50, 100] if q else [10, 20, 50, 100], args.seed)
    res["tables"] = {
        "blend_diamond": compare(str(data_path("problems", "blend_diamond.json")), alpha=0.25, weights=[0.3, 0.7], seed=args.seed),
        "das_grid": compare(str(data_path("problems", "das_grid.json")), alpha=1.0, seed=args.seed),
        "das_circle": compare(str(data_path("problems", "das_circle.json")), alpha=1.0, seed=args.seed),
    }
    res["figures"] = plot(res, args.out)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(res))
    else:
        for name, d in res["das_toys"].items():
            print(f"{name}: exact target E r = {d['exact_target']} (published {d['published_target']}); DAS N={d['particles']}, "
                  f"mean of {d['runs']} runs = {d['das_mean_reward']} (run sd {d['das_run_sd']}), |error| = {d['das_error']}")
        for name, d in res["distance_vs_n"].items():
            print(f"{name}: distance vs N " + ", ".join(f"{r['N']}:{r['distance']}" for r in d["rows"]) + f" (floor {d['floor']})")
        for r in res["blend_bias"]:
            print(f"diamond α={r['alpha']} w={r['w']}: DB-MPA bias {r['db_mpa_bias']}, corrected {r['corrected_bias']}")
        cva = res["cost_vs_accuracy"]
        for name, rows in cva["methods"].items():
            print(f"cost/accuracy {name}: " + ", ".join(f"nfe {r['nfe']}: {r['distance']}" for r in rows))
        from cda_lite.bench.rivals2d import format as fmt

        for d in res["tables"].values():
            print(fmt(d))
        print("figures:", res["figures"], f"({res['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
