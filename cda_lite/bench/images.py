"""Chapter 9 on 8×8 digits: constrained vs equal-weights alignment, AND composition, DAS / DB-MPA / corrected blend.

Runs :func:`cda_lite.digits.experiments.run_all` and prints :func:`~cda_lite.digits.experiments.summary`:
``constraints`` (name, direction, level in σ units of the pretrained model's rewards),
``achieved_constrained`` / ``achieved_equal_weights`` (normalised reward means of each fine-tuned model on
fresh samples), ``kl_constrained`` / ``kl_equal_weights`` (path-wise KL to the pretrained model, Lemma 1),
``lam`` (final multipliers, σ units), ``compose_kls_constrained`` / ``compose_kls_equal`` (Lemma 2's
point-wise KL of the Algorithm-3 product to each expert at the dual's λ and at equal weights), ``rivals``
(mean rewards and cost in network evaluations of DAS, DB-MPA and the corrected blend), ``targets`` (the
issue's checks) and ``seconds`` (wall time of the whole command).

By default every fine-tune is recomputed (and written to ``$CDA_CACHE/images`` for the chapter);
``--reuse`` reads cached fine-tunes instead (``cached`` then says which were). The pretrained UNet and
the classifier always come from their own caches (trained on first use).
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from cda_lite._cli import count


def add_arguments(p) -> None:
    p.add_argument("--profile", choices=["fast", "full"], default=None, help="effort (default: $CDA_PROFILE or fast)")
    p.add_argument("--reuse", action="store_true", help="reuse cached fine-tunes (default: recompute them)")
    p.add_argument("--threads", type=count, default=1, help="torch threads (default 1)")


def run(args) -> dict:
    if args.profile:
        os.environ["CDA_PROFILE"] = args.profile  # the base model and the classifier follow the profile too
    from cda_lite.digits.experiment_setup import config_for
    from cda_lite.digits.experiments import run_all, summary
    from cda_lite.profile import profile

    if args.threads < 1:
        raise ValueError(f"threads: expected a positive number, got {args.threads}")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    res = run_all(config_for(args.profile), cache=True if args.reuse else "write")
    out = summary(res)
    out["seconds"] = time.perf_counter() - t0
    out["profile"] = profile()
    return out


def format(result: dict) -> str:
    names = [f"{c['name']} {c['direction']} {c['level']:+g}σ" for c in result["constraints"]]
    w = max(len(n) for n in names) + 2
    lines = [f"{'constraint':<{w}} {'constrained':>12} {'equal w.':>10} {'λ':>8}"]
    for n, a, b, lam in zip(names, result["achieved_constrained"], result["achieved_equal_weights"], result["lam"]):
        lines.append(f"{n:<{w}} {a:>12.3f} {b:>10.3f} {lam:>8.3f}")
    lines.append(f"{'KL to pretrained':<{w}} {result['kl_constrained']:>12.3f} {result['kl_equal_weights']:>10.3f}")
    comp = result["composition"]
    lines.append(f"AND of {comp['experts']}: λ = {np.round(comp['lam'], 3).tolist()}; KLs to experts "
                 f"{np.round(result['compose_kls_constrained'], 3).tolist()} (equal weights "
                 f"{np.round(result['compose_kls_equal'], 3).tolist()})")
    for k, r in result["rivals"].items():
        means = ", ".join(f"{n} {v:+.2f}" for n, v in r["mean_rewards"].items())
        lines.append(f"{k:>11}: tilt reward {r['tilt_reward']:+.2f} ({means}); nfe {r['nfe']}, "
                     f"UNet passes/sample {r['unet_forward_per_sample']:.1f}")
    lines.append(f"targets met: {result['targets']['met']} ({result['seconds']:.0f} s, profile {result['profile']})")
    return "\n".join(lines)
