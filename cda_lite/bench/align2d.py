"""Learned constrained alignment on a 2-D problem file (Algorithm 1) against the exact λ* (Chapter 4).

Pretrains (or loads from the cache) an ε-network of the base mixture, normalises each reward by the
pretrained model's samples (levels in σ units, as in the paper), fine-tunes a zero-initialised
correction network by primal-dual training, and compares with ``cda_lite.exact.align_dual``.
λ is reported in the rewards' own units, comparable with ``python -m cda_lite.exact``.

The error is decomposed in every run: ``lam_exact`` λ*(q) of the base mixture, ``lam_sampler``
λ*(q̂) of the pretrained sampler's own law (the dual of Theorem 1 on ≥ 100 k of its samples,
:mod:`cda_lite.empirical`), ``lam_learned``; ``gap_pretraining`` = λ*(q̂) − λ*(q) and
``gap_optimisation`` = learned − λ*(q̂), with their norms relative to ‖λ*(q)‖ (``rel_*``).
``lam_chain`` λ*(q̂_chain) of the exact ε of q through the same chain splits the pretraining gap into
the sampler's part (λ*(q̂_chain) − λ*(q): the chain's discretisation) and the network's
(λ*(q̂) − λ*(q̂_chain)) (``rel_sampler``, ``rel_network``).
``lam_refined`` solves the last dual step exactly on ≥ 50 k samples of the fine-tuned model
(:func:`cda_lite.empirical.refine_multipliers`) and splits the optimisation gap once more:
``gap_dual`` = learned − refined (what the noisy, lagging dual iterates cost) and ``gap_primal`` =
refined − λ*(q̂) (the fine-tuned model is not exactly a tilt of its base).
Infeasible levels fail before any training (the exact solver decides; exit 2, one line naming the
constraint and the best reachable level).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from cda_lite import pick
from cda_lite._cli import count, existing_file
from cda_lite.exact.problems import load_problem_file
from cda_lite.align import PRIMAL_STEPS, AlignConfig
from cda_lite.runner import run_alignment
from cda_lite.empirical import empirical_align_dual, refine_multipliers
from cda_lite.exact import InfeasibleConstraintError, align_dual, expected_rewards, kl_tilt, tilt
from cda_lite.kl import pathwise_kl
from cda_lite.metrics import sliced_wasserstein
from cda_lite.models import ExactEps, MLPEps
from cda_lite.pretrained import PRETRAIN_EMA, default_schedule, pretrain_2d
from cda_lite.exact.problems import AlignmentProblem, load_problem
from cda_lite.sampling import LARGE, sample


REFINE_SAMPLES = 50_000
"""Samples of the fine-tuned model for ``lam_refined`` (SE of each slack ≈ 0.005 σ)."""


def default_config(profile: str | None = None, **overrides) -> AlignConfig:
    """The 2-D preset: the full 100-step ancestral chain with DDPM's σ_t² = β_t (``eta=LARGE``) and
    backprop through every step, 128 samples per primal step, Adam 3e-3 on the correction network, a
    dual step every 5 primal steps with η_d = 0.5 (σ units) on the window's mean slack, λ averaged over
    the last 30 % of dual steps, and the last 25 % of primal steps run at that averaged λ (polish), so
    the model returned answers the λ reported. ``primal="tilted_dsm"`` swaps the paper's primal step
    for :class:`cda_lite.tilted_dsm.TiltedDSM` (same dual; one DSM step of batch 512 per primal step, the
    dual's 640 samples per dual step drawn in one batch without a graph): it reaches tilts that move
    mass between modes (``random_alignment(6)``) and trains in half the time, but on the first 20
    random problems its median error was higher (Chapter 4, *A primal step that fits the tilt*).

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
                      correction_size: tuple[int, int] = (64, 2), progress: bool = False,
                      n_sampler: int | None = None, pretrain_ema: float | None = None,
                      n_refine: int | None = None, pretrain_affine: bool = False) -> LearnedAlignment:
    """Run Algorithm 1 on ``problem`` (a path, dict or AlignmentProblem). With ``fixed_weights_raw``
    (multipliers in the rewards' units) or ``equal_weights`` (one multiplier for every σ-normalised
    reward, the paper's baseline) λ is frozen: the weighted-objective baseline. ``correction_size`` =
    (hidden width, layers) of the zero-initialised correction MLP. ``pretrain_ema``: EMA decay of the
    base network's DSM weights (None: the last iterate, as the chapters' cached models);
    ``pretrain_affine``: the base network's affine skip (:class:`~cda_lite.models.MLPEps`). ``n_sampler`` samples of the
    pretrained sampler give λ*(q̂) (``lam_sampler``; None or 0, the default, skips it; the command line
    uses 100 000). ``n_refine`` samples of the fine-tuned model give ``lam_refined`` (None or 0 skips it;
    the command line uses :data:`REFINE_SAMPLES`). Infeasible levels raise
    :class:`~cda_lite.exact.InfeasibleConstraintError` before any training."""
    t0 = time.time()
    problem = problem if isinstance(problem, AlignmentProblem) else load_problem(problem)
    config = config or default_config()
    exact = check_feasible(problem)
    torch.manual_seed(problem.seed)
    schedule = default_schedule()
    pretrained = pretrain_2d(problem.base, schedule, steps=pretrain_steps or pick(1500, 3000), seed=problem.seed,
                             progress=progress, ema=pretrain_ema, affine=pretrain_affine)
    t_pre = time.time()
    gen_seed = problem.seed + 1
    x_pre = sample(pretrained, schedule, (n_eval, problem.base.dim), steps=config.sample_steps, eta=config.eta,
                   seed=gen_seed)
    if equal_weights is not None and fixed_weights_raw is None:
        config = replace(config, fixed_weights=[float(equal_weights)] * len(problem.rewards))
    hidden, layers = correction_size
    correction = MLPEps(schedule.T, dim=problem.base.dim, hidden=hidden, layers=layers)
    run = run_alignment(pretrained, schedule, problem.rewards, problem.thresholds, replace(config, seed=problem.seed),
                        (problem.base.dim,), x_pre.double(), correction=correction,
                        fixed_weights_raw=fixed_weights_raw, progress=progress)
    trainer, model, constraints, normalizers = run.trainer, run.model, run.constraints, run.normalizers
    config = replace(config, fixed_weights=trainer.config.fixed_weights)
    t_train = time.time()
    model.eval()
    with torch.no_grad():
        x = sample(model, schedule, (n_eval, problem.base.dim), steps=config.sample_steps, eta=config.eta,
                   seed=gen_seed + 1).double()
        kl_mean, kl_se = pathwise_kl(model, pretrained, trainer.chain, (n_eval, problem.base.dim), seed=gen_seed + 2,
                                     dtype=torch.float32)
    t_eval = time.time()
    sampler, sampler_error, chain_lam = None, None, None
    if n_sampler:
        try:
            sampler = sampler_dual(pretrained, schedule, problem, config, n_sampler, seed=gen_seed + 5)
        except InfeasibleConstraintError as e:  # the pretrained sampler cannot reach a level: say so, keep the run
            sampler_error = str(e)
        chain_lam = chain_dual(problem, config, n_sampler, seed=gen_seed + 6)
    t_sampler = time.time()
    refined = None
    if n_refine and config.fixed_weights is None:
        values = reward_values(model, schedule, problem, config, n_refine, seed=gen_seed + 7)
        refined = refine_multipliers(values, problem.thresholds, trainer.lam_raw())
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
        "pretrain_ema": pretrain_ema, "pretrain_affine": pretrain_affine,
        "dual_precondition": config.dual_precondition,
        "primal": config.primal,
    }
    if trainer.primal_loss is not None and hasattr(trainer.primal_loss, "ess"):
        result["pool_ess"] = trainer.primal_loss.ess(trainer.lam)  # of the pool's points, at the λ reported
        result["pool_size"] = int(trainer.primal_loss.log_weights(trainer.lam).numel())
    result.update(decompose(exact.lam, None if sampler is None else sampler.lam, trainer.lam_raw(),
                            None if refined is None else refined.lam, chain_lam))
    if sampler is not None:
        result.update({"n_sampler": sampler.n, "sampler_ess": sampler.ess})
    if sampler_error:
        result["sampler_infeasible"] = sampler_error
    t_end = time.time()
    result["seconds_by_part"] = {"pretrain": t_pre - t0, "train": t_train - t_pre, "evaluate": t_eval - t_train,
                                 "sampler_dual": t_sampler - t_eval, "refine": t_end - t_sampler}
    result["seconds"] = t_end - t0
    result["seconds_algorithm"] = t_train - t0  # pretraining + primal-dual, without the diagnostics
    return LearnedAlignment(problem, trainer, model, pretrained, constraints, normalizers, x.numpy(),
                            x_pre.double().numpy(), exact, result)


