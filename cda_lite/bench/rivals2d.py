"""Inference-time rivals on a 2-D problem file: DAS, Diffusion Blend (DB-MPA, corrected, DB-KLA, DB-MPA-LS), MSDDA and guidance against the exact tilt.

Every method aims at q·exp(Σ_i w_i r_i/α) with q the problem's base mixture and r_i its rewards
(thresholds are ignored); the exact target is the closed-form tilt. Single-reward models are the
exact ε of q·e^{r_i/α} (default), or networks: ``--learned`` (= ``finetune``) fine-tunes a DSM-trained
pretrained network on each reward with the Algorithm-1 trainer at fixed weight 1/α (cda_lite.align);
``--learned dsm`` trains each one by DSM on exact samples of its tilt. DB-KLA blends the pretrained
model with one fine-tuned on Σ w_i r_i at α·λ_KLA, so that λ_KLA aims it at α. Distances are sliced
Wasserstein-1 (256 projections) between each method's N samples and N exact-target samples; ``nfe``
counts ε-network forward and backward passes per sample. Chapter 7.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from cda_lite import schedules as _schedules
from cda_lite._cli import count, existing_file, finite_float, positive_float
from cda_lite.exact.problems import load_problem_file
from cda_lite.exact import tilt
from cda_lite.inference import (
    WeightedReward, das, guided_nfe, sample_blend_corrected, sample_db_kla, sample_db_mpa,
    sample_db_mpa_ls, sample_guided, sample_msdda,
)
from cda_lite.metrics import sliced_wasserstein
from cda_lite.models import ExactEps, MLPEps
from cda_lite.pretrained import default_schedule, pretrain_2d
from cda_lite.exact.problems import AlignmentProblem, load_problem

METHODS = ("das", "db_mpa", "db_mpa_corrected", "db_kla", "db_mpa_ls", "msdda", "guidance", "guidance_unscaled")
DISTANCE = "sliced Wasserstein-1 (256 random directions) between N method samples and N exact-target samples"


def add_arguments(p) -> None:
    p.add_argument("problem", type=existing_file, help="alignment problem file (JSON; see the book's appendix 'Problem files')")
    p.add_argument("--alpha", type=positive_float, default=1.0, help="KL weight α of the target q·exp(Σ w_i r_i/α)")
    p.add_argument("--weights", type=finite_float, nargs="+", help="reward weights w (sum to 1; default uniform)")
    p.add_argument("--particles", type=count, default=1000, help="samples per method (DAS: particles of one SMC run)")
    p.add_argument("--steps", type=count, default=100, help="sampler steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--learned", nargs="?", const="finetune", choices=("finetune", "dsm"), default=None,
                   help="use networks instead of exact ε-models: 'finetune' (default) fine-tunes a pretrained MLP per "
                        "reward with the Algorithm-1 trainer (cda_lite.align; about a minute per model at --steps 20); "
                        "'dsm' trains each model by DSM on exact samples of its tilt (cached)")
    p.add_argument("--schedule", default="default", choices=("default", "cosine", "linear", "scaled_linear"),
                   help="noise schedule: 'default' is the 2-D chapters' linear β 1e-4 → 0.1 (T = 100); others use --T")
    p.add_argument("--T", type=count, default=100, help="diffusion timesteps of a named schedule")
    p.add_argument("--eta", type=positive_float, default=1.0, help="DDIM η of every sampler (> 0)")
    p.add_argument("--kla-lambda", type=positive_float, default=0.5, help="DB-KLA's λ in (0, 2]")
    p.add_argument("--msdda-etas", type=positive_float, nargs="+", help="per-model η for MSDDA (default: --eta for all)")
    p.add_argument("--train-steps", type=count, default=None,
                   help="optimiser steps per network with --learned (finetune: 300, dsm: 1500)")
    p.add_argument("--das-runs", type=count, default=1,
                   help="split DAS's particles into this many independent SMC runs (same cost; less variance in mode masses)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))


def run(args) -> dict:
    problem = load_problem_file(args.problem, "align", "rivals2d")  # before any work
    return compare(problem, alpha=args.alpha, weights=args.weights, particles=args.particles, steps=args.steps,
                   seed=args.seed, learned=args.learned, schedule=args.schedule, T=args.T, eta=args.eta,
                   kla_lambda=args.kla_lambda, msdda_etas=args.msdda_etas, train_steps=args.train_steps,
                   methods=args.methods, das_runs=args.das_runs)


# --------------------------------------------------------------------------- models
def _finetune(pre, rewards, lams, sched, chain_steps, eta, steps, seed):
    """Algorithm 1's trainer at fixed multipliers λ = ``lams`` (the weighted objective
    KL_path − Σ λ_i E r_i, whose optimum is the tilt q·e^{Σ λ_i r_i}), through the sampler's own chain,
    training a zero-initialised residual network on top of the frozen pretrained one."""
    from cda_lite.align import AlignConfig, finetune
    from cda_lite.constraints import Constraint

    cons = [Constraint(f"r{i}", r, 0.0) for i, r in enumerate(rewards)]
    cfg = AlignConfig(steps=steps, batch_size=256, lr=1e-3, fixed_weights=[float(l) for l in lams],
                      sample_steps=chain_steps, eta=eta, seed=seed)
    torch.manual_seed(seed)
    out = finetune(pre, cons, sched, cfg, noise_shape=(2,), correction=MLPEps(sched.T, 2, 64, 2))
    trainer, model = out
    trainer.train()
    return model.eval()


def build_models(problem: AlignmentProblem, alpha, w, sched, kla_lambda, learned=None, chain_steps=100,
                 eta=1.0, train_steps=None, seed=0):
    """(pretrained, [single-reward models], KLA fine-tuned model) — exact ε-models or networks.

    ``learned="dsm"``: every model is an MLP trained by DSM on exact samples of its own target
    (:func:`cda_lite.pretrained.pretrain_2d`, cached), which isolates the network error from the
    fine-tuning error. ``learned="finetune"``: a DSM-pretrained MLP, fine-tuned per reward (and for
    DB-KLA on Σ w_i r_i) by the Algorithm-1 trainer at fixed weights.
    """
    base, rewards = problem.base, problem.rewards
    singles_t = [tilt(base, [r], [1.0 / alpha]) for r in rewards]
    kla_t = tilt(base, rewards, np.asarray(w) / (alpha * kla_lambda))
    if learned is None:
        return ExactEps(base, sched), [ExactEps(g, sched) for g in singles_t], ExactEps(kla_t, sched)
    if learned == "dsm":
        steps = train_steps or 1500
        return tuple([pretrain_2d(base, sched, steps=steps, seed=seed),
                      [pretrain_2d(g, sched, steps=steps, seed=seed) for g in singles_t],
                      pretrain_2d(kla_t, sched, steps=steps, seed=seed)])
    if learned != "finetune":
        raise ValueError(f"learned: expected None, 'finetune' or 'dsm', got {learned!r}")
    pre = pretrain_2d(base, sched, seed=seed)
    steps = train_steps or 300
    singles = [_finetune(pre, [r], [1.0 / alpha], sched, chain_steps, eta, steps, seed + i + 1)
               for i, r in enumerate(rewards)]
    kla = _finetune(pre, rewards, np.asarray(w) / (alpha * kla_lambda), sched, chain_steps, eta, steps, seed + 99)
    return pre, singles, kla


# --------------------------------------------------------------------------- comparison
def _summary(x, rewards, w, y, seconds, nfe, seed):
    x = np.asarray(x.detach().double().numpy() if isinstance(x, torch.Tensor) else x, dtype=float)
    if not np.all(np.isfinite(x)):
        return {"mean": None, "mean_reward": None, "distance": None, "nfe": nfe, "seconds": round(seconds, 3),
                "note": "non-finite samples"}
    per = [float(np.mean(r(x))) for r in rewards]
    return {"mean": x.mean(0).round(4).tolist(), "mean_reward": round(float(np.dot(w, per)), 4),
            "rewards": [round(v, 4) for v in per], "distance": round(sliced_wasserstein(x, y, seed=seed), 4),
            "nfe": int(nfe), "seconds": round(seconds, 3)}


def compare(problem, alpha: float = 1.0, weights=None, particles: int = 1000, steps: int = 100, seed: int = 0,
            learned: str | None = None, schedule: str = "default", T: int = 100, eta: float = 1.0,
            kla_lambda: float = 0.5, msdda_etas=None, train_steps=None, methods=METHODS,
            das_runs: int = 1) -> dict:
    """Run every method on ``problem`` and compare with the exact tilt (the ``rivals2d`` result)."""
    t_start = time.perf_counter()
    problem = load_problem(problem) if not isinstance(problem, AlignmentProblem) else problem
    if not isinstance(problem, AlignmentProblem):
        raise ValueError("problem: rivals2d needs an alignment problem (base + rewards), not a composition problem")
    m = len(problem.rewards)
    w = np.full(m, 1.0 / m) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (m,):
        raise ValueError(f"weights: expected {m} weights (one per reward), got {w.size}")
    if np.any(w < 0) or abs(w.sum() - 1) > 1e-8:
        raise ValueError(f"weights: must be non-negative and sum to 1, got {w.tolist()}")
    if not alpha > 0:
        raise ValueError(f"alpha: must be > 0, got {alpha}")
    if not 0 < kla_lambda <= 2:
        raise ValueError(f"kla_lambda: must lie in (0, 2], got {kla_lambda}")
    if particles < 2:
        raise ValueError(f"particles: need at least 2, got {particles}")
    if das_runs < 1 or particles % das_runs:
        raise ValueError(f"das_runs: must be >= 1 and divide particles ({particles}), got {das_runs}")
    if not eta > 0:
        raise ValueError(f"eta: must be > 0 (the SMC weights need stochastic steps), got {eta}")
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"methods: unknown {sorted(unknown)}; choose from {METHODS}")
    torch.set_num_threads(1)
    sched = default_schedule() if schedule == "default" else _schedules.by_name(schedule, T)
    reward = WeightedReward(problem.rewards, w)
    target = tilt(problem.base, problem.rewards, w / alpha)
    y = target.sample(particles, seed=seed + 12345)
    y2 = target.sample(particles, seed=seed + 54321)
    t0 = time.perf_counter()
    pre, singles, kla = build_models(problem, alpha, w, sched, kla_lambda, learned, steps, eta, train_steps, seed)
    train_seconds = time.perf_counter() - t0
    K = len(_schedules.timesteps(sched, steps))
    n = particles
    etas = eta if msdda_etas is None else msdda_etas
    runs = {
        "das": lambda: das(pre, reward, sched, n // das_runs, alpha, steps, eta, groups=das_runs, seed=seed),
        "db_mpa": lambda: (sample_db_mpa(singles, w, sched, n, steps, eta, seed), m * K),
        "db_mpa_corrected": lambda: (sample_blend_corrected(singles, w, sched, n, steps, eta, seed=seed).x, m * K),
        "db_kla": lambda: (sample_db_kla(pre, kla, kla_lambda, sched, n, steps, eta, seed), 2 * K),
        "db_mpa_ls": lambda: (sample_db_mpa_ls(singles, w, sched, n, steps, eta, seed), K),
        "msdda": lambda: (sample_msdda(singles, w, sched, n, steps, etas, seed), m * K),
        "guidance": lambda: (sample_guided(pre, reward, sched, n, alpha, steps, eta, seed=seed), guided_nfe(sched, steps, eta)),
        "guidance_unscaled": lambda: (sample_guided(pre, reward, sched, n, alpha, steps, eta, scaling="none", seed=seed),
                                      guided_nfe(sched, steps, eta)),
    }
    out = {
        "problem": problem.name, "alpha": alpha, "weights": w.tolist(), "particles": n, "steps": K,
        "schedule": repr(sched), "eta": eta, "seed": seed,
        "models": "exact" if learned is None else (
            "networks: DSM pretrained + Algorithm-1 fine-tunes (cda_lite.align)" if learned == "finetune"
            else "networks trained by DSM on exact samples of each tilt"),
        "distance_metric": DISTANCE,
        "target": {"mean": target.mean().round(4).tolist(),
                   "mean_reward": round(float(np.dot(w, [r.expectation(target) for r in problem.rewards])), 4),
                   "rewards": [round(r.expectation(target), 4) for r in problem.rewards],
                   "distance_floor": round(sliced_wasserstein(y2, y, seed=seed), 4)},
        "train_seconds": round(train_seconds, 2),
    }
    for name in methods:
        t = time.perf_counter()
        got = runs[name]()
        if name == "das":
            out[name] = _summary(got.x, problem.rewards, w, y, time.perf_counter() - t, got.nfe, seed)
            out[name].update(runs=das_runs, min_ess=round(float(got.ess.min()), 1),
                             resamples=round(float(got.n_resamples.mean()), 2))
        else:
            out[name] = _summary(got[0], problem.rewards, w, y, time.perf_counter() - t, got[1], seed)
    out["seconds"] = round(time.perf_counter() - t_start, 2)
    return out


def format(result: dict) -> str:
    """A table for people (``--json`` prints the raw object)."""
    tgt = result["target"]
    lines = [f"{result['problem']}: α = {result['alpha']}, w = {result['weights']}, N = {result['particles']}, "
             f"{result['steps']} steps, models: {result['models']}",
             f"distance: {result['distance_metric']}",
             f"{'method':<20}{'mean':>22}{'E r_w':>10}{'distance':>10}{'nfe':>6}{'s':>8}",
             f"{'exact target':<20}{str(tgt['mean']):>22}{tgt['mean_reward']:>10.4f}{tgt['distance_floor']:>10.4f}"
             f"{'':>6}{'':>8}   (distance: exact vs exact)"]
    for name in METHODS:
        if name in result:
            r = result[name]
            if r["mean"] is None:
                lines.append(f"{name:<20}{'non-finite samples':>22}")
                continue
            lines.append(f"{name:<20}{str(r['mean']):>22}{r['mean_reward']:>10.4f}{r['distance']:>10.4f}"
                         f"{r['nfe']:>6}{r['seconds']:>8.2f}")
    lines.append(f"total {result['seconds']} s")
    return "\n".join(lines)
