"""Learned constrained alignment on a 2-D problem file (Algorithm 1) against the exact λ* (Chapter 4).

Pretrains (or loads from the cache) an ε-network of the base mixture, normalises each reward by the
pretrained model's samples (levels in σ units, as in the paper), fine-tunes a zero-initialised
correction network by primal-dual training, and compares with ``cda_lite.exact.align_dual``.
λ is reported in the rewards' own units, comparable with ``python -m cda_lite.exact``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from cda_lite import pick
from cda_lite._cli import count, existing_file
from cda_lite.exact.problems import load_problem_file
from cda_lite.align import AlignConfig, finetune
from cda_lite.constraints import Constraint, RewardNormalizer
from cda_lite.exact import align_dual, expected_rewards
from cda_lite.kl import pathwise_kl
from cda_lite.metrics import sliced_wasserstein
from cda_lite.models import MLPEps
from cda_lite.pretrained import default_schedule, pretrain_2d
from cda_lite.exact.problems import AlignmentProblem, load_problem
from cda_lite.sampling import LARGE, sample


def default_config(profile: str | None = None, **overrides) -> AlignConfig:
    """The 2-D preset: the full 100-step ancestral chain with DDPM's σ_t² = β_t (``eta=LARGE``) and
    backprop through every step, 128 samples per primal step, Adam 3e-3 on the correction network, a
    dual step every 5 primal steps with η_d = 0.5 (σ units) on the window's mean slack, λ averaged over
    the last 30 % of dual steps, and the last 25 % of primal steps run at that averaged λ (polish), so
    the model returned answers the λ reported.

    Why this chain: the learned λ is the optimum for the *sampler's* law q̂, and the multiplier that
    reaches a level scales like 1/variance. A 20-step η = 1 chain narrows every mode by ~20 % (λ comes
    out ~25 % high), 100 steps with η = 1 (σ² = β̃_t) still by 5–10 %; σ² = β_t keeps the variance
    within ~1 % on these problems (``tests/test_sampling.py``), so λ*(q̂) ≈ λ*(q).

    Why 128 samples: on ``mixture_two_rewards`` the dual is ill-conditioned (the normalised reward
    covariance has eigenvalues 0.2 and 0.9), so a small primal error moves λ of the quadratic
    constraint a lot: at 64 samples it came out 14–16 % high after 400 steps, at 128 samples 8 %.
    """
    steps = {"fast": 400, "full": 1200}[profile] if profile else pick(400, 1200)
    cfg = AlignConfig(steps=steps, batch_size=128, lr=3e-3, dual_lr=0.5, dual_every=5, sample_steps=100,
                      eta=LARGE, lam_average=0.3, polish=0.25, lr_cosine=True)
    return replace(cfg, **overrides)


@dataclass
class LearnedAlignment:
    """Everything a chapter needs from one learned run."""

    problem: AlignmentProblem
    trainer: object
    model: torch.nn.Module  # the aligned ε-model (AlignedEps)
    pretrained: torch.nn.Module
    constraints: list
    normalizers: list
    samples: np.ndarray  # samples of the aligned model
    pretrained_samples: np.ndarray
    exact: object  # AlignResult of the base mixture
    result: dict


def learned_alignment(problem, config: AlignConfig | None = None, pretrain_steps: int | None = None,
                      n_eval: int = 4096, fixed_weights_raw=None, equal_weights: float | None = None,
                      correction_size: tuple[int, int] = (64, 2), progress: bool = False) -> LearnedAlignment:
    """Run Algorithm 1 on ``problem`` (a path, dict or AlignmentProblem). With ``fixed_weights_raw``
    (multipliers in the rewards' units) or ``equal_weights`` (one multiplier for every σ-normalised
    reward, the paper's baseline) λ is frozen: the weighted-objective baseline. ``correction_size`` =
    (hidden width, layers) of the zero-initialised correction MLP."""
    t0 = time.time()
    problem = problem if isinstance(problem, AlignmentProblem) else load_problem(problem)
    config = config or default_config()
    torch.manual_seed(problem.seed)
    schedule = default_schedule()
    pretrained = pretrain_2d(problem.base, schedule, steps=pretrain_steps or pick(1500, 3000), seed=problem.seed)
    gen_seed = problem.seed + 1
    x_pre = sample(pretrained, schedule, (n_eval, problem.base.dim), steps=config.sample_steps, eta=config.eta,
                   seed=gen_seed)
    normalizers = [RewardNormalizer.fit(r(x_pre.double())) for r in problem.rewards]
    constraints = [Constraint(getattr(r, "name", f"r{i}"), r, (b - n.mean) / n.std, ">=", n)
                   for i, (r, b, n) in enumerate(zip(problem.rewards, problem.thresholds, normalizers))]
    if fixed_weights_raw is not None:
        if len(fixed_weights_raw) != len(constraints):
            raise ValueError(f"fixed_weights_raw: {len(fixed_weights_raw)} weights for {len(constraints)} rewards")
        config = replace(config, fixed_weights=[w * n.std for w, n in zip(fixed_weights_raw, normalizers)])
    elif equal_weights is not None:
        config = replace(config, fixed_weights=[float(equal_weights)] * len(constraints))
    hidden, layers = correction_size
    correction = MLPEps(schedule.T, dim=problem.base.dim, hidden=hidden, layers=layers)
    trainer, model = finetune(pretrained, constraints, schedule, replace(config, seed=problem.seed), (problem.base.dim,),
                              correction=correction)
    trainer.train(progress=progress)
    model.eval()
    with torch.no_grad():
        x = sample(model, schedule, (n_eval, problem.base.dim), steps=config.sample_steps, eta=config.eta,
                   seed=gen_seed + 1).double()
        kl_mean, kl_se = pathwise_kl(model, pretrained, trainer.chain, (n_eval, problem.base.dim), seed=gen_seed + 2,
                                     dtype=torch.float32)
    exact = align_dual(problem.base, problem.rewards, problem.thresholds)
    target_samples = exact.target.sample(n_eval, seed=gen_seed + 3)
    expected = np.array([float(r(x).mean()) for r in problem.rewards])
    sd = np.array([n.std for n in normalizers])
    result = {
        "lam_learned": trainer.lam_raw().tolist(),
        "lam_exact": exact.lam.tolist(),
        "expected_learned": expected.tolist(),
        "expected_exact": exact.expected.tolist(),
        "thresholds": np.asarray(problem.thresholds).tolist(),
        "slack_sigma": ((expected - problem.thresholds) / sd).tolist(),
        "kl_path": kl_mean,
        "kl_path_se": kl_se,
        "kl_exact": exact.kl,
        "distance_to_target": sliced_wasserstein(x.numpy(), target_samples),
        "distance_pretrained_to_base": sliced_wasserstein(x_pre.double().numpy(), problem.base.sample(n_eval, seed=gen_seed + 4)),
        "fixed_weights": config.fixed_weights is not None,
        "steps": config.steps,
        "seconds": time.time() - t0,
    }
    return LearnedAlignment(problem, trainer, model, pretrained, constraints, normalizers, x.numpy(),
                            x_pre.double().numpy(), exact, result)


def add_arguments(p) -> None:
    p.add_argument("problem", type=existing_file, help="2-D alignment problem file (JSON)")
    p.add_argument("--profile", choices=["fast", "full"], default=None, help="effort (default: $CDA_PROFILE or fast)")
    p.add_argument("--steps", type=count, default=None, help="primal steps (overrides the profile)")
    p.add_argument("--fixed-weights", type=float, nargs="+", default=None,
                   help="freeze λ at these weights (rewards' units): the weighted baseline")
    p.add_argument("--equal-weights", type=float, nargs="?", const=1.0, default=None, metavar="W",
                   help="freeze every λ at W (default 1) on the σ-normalised rewards: the paper's baseline")


def run(args) -> dict:
    torch.set_num_threads(1)  # 2-D networks are tiny: one thread is fastest and leaves a core free
    cfg = default_config(args.profile)
    if args.steps:
        cfg = replace(cfg, steps=args.steps)
    if args.fixed_weights is not None and args.equal_weights is not None:
        raise ValueError("give --fixed-weights or --equal-weights, not both")
    problem = load_problem_file(args.problem, "align", "align2d")  # before any training
    return learned_alignment(problem, cfg, fixed_weights_raw=args.fixed_weights,
                             equal_weights=args.equal_weights).result


def format(result: dict) -> str:
    lines = [f"{'':>10} {'learned':>22} {'exact':>22}",
             f"{'λ':>10} {str(np.round(result['lam_learned'], 3)):>22} {str(np.round(result['lam_exact'], 3)):>22}",
             f"{'E r':>10} {str(np.round(result['expected_learned'], 3)):>22} {str(np.round(result['expected_exact'], 3)):>22}",
             f"{'KL':>10} {result['kl_path']:>22.3f} {result['kl_exact']:>22.3f}",
             f"distance to the exact target {result['distance_to_target']:.3f}; {result['seconds']:.0f} s"]
    return "\n".join(lines)
