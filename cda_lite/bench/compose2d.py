"""Composition on a 2-D problem file: AND (Algorithms 2 and 3) or OR (the mixture dual), learned against exact.

``--mode and``: λ of Algorithm 2 (annealed Langevin with Σλ_i s_i, a DSM-fitted model, Lemma 2 KLs;
``lam_learned``), of Algorithm 3 (DDPM with ε = Σλ_i ε_i, Lemma 2 KLs; ``lam_dual_only``) and the exact
λ* of ``cda_lite.exact.product_dual`` (``lam_exact``); for single-Gaussian experts also the closed-form
fixed point of Algorithm 3 (``lam_dual_only_fixed_point``). ``kls_*`` are per-expert KLs: ``kls_learned``
Lemma 2's estimates at the last round, ``kls_exact`` the exact KLs at λ*, ``kls_at_lam_learned`` the exact
KLs of q_AND^λ at Algorithm 2's λ. ``mean_*`` are sample means (learned) and the exact product's mean.
``--mode or``: λ of the primal-dual mixture training (``lam_learned``), of the dual with the exact mixture
as primal (``lam_dual_only``) and ``mixture_dual``'s λ* (``lam_exact``), with ``mode_masses`` of the
learned model's samples (nearest component mean of any expert), and those at equal weights.
Experts are DSM-trained networks (``--experts learned``, cached by cda_lite.pretrained) or the exact
ε of each expert (``--experts exact``). Chapters 5 and 6; ``python -m cda_lite.bench.reproduce fig1|fig2``.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from cda_lite import pick
from cda_lite._cli import count, existing_file
from cda_lite.exact.problems import load_problem_file
from cda_lite.compose import (ComposeConfig, and_dual_exact_kls, and_dual_only, and_primal_dual, or_dual_exact, or_primal_dual,
                              product_kls, product_of_experts, run_rounds, surrogate_fixed_point)
from cda_lite.exact import mixture_dual, product_dual
from cda_lite.gmm import GaussianMixture
from cda_lite.metrics import mode_masses
from cda_lite.models import ExactEps
from cda_lite.pretrained import PRETRAIN_AFFINE, PRETRAIN_EMA, PRETRAIN_SIGMA, default_schedule, pretrain_2d
from cda_lite.sampling import sample


LEARNED_T_MIN = {"timestep": 2, "sigma": 0}
"""Algorithm 2's last Langevin level with DSM-trained experts (then DDPM steps to t = 0), by the experts'
noise conditioning. Langevin's stationary law follows the score −ε/σ_t, so an ε error δ becomes δ/σ_t;
the DDPM steps weigh ε by β_t/σ_t instead. Experts with DDPM's timestep embedding learn ε's slope in x
poorly at the smallest σ_t (~0.02 in ε at every t: each timestep learns from its own samples), so
their Langevin stops at t = 2: KL of the MCMC law at λ* to the exact product, median over
``random_composition`` seeds 20–27 (never reported), t_min 1: 0.039, 2: 0.008, 3: 0.008, 4: 0.010,
6: 0.015. Score networks conditioned on σ_t (``PRETRAIN_SIGMA``) run to t = 0: Algorithm 2's
‖λ − λ*‖∞ on seeds 20–25, t_min 0: 0.011 / 0.004 / 0.012 / 0.013 / 0.0004 / 0.004; t_min 2: 0.017 /
0.002 / 0.008 / 0.042 / 0.005 / 0.002. Issue 12, ``benchmarks/README.md``."""


# Algorithm 2's dual steps (ComposeConfig fields), as `bench compose2d --dual` names them
DUALS = {"newton": dict(dual_normalized=True, dual_newton=True),
         "normalised": dict(dual_normalized=True, dual_newton=False),
         "paper": dict(dual_normalized=False, dual_newton=False)}


def add_arguments(p) -> None:
    p.add_argument("problem", type=existing_file, help="composition problem file (JSON with 'experts'; see the book's appendix)")
    p.add_argument("--mode", choices=("and", "or"), default="and", help="product (AND) or mixture (OR)")
    p.add_argument("--experts", choices=("learned", "exact"), default="learned",
                   help="DSM-trained expert networks (cached) or the exact expert ε")
    p.add_argument("--rounds", type=count, default=None, help="dual steps (default: fast 8, full 15)")
    p.add_argument("--pretrain-steps", type=count, default=1500, help="DSM steps of each expert network")
    p.add_argument("--seed", type=int, default=0, help="seed of the algorithms (MCMC, DSM, sampling)")
    p.add_argument("--expert-seed", type=int, default=0, help="training seed of the expert networks")
    p.add_argument("--no-dual-only", action="store_true", help="skip Algorithm 3 (AND) / the exact-primal dual (OR)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar on stderr")
    p.add_argument("--no-ema", action="store_true",
                   help="experts from the last DSM iterate (default: the EMA of their weights, as align2d's base)")
    p.add_argument("--no-affine", action="store_true",
                   help="experts without the affine skip (default: MLPEps(affine=True), as align2d's base)")
    p.add_argument("--timestep-embedding", action="store_true",
                   help="experts conditioned on t by DDPM's embedding, predicting ε (default: on σ_t, ε = σ_t·F)")
    p.add_argument("--dual", choices=tuple(DUALS), default="newton",
                   help="Algorithm 2's dual step: capped Newton steps (default), normalised gradient steps of "
                        "the same lengths, or the paper's λ + η_k·KL")


def run(args) -> dict:
    torch.set_num_threads(1)  # tiny networks: fastest single-threaded on shared CPUs
    problem = load_problem_file(args.problem, "compose", "compose2d")
    cfg = default_config(rounds=args.rounds, seed=args.seed, **DUALS[args.dual])
    fn = and_experiment if args.mode == "and" else or_experiment
    out = fn(problem.experts, experts=args.experts, config=cfg, pretrain_steps=args.pretrain_steps,
             dual_only=not args.no_dual_only, expert_seed=args.expert_seed, progress=not args.no_progress,
             expert_ema=None if args.no_ema else PRETRAIN_EMA, expert_affine=PRETRAIN_AFFINE and not args.no_affine,
             expert_sigma=PRETRAIN_SIGMA and not args.timestep_embedding)
    out["problem"] = problem.name
    out["dual"] = args.dual
    return strip_samples(out)


def default_config(rounds=None, seed: int = 0, **kw) -> ComposeConfig:
    """The profile's settings: fast (CI, chapters) or full (better converged). Algorithm 2's dual takes
    Newton steps capped at a radius (first 0.4, decay 0.7; Algorithm 3 and OR keep the paper's step):
    fed exact KLs and curvature on 200 problems never reported (``random_composition`` seeds 100–299)
    it ends within 2e-7 of λ* on all 200 after 8 rounds; normalised gradient steps of the same
    lengths left 9 more than 0.02 away, the paper's step (η_0 = 0.2 / mean KL, decay 0.9) 51. The rounds
    whose λ is not averaged use a quarter of the particles. Langevin is preconditioned by the particles'
    covariance at each level and the dual's losses use four snapshots of each chain's last level: with
    exact experts on held-out seeds 20–27 the worst ‖λ − λ*‖∞ went 0.047 → 0.008 (median 0.0038 → 0.0030)
    (``benchmarks/README.md``)."""
    base = dict(rounds=rounds or pick(8, 15), seed=seed, n_samples=pick(2000, 4000), n_samples_early=pick(500, 1000),
                langevin_steps=pick(10, 20), dsm_steps=pick(100, 200), dsm_steps_first=pick(300, 1000),
                kl_samples=pick(1000, 3000), average_last=pick(3, 5), dual_normalized=True, dual_newton=True,
                langevin_precondition=True, langevin_snapshots=4)
    base.update(kw)
    return ComposeConfig(**base)


def expert_models(experts, schedule, kind: str = "learned", pretrain_steps: int = 1500, seed: int = 0,
                  ema: float | None = None, affine: bool = False, sigma_conditioned: bool = False):
    """ε-models of the experts: DSM-trained MLPs (``pretrain_2d``, cached; ``ema``: EMA decay of their
    weights, None the last iterate; ``affine``: with the affine skip; ``sigma_conditioned``: score networks
    conditioned on σ_t, :class:`~cda_lite.models.MLPEps`) or their exact ε."""
    if kind == "exact":
        return [ExactEps(e, schedule) for e in experts]
    if kind != "learned":
        raise ValueError(f"experts: expected 'learned' or 'exact', got {kind!r}")
    nets = [pretrain_2d(e, schedule, steps=pretrain_steps, seed=seed, ema=ema, affine=affine,
                        sigma_conditioned=sigma_conditioned) for e in experts]
    return [n.requires_grad_(False) for n in nets]  # fixed experts: their time embeddings are cached per t


def _mean(x):
    return np.asarray(x, float).mean(0).tolist()


def and_experiment(gms, experts: str = "learned", config: ComposeConfig | None = None, pretrain_steps: int = 1500,
                   dual_only: bool = True, schedule=None, dual_only_schedule=None, expert_seed: int = 0,
                   progress: bool = False, decompose: bool = False, expert_ema: float | None = None,
                   expert_affine: bool = False, expert_sigma: bool = False) -> dict:
    """Algorithm 2, Algorithm 3 and the exact answer on experts ``gms`` (GaussianMixtures).

    ``schedule`` (default: the 2-D chapters' linear β 1e-4 → 0.1, T = 100) is the experts' schedule;
    ``dual_only_schedule`` may give Algorithm 3 its own (exact experts only, e.g. the paper's T = 1000).
    Returns a JSON-able dict; the rounds' samples and λ histories are included for plotting.
    The error of Algorithm 2 is reported against the exact answer: ``lam_error_inf`` = ‖λ − λ*‖∞,
    ``max_kl_at_lam_learned`` (exact max-KL of q_AND^λ at the learned λ) against ``max_kl_exact``
    (``max_kl_excess`` = their ratio − 1) and ``kls_at_lam_learned`` (exact KL to each expert).

    With ``decompose`` the error is split along the chain λ* → ``lam_exact_kls`` (the same dual fed
    exact KLs: the dual schedule's part) → ``lam_exact_experts`` (Algorithm 2 with the experts' exact ε:
    the part of its own estimates — MCMC, DSM refit, Lemma 2) → ``lam_learned`` (the rest: the
    experts' pretraining), each step as ‖Δλ‖∞ in ``error_parts``.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    config = config or default_config()
    schedule = schedule or default_schedule()
    star = product_dual(gms)
    equal = np.full(len(gms), 1.0 / len(gms))
    timing = {}
    def experts_on(sched):  # the experts under a schedule, by this run's recipe
        return expert_models(gms, sched, experts, pretrain_steps, expert_seed, ema=expert_ema, affine=expert_affine,
                             sigma_conditioned=expert_sigma)

    models = experts_on(schedule)
    timing["experts"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    if experts == "learned":  # Langevin follows −ε/σ_t: stop where a network's ε error, amplified by 1/σ_t, is small
        t_min = LEARNED_T_MIN["sigma" if expert_sigma else "timestep"]
        config = dataclasses.replace(config, langevin_t_min=max(config.langevin_t_min, t_min))
    rounds = list(tqdm(and_primal_dual(models, schedule, config), total=config.rounds, desc="Algorithm 2",
                       disable=not progress, leave=False))
    alg2 = run_rounds(iter(rounds), config.average_last)
    x_learned = sample(alg2.model, schedule, (config.kl_samples, gms[0].dim), seed=config.seed + 99).double().numpy()
    timing["algorithm2"] = time.perf_counter() - t1
    target = product_of_experts(gms, star.lam)
    single = all(e.n_components == 1 for e in gms)
    out = {
        "mode": "and", "experts": experts, "T": schedule.T,
        "lam_exact": star.lam, "kls_exact": star.kls, "max_kl_exact": star.max_kl,
        "lam_learned": alg2.lam, "kls_learned": alg2.values, "kls_at_lam_learned": product_kls(gms, alg2.lam),
        "max_kl_at_lam_learned": float(product_kls(gms, alg2.lam).max()),
        "max_kl_excess": float(product_kls(gms, alg2.lam).max() / star.max_kl - 1.0),
        "lam_error_inf": float(np.abs(np.asarray(alg2.lam) - star.lam).max()),
        "lam_history_learned": alg2.lam_history, "kls_history_learned": alg2.values_history,
        "mean_learned": _mean(x_learned), "mean_mcmc_learned": _mean(alg2.samples),
        "mean_exact": target.mean().tolist(),
        "mean_equal_learned": _mean(rounds[0].samples),
        "mean_equal_exact": product_of_experts(gms, equal).mean().tolist(),
        "kls_equal_exact": product_kls(gms, equal),
        "samples_learned": x_learned, "samples_equal_learned": rounds[0].samples,
    }
    if decompose:
        lam_kls = run_rounds(and_dual_exact_kls(gms, config), config.average_last).lam
        lam_ex = alg2.lam
        if experts != "exact":
            t1 = time.perf_counter()
            cfg_ex = dataclasses.replace(config, langevin_t_min=0)
            lam_ex = run_rounds(and_primal_dual(expert_models(gms, schedule, "exact"), schedule, cfg_ex),
                                config.average_last).lam
            timing["algorithm2_exact_experts"] = time.perf_counter() - t1
        dist = lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max())  # noqa: E731
        out.update({"lam_exact_kls": lam_kls, "lam_exact_experts": lam_ex,
                    "error_parts": {"dual_schedule": dist(lam_kls, star.lam), "estimates": dist(lam_ex, lam_kls),
                                    "experts": dist(alg2.lam, lam_ex)}})
    if dual_only:
        t1 = time.perf_counter()
        sched3 = dual_only_schedule or schedule
        models3 = models if sched3 is schedule else experts_on(sched3)
        alg3 = run_rounds(and_dual_only(models3, sched3, config), config.average_last)
        timing["algorithm3"] = time.perf_counter() - t1
        out.update({"lam_dual_only": alg3.lam, "kls_dual_only": alg3.values, "lam_history_dual_only": alg3.lam_history,
                    "mean_dual_only": _mean(alg3.samples), "samples_dual_only": alg3.samples, "T_dual_only": sched3.T})
        if single:
            lam_fp, kls_fp = surrogate_fixed_point(gms, sched3)
            out.update({"lam_dual_only_fixed_point": lam_fp, "max_kl_dual_only_fixed_point": float(kls_fp.max()),
                        "kls_dual_only_fixed_point": kls_fp})
    timing["total"] = time.perf_counter() - t0
    out["seconds"] = timing["total"]
    out["seconds_by_part"] = timing
    return out


def or_experiment(gms, experts: str = "learned", config: ComposeConfig | None = None, pretrain_steps: int = 1500,
                  dual_only: bool = True, schedule=None, n_data: int | None = None, expert_seed: int = 0,
                  progress: bool = False, expert_ema: float | None = None, expert_affine: bool = False,
                  expert_sigma: bool = False) -> dict:
    """The OR dual, learned (a mixture network trained by DSM on expert data, λ by dual ascent on the
    per-expert ELBO losses) and with the exact mixture as primal, against ``mixture_dual``'s λ*."""
    t0 = time.perf_counter()
    config = config or default_config()
    schedule = schedule or default_schedule()
    n_data = n_data or pick(10_000, 30_000)
    # a larger loss-evaluation set, and a longer first fit (its samples give the equal-weights mode masses)
    config = dataclasses.replace(config, n_samples=max(config.n_samples, pick(1000, 3000)),
                                 dsm_steps_first=max(config.dsm_steps_first, pick(500, 1000)))
    star = mixture_dual(gms)
    timing = {}
    if experts == "exact":
        data = [e.sample(n_data, seed=config.seed + i) for i, e in enumerate(gms)]
    else:
        models = expert_models(gms, schedule, experts, pretrain_steps, expert_seed, ema=expert_ema,
                                        affine=expert_affine, sigma_conditioned=expert_sigma)
        data = [sample(m, schedule, (n_data, gms[0].dim), seed=config.seed + 50 + i).double().numpy()
                for i, m in enumerate(models)]
    timing["experts"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    rounds = list(or_primal_dual(data, schedule, config))
    res = run_rounds(iter(rounds), config.average_last)
    x = sample(res.model, schedule, (pick(4000, 10000), gms[0].dim), seed=config.seed + 99).double().numpy()
    timing["primal_dual"] = time.perf_counter() - t1
    centers = np.concatenate([e.means for e in gms])
    comp_lam = lambda lam: np.concatenate([l * e.weights for l, e in zip(lam, gms)])  # noqa: E731
    out = {
        "mode": "or", "experts": experts, "T": schedule.T,
        "lam_exact": star.lam, "entropy_exact": star.entropy,
        "lam_learned": res.lam, "losses_learned": res.values, "lam_history_learned": res.lam_history,
        "centers": centers, "mode_masses": mode_masses(x, centers),
        "mode_masses_equal": mode_masses(rounds[0].samples, centers),
        "mode_masses_exact": comp_lam(star.lam), "mode_masses_equal_exact": comp_lam(np.full(len(gms), 1 / len(gms))),
        "mean_learned": _mean(x), "mean_exact": GaussianMixture.mixture_of(gms, star.lam).mean().tolist(),
        "samples_learned": x, "samples_equal_learned": rounds[0].samples,
        "expert_data_mode_masses": [mode_masses(d, centers) for d in data],
    }
    if dual_only:
        t1 = time.perf_counter()
        ex = run_rounds(or_dual_exact(gms, schedule, config), config.average_last)
        timing["dual_exact_primal"] = time.perf_counter() - t1
        out.update({"lam_dual_only": ex.lam, "losses_dual_only": ex.values, "lam_history_dual_only": ex.lam_history})
    timing["total"] = time.perf_counter() - t0
    out["seconds"] = timing["total"]
    out["seconds_by_part"] = timing
    return out


_ARRAYS = ("samples_learned", "samples_equal_learned", "samples_dual_only")


def format(result: dict) -> str:
    r3 = lambda v: np.round(np.asarray(v, float), 3).tolist()  # noqa: E731
    lines = [f"{result.get('problem', '')}: {result['mode'].upper()} composition, {result['experts']} experts, "
             f"{result['seconds']:.1f} s"]
    for key in ("lam_exact", "lam_learned", "lam_dual_only", "lam_dual_only_fixed_point", "kls_exact", "kls_learned",
                "kls_at_lam_learned", "max_kl_exact", "max_kl_at_lam_learned", "max_kl_excess", "lam_error_inf", "mean_exact", "mean_learned", "mean_equal_exact", "mean_equal_learned",
                "mode_masses", "mode_masses_equal", "mode_masses_exact"):
        if key in result:
            lines.append(f"  {key:28s} {r3(result[key])}")
    return "\n".join(lines)


def strip_samples(result: dict) -> dict:
    """The result without the sample arrays (for JSON output)."""
    return {k: v for k, v in result.items() if k not in _ARRAYS}