def check_feasible(problem: AlignmentProblem):
    """The exact answer λ*(q), or InfeasibleConstraintError (one line: the constraint and its best
    reachable level) in well under a second, before anything is trained."""
    try:
        return align_dual(problem.base, problem.rewards, problem.thresholds)
    except InfeasibleConstraintError as e:
        raise InfeasibleConstraintError(f"{problem.name}: {e}", e.constraints) from None


def reward_values(model, schedule, problem: AlignmentProblem, config: AlignConfig, n: int, seed: int = 0,
                  chunk: int = 50_000) -> np.ndarray:
    """(m, n): the rewards at ``n`` samples of ``model`` through the run's chain (no graph)."""
    values = []
    with torch.no_grad():
        for k, start in enumerate(range(0, n, chunk)):
            size = min(chunk, n - start)
            x = sample(model, schedule, (size, problem.base.dim), steps=config.sample_steps, eta=config.eta,
                       seed=seed + 1000 * k).double()
            values.append(np.stack([r(x).numpy() for r in problem.rewards]))
    return np.concatenate(values, 1)


def sampler_dual(pretrained, schedule, problem: AlignmentProblem, config: AlignConfig, n: int = 100_000,
                 seed: int = 0, chunk: int = 50_000):
    """λ*(q̂): the dual of Theorem 1 on ``n`` samples of the pretrained sampler (the chain the run
    fine-tunes), in the rewards' units (:func:`cda_lite.empirical.empirical_align_dual`)."""
    return empirical_align_dual(reward_values(pretrained, schedule, problem, config, n, seed, chunk),
                                problem.thresholds)


def chain_dual(problem: AlignmentProblem, config: AlignConfig, n: int = 100_000, seed: int = 0):
    """λ*(q̂_chain): the dual of Theorem 1 on ``n`` samples of the *exact* ε of the base through the run's
    chain: what the sampler's discretisation alone moves λ*, with no network (None when a level is out
    of that sampler's reach)."""
    schedule = default_schedule()
    try:
        return sampler_dual(ExactEps(problem.base, schedule), schedule, problem, config, n, seed).lam
    except InfeasibleConstraintError:
        return None


def cost_of_lambda(problem: AlignmentProblem, lam, n: int = 200_000) -> dict:
    """What a learned λ costs, exactly: the tilt of q at ``lam`` (rewards' units), its worst slack in σ
    units of q (σ from ``n`` samples of q, seed 0) and its KL against the optimum
    (``kl_excess = KL/KL_opt − 1``; negative when that tilt falls short of a level). On a flat dual very
    different multipliers give nearly the same law, which the relative λ error cannot see."""
    lam = np.asarray(lam, float)
    exact = align_dual(problem.base, problem.rewards, problem.thresholds)
    x = problem.base.sample(n, seed=0)
    sd = np.array([float(np.std(r(x))) for r in problem.rewards])
    tilted = tilt(problem.base, problem.rewards, lam)
    slack = (expected_rewards(tilted, problem.rewards) - np.asarray(problem.thresholds, float)) / sd
    return {"exact_worst_slack_sigma": float(slack.min()),
            "kl_excess": float(kl_tilt(problem.base, problem.rewards, lam) / exact.kl - 1.0)}


def relative_error(lam, lam_ref) -> float:
    """‖λ − λ_ref‖₂ / ‖λ_ref‖₂ (the sweep's error measure; λ_ref ≠ 0 since some level is above the
    base's mean)."""
    lam, lam_ref = np.asarray(lam, float), np.asarray(lam_ref, float)
    return float(np.linalg.norm(lam - lam_ref) / max(np.linalg.norm(lam_ref), 1e-12))


def decompose(lam_exact, lam_sampler, lam_learned, lam_refined=None, lam_chain=None) -> dict:
    """learned − λ*(q) = [λ*(q̂) − λ*(q)] (pretraining) + [learned − λ*(q̂)] (optimisation); with
    ``lam_refined`` the optimisation part = [learned − refined] (dual) + [refined − λ*(q̂)] (primal); with
    ``lam_chain`` the pretraining part = [λ*(q̂_chain) − λ*(q)] (sampler) + [λ*(q̂) − λ*(q̂_chain)] (network)."""
    lam_exact, lam_learned = np.asarray(lam_exact, float), np.asarray(lam_learned, float)
    scale = max(float(np.linalg.norm(lam_exact)), 1e-12)
    out = {"rel_error": relative_error(lam_learned, lam_exact)}
    if lam_sampler is not None:
        lam_sampler = np.asarray(lam_sampler, float)
        out.update({"lam_sampler": lam_sampler.tolist(),
                    "gap_pretraining": (lam_sampler - lam_exact).tolist(),
                    "gap_optimisation": (lam_learned - lam_sampler).tolist(),
                    "rel_pretraining": float(np.linalg.norm(lam_sampler - lam_exact) / scale),
                    "rel_optimisation": float(np.linalg.norm(lam_learned - lam_sampler) / scale),
                    "rel_optimisation_vs_sampler": relative_error(lam_learned, lam_sampler)})
    if lam_chain is not None:
        lam_chain = np.asarray(lam_chain, float)
        out.update({"lam_chain": lam_chain.tolist(),
                    "rel_sampler": float(np.linalg.norm(lam_chain - lam_exact) / scale)})
        if lam_sampler is not None:
            out["rel_network"] = float(np.linalg.norm(lam_sampler - lam_chain) / scale)
    if lam_refined is not None:
        lam_refined = np.asarray(lam_refined, float)
        out.update({"lam_refined": lam_refined.tolist(), "rel_error_refined": relative_error(lam_refined, lam_exact),
                    "gap_dual": (lam_learned - lam_refined).tolist(),
                    "rel_dual": float(np.linalg.norm(lam_learned - lam_refined) / scale)})
        if lam_sampler is not None:
            out.update({"gap_primal": (lam_refined - lam_sampler).tolist(),
                        "rel_primal": float(np.linalg.norm(lam_refined - lam_sampler) / scale)})
    return out


def add_arguments(p) -> None:
    p.add_argument("problem", type=existing_file, help="2-D alignment problem file (JSON)")
    p.add_argument("--profile", choices=["fast", "full"], default=None, help="effort (default: $CDA_PROFILE or fast)")
    p.add_argument("--steps", type=count, default=None, help="primal steps (overrides the profile)")
    p.add_argument("--fixed-weights", type=float, nargs="+", default=None,
                   help="freeze λ at these weights (rewards' units): the weighted baseline")
    p.add_argument("--equal-weights", type=float, nargs="?", const=1.0, default=None, metavar="W",
                   help="freeze every λ at W (default 1) on the σ-normalised rewards: the paper's baseline")
    p.add_argument("--sampler-samples", type=int, default=100_000, metavar="N",
                   help="samples of the pretrained sampler for λ*(q̂) (default 100000; 0 skips the decomposition)")
    p.add_argument("--refine-samples", type=int, default=REFINE_SAMPLES, metavar="N",
                   help=f"samples of the fine-tuned model for lam_refined (default {REFINE_SAMPLES}; 0 skips it)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars on stderr")
    p.add_argument("--plain-dual", action="store_true",
                   help="plain projected dual ascent (default: the preconditioned, damped-Newton dual step)")
    p.add_argument("--no-ema", action="store_true", help="pretrain without the EMA of weights (the last DSM iterate)")
    p.add_argument("--primal", choices=PRIMAL_STEPS, default=None,
                   help="Algorithm 1's primal step: 'pathwise' (reward gradients through the chain; the default) or "
                        "'tilted_dsm' (score matching towards the Lagrangian's tilt)")
    p.add_argument("--affine", action="store_true",
                   help="base network with the affine skip (MLPEps(affine=True); the composition experts' default)")


def run(args) -> dict:
    torch.set_num_threads(1)  # 2-D networks are tiny: one thread is fastest and leaves a core free
    cfg = default_config(args.profile, dual_precondition=not args.plain_dual)
    if args.primal:
        cfg = replace(cfg, primal=args.primal)
    if args.steps:
        cfg = replace(cfg, steps=args.steps)
    if args.fixed_weights is not None and args.equal_weights is not None:
        raise ValueError("give --fixed-weights or --equal-weights, not both")
    for name in ("sampler_samples", "refine_samples"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be ≥ 0, got {getattr(args, name)}")
    problem = load_problem_file(args.problem, "align", "align2d")  # before any training
    return learned_alignment(problem, cfg, fixed_weights_raw=args.fixed_weights,
                             equal_weights=args.equal_weights, progress=not args.no_progress,
                             n_sampler=args.sampler_samples, pretrain_ema=None if args.no_ema else PRETRAIN_EMA,
                             pretrain_affine=args.affine,
                             n_refine=args.refine_samples).result


def format(result: dict) -> str:
    lines = [f"{'':>10} {'learned':>22} {'exact':>22}",
             f"{'λ':>10} {str(np.round(result['lam_learned'], 3)):>22} {str(np.round(result['lam_exact'], 3)):>22}",
             f"{'E r':>10} {str(np.round(result['expected_learned'], 3)):>22} {str(np.round(result['expected_exact'], 3)):>22}",
             f"{'KL':>10} {result['kl_path']:>22.3f} {result['kl_exact']:>22.3f}",
             f"distance to the exact target {result['distance_to_target']:.3f}; {result['seconds']:.0f} s"]
    if "lam_sampler" in result:
        lines.insert(2, f"{'λ*(q̂)':>10} {str(np.round(result['lam_sampler'], 3)):>22}   (pretrained sampler's own optimum)")
        lines.append(f"‖λ − λ*‖/‖λ*‖ = {result['rel_error']:.3f}: pretraining {result['rel_pretraining']:.3f}, "
                     f"optimisation {result['rel_optimisation']:.3f}")
    if "rel_sampler" in result:
        lines.append(f"pretraining part: sampler (exact ε through the chain) {result['rel_sampler']:.3f}"
                     + (f", network {result['rel_network']:.3f}" if "rel_network" in result else ""))
    if "lam_refined" in result:
        lines.insert(3, f"{'refined':>10} {str(np.round(result['lam_refined'], 3)):>22}   (last dual step solved on the model's samples)")
        split = (f": dual {result['rel_dual']:.3f}, primal {result['rel_primal']:.3f}" if "rel_primal" in result else "")
        lines.append(f"refined: ‖λ − λ*‖/‖λ*‖ = {result['rel_error_refined']:.3f}{split}")
    return "\n".join(lines)
