"""Chapter 9's experiments: constraints and composition on 8×8 digits, every one through the shared core.
The setting they share (config, correction network, rewards, normalisers, :func:`setup`) is
:mod:`cda_lite.digits.experiment_setup`.

- :func:`align` — Algorithm 1 (:func:`cda_lite.runner.run_alignment`): the frozen UNet plus a zero-initialised
  :class:`~cda_lite.digits.experiment_setup.ConvCorrection` (the :class:`~cda_lite.models.ResidualEps` pattern), with learned λ
  (constrained) or frozen λ (fixed weights). Evaluated on fresh samples: normalised reward means and the
  path-wise KL to the pretrained model (Lemma 1, along the same chain).
- :func:`compose` — Algorithm 3 (:func:`cda_lite.compose.and_dual_only`) over experts each fine-tuned for
  one reward: the point-wise KLs (Lemma 2) of the product to every expert at equal weights and at the
  dual's λ.
- :func:`rivals` — DAS, DB-MPA and the corrected blend (:mod:`cda_lite.inference`) aimed at the same
  tilt, with their cost in UNet evaluations.
- :func:`run_all` — all of it; ``python -m cda_lite.bench images`` prints :func:`summary` as JSON.

Fine-tuned corrections and their evaluations are cached in ``$CDA_CACHE/images`` (keyed by everything
that determines them), so the chapter and the bench share runs; a clean cache recomputes. Chapter 9.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cda_lite.align import AlignConfig, AlignedEps
from cda_lite.runner import run_alignment
from cda_lite.checkpoint import atomic_save
from cda_lite.compose import ComposeConfig, and_dual_only, run_rounds, surrogate_kls
from cda_lite.differentiable import sample_differentiable
from cda_lite.digits.experiment_setup import (CONSTRAINTS, EXPERTS, SHAPE, ConvCorrection, DigitSetup, ImageConfig,
                                              SharedBase, setup)
from cda_lite.models import ResidualEps
from cda_lite.sampling import sample


# --------------------------------------------------------------------------- Experiment 1: alignment
@dataclass
class AlignmentRun:
    """One fine-tuned model (constrained or fixed weights) and its evaluation on fresh samples."""

    label: str
    constraints: list  # Constraint.describe() of each
    fixed_weights: list | None  # None: λ learned by dual ascent
    lam: np.ndarray  # final multipliers (σ units): the averaged dual iterates, or the fixed weights
    lam_history: np.ndarray  # (steps, m) λ after each dual step (empty for fixed weights)
    kl_history: np.ndarray  # (steps,) batch path-wise KL during training
    expected_history: np.ndarray  # (steps, m) batch means of the normalised constrained rewards
    achieved: np.ndarray  # (m,) normalised reward means of the constrained rewards on n_eval samples
    achieved_se: np.ndarray
    kl: float  # path-wise KL to the pretrained model (Lemma 1) on the same samples
    kl_se: float
    rewards: dict  # every reward's normalised per-sample values on the samples
    samples: torch.Tensor
    seconds: float
    train_unet_passes: int  # UNet forward passes (images) during training, plus backward ones
    correction_state: dict = field(repr=False, default_factory=dict)
    model: nn.Module | None = field(repr=False, default=None)  # the AlignedEps (ResidualEps + reference)
    cached: bool = False

    @property
    def levels(self) -> np.ndarray:
        return np.array([c["level"] for c in self.constraints])

    @property
    def signs(self) -> np.ndarray:
        return np.array([1.0 if c["direction"] == ">=" else -1.0 for c in self.constraints])

    @property
    def slacks(self) -> np.ndarray:
        """s_i (achieved_i − level_i) in σ: ≥ 0 where a constraint holds."""
        return self.signs * (self.achieved - self.levels)

    def summary(self) -> dict:
        return {"label": self.label, "constraints": self.constraints, "fixed_weights": self.fixed_weights,
                "lam": self.lam.tolist(), "achieved": self.achieved.tolist(),
                "achieved_se": self.achieved_se.tolist(), "slacks": self.slacks.tolist(), "kl": self.kl,
                "kl_se": self.kl_se, "seconds": self.seconds, "train_unet_passes": self.train_unet_passes,
                "cached": self.cached}


def _cache_path(setup: DigitSetup, payload: dict) -> str:
    from cda_lite.pretrained import cache_dir

    key = hashlib.sha256(json.dumps({"setup": setup.key, **payload}, sort_keys=True, default=str).encode())
    return os.path.join(cache_dir(), "images", key.hexdigest()[:20] + ".pt")


def correction_for(setup: DigitSetup) -> ConvCorrection:
    torch.manual_seed(setup.config.seed + 7)
    return ConvCorrection(setup.schedule.T, SHAPE[0], setup.config.width)


def residual_model(setup: DigitSetup, correction_state: dict, base: nn.Module | None = None) -> AlignedEps:
    """Rebuild a fine-tuned model from its correction's weights: AlignedEps(ResidualEps(base, δ), base)."""
    base = setup.pretrained if base is None else base
    model = ResidualEps(base, correction_for(setup))
    model.correction.load_state_dict(correction_state)
    return AlignedEps(model, base, int(setup.chain.ts[-1])).eval()


@torch.no_grad()
def evaluate(setup: DigitSetup, model: ResidualEps, n: int, seed: int, batch: int = 256):
    """n fresh samples of a fine-tuned model with the training chain, and the per-sample path-wise KL
    to its frozen base along those very trajectories (Lemma 1; the base is evaluated once per step and
    shared, see :func:`cda_lite.differentiable.sample_differentiable`). Returns (x0, kl)."""
    gen = torch.Generator().manual_seed(seed)
    xs, kls = [], []
    for start in range(0, n, batch):
        m = min(batch, n - start)
        x_T = torch.randn((m, *SHAPE), generator=gen)
        out = sample_differentiable(model, setup.chain, x_T, ref_model=model.base, generator=gen,
                                    deterministic_model=model.base)
        xs.append(out.x0)
        kls.append(out.kl)
    return torch.cat(xs), torch.cat(kls)


def align(setup: DigitSetup, spec, fixed_weights=None, steps: int | None = None, label: str | None = None,
          cache: bool | str = True, progress: bool = False, n_eval: int | None = None) -> AlignmentRun:
    """Algorithm 1 on the digits: min KL(p_θ ‖ q) s.t. the constraints ``spec`` (triples (reward name,
    direction, level in σ)), λ learned by projected dual ascent from 1/m — or frozen at
    ``fixed_weights`` (the weighted-objective baseline). The trainable model is the pretrained UNet
    plus a zero-initialised :class:`ConvCorrection`, evaluated on ``n_eval`` fresh samples (default
    ``config.n_eval``). ``cache``: True reads and writes ``$CDA_CACHE/images``, ``"write"`` recomputes
    and writes, False neither."""
    cfg = setup.config
    constraints = setup.constraints(spec)
    m = len(constraints)
    steps = int(steps if steps is not None else cfg.steps)
    n_eval = int(n_eval if n_eval is not None else cfg.n_eval)
    fixed = None if fixed_weights is None else [float(w) for w in np.broadcast_to(fixed_weights, (m,))]
    label = label or ("constrained" if fixed is None else "fixed weights")
    acfg = AlignConfig(steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, lr_cosine=cfg.lr_cosine,
                       dual_lr=cfg.dual_lr, kappa_p=cfg.kappa_p, nu=cfg.nu, fixed_weights=fixed,
                       sample_steps=cfg.sample_steps, eta=1.0, grad_steps=min(cfg.grad_steps, len(setup.chain)),
                       lam_average=0.25, polish=cfg.polish, patience=10 * steps, on_infeasible="warn", seed=cfg.seed)
    payload = {"kind": "align", "spec": [list(s) for s in spec], "align": dataclasses.asdict(acfg),
               "width": cfg.width, "n_eval": n_eval, "seed": cfg.seed, "version": 1}
    path = _cache_path(setup, payload)
    if cache is True and os.path.exists(path):
        blob = torch.load(path, map_location="cpu", weights_only=False)
        run = AlignmentRun(**blob)
        run.label, run.cached = label, True
        run.model = residual_model(setup, run.correction_state)
        return run
    t0 = time.perf_counter()
    names = [c.name for c in constraints]
    outcome = run_alignment(setup.pretrained, setup.schedule, [setup.rewards[n] for n in names],
                            [c.level for c in constraints], acfg, SHAPE, None, [c.direction for c in constraints],
                            units="sigma", names=names, correction=correction_for(setup), progress=progress,
                            normalizers=[setup.normalizers[n] for n in names])
    trainer, aligned, constraints = outcome.trainer, outcome.model, outcome.constraints
    aligned.eval()
    residual = trainer.modules["model"]
    x, kl = evaluate(setup, residual, n_eval, seed=cfg.seed + 202)
    table = setup.reward_table(x)
    vals = np.stack([table[c.name] for c in constraints])
    log = trainer.log
    K = len(setup.chain)
    run = AlignmentRun(
        label=label, constraints=[c.describe() for c in constraints], fixed_weights=fixed,
        lam=np.asarray(trainer.lam, dtype=float), lam_history=trainer.dual.lam_history,
        kl_history=np.array([r["kl"] for r in log]), expected_history=np.array([r["expected"] for r in log]),
        achieved=vals.mean(1), achieved_se=vals.std(1) / math.sqrt(vals.shape[1]),
        kl=float(kl.mean()), kl_se=float(kl.std() / math.sqrt(len(kl))), rewards=table, samples=x,
        seconds=time.perf_counter() - t0, train_unet_passes=int(steps * cfg.batch_size * (K + acfg.grad_steps)),
        correction_state={k: v.detach().clone() for k, v in residual.correction.state_dict().items()},
        model=aligned)
    if cache:  # True or "write"
        blob = {f.name: getattr(run, f.name) for f in dataclasses.fields(run) if f.name not in ("model", "cached")}
        atomic_save(blob, path)
    return run


def equal_weights(run: AlignmentRun) -> np.ndarray:
    """The baseline's weights: the constrained run's total Σ_i λ_i spread equally over the rewards
    (the same overall pressure, without the dual's allocation)."""
    return np.full(len(run.lam), float(np.sum(run.lam)) / len(run.lam))


# --------------------------------------------------------------------------- Experiment 2: AND composition
@dataclass
class CompositionRun:
    """Algorithm 3 over fine-tuned experts, evaluated at equal weights and at the dual's λ."""

    names: list
    lam: np.ndarray  # the dual's λ (mean of the last iterates)
    lam_history: np.ndarray  # (rounds + 1, m)
    kl_history: np.ndarray  # (rounds, m) Lemma 2 KLs of each round
    kls_equal: np.ndarray  # KL(product at λ = 1/m ‖ expert i), evaluation pass
    kls_constrained: np.ndarray  # KL(product at the learned λ ‖ expert i), same samples' seeds
    rewards_equal: dict
    rewards_constrained: dict
    samples_equal: torch.Tensor
    samples_constrained: torch.Tensor
    unet_images: int  # UNet image-evaluations of the whole run (dual rounds + evaluation)
    seconds: float

    @staticmethod
    def spread(kls) -> float:
        return float(np.max(kls) - np.min(kls))

    def summary(self) -> dict:
        return {"experts": self.names, "lam": self.lam.tolist(), "kls_equal": self.kls_equal.tolist(),
                "kls_constrained": self.kls_constrained.tolist(), "spread_equal": self.spread(self.kls_equal),
                "spread_constrained": self.spread(self.kls_constrained),
                "mean_rewards_equal": {k: float(v.mean()) for k, v in self.rewards_equal.items()},
                "mean_rewards_constrained": {k: float(v.mean()) for k, v in self.rewards_constrained.items()},
                "unet_images": self.unet_images, "seconds": self.seconds}


def expert_models(setup: DigitSetup, experts: list[AlignmentRun]) -> tuple[list, SharedBase]:
    """The experts rebuilt on one :class:`SharedBase` (one UNet pass serves them all under no_grad)."""
    base = SharedBase(setup.pretrained)
    return [residual_model(setup, e.correction_state, base) for e in experts], base


def compose(setup: DigitSetup, experts: list[AlignmentRun], rounds: int | None = None) -> CompositionRun:
    """AND composition by Algorithm 3 (dual-only): sample Σ λ_i ε_i with the experiments' chain, step λ
    by Lemma 2's KLs; then evaluate the KLs at λ = 1/m and at the learned λ with common random numbers."""
    cfg = setup.config
    t0 = time.perf_counter()
    models, base = expert_models(setup, experts)
    m = len(models)
    ccfg = ComposeConfig(rounds=int(rounds or cfg.rounds), n_samples=cfg.compose_samples,
                         kl_timesteps=cfg.kl_timesteps, sampler_steps=cfg.sample_steps, seed=cfg.seed + 303,
                         average_last=3)
    with torch.no_grad():
        res = run_rounds(and_dual_only(models, setup.schedule, ccfg, dim=SHAPE), ccfg.average_last)
        ecfg = dataclasses.replace(ccfg, n_samples=cfg.compose_eval)
        kw = dict(dim=SHAPE, sample_seed=cfg.seed + 404, kl_seed=cfg.seed + 405)
        kls_eq, x_eq = surrogate_kls(models, np.full(m, 1.0 / m), setup.schedule, ecfg, **kw)
        kls_c, x_c = surrogate_kls(models, res.lam, setup.schedule, ecfg, **kw)
    return CompositionRun([e.constraints[0]["name"] for e in experts], res.lam, res.lam_history,
                          res.values_history, kls_eq, kls_c, setup.reward_table(x_eq), setup.reward_table(x_c),
                          x_eq, x_c, base.images, time.perf_counter() - t0)


# --------------------------------------------------------------------------- Experiment 3: rivals
@dataclass
class RivalRun:
    """One inference-time sampler aimed at the tilt q·e^{Σ_i w_i c_i r̃_i} (c_i the experts' weights)."""

    method: str
    samples: torch.Tensor
    rewards: dict
    nfe: int  # ε-network evaluations per sample as the library counts them (forward + backward)
    unet_forward: float  # measured UNet forward passes per output sample
    seconds: float
    ess_min: float | None = None
    tilt_reward: float = float("nan")  # mean of the tilt's reward Σ_i w_i c_i r̃_i (what every rival aims up)

    def summary(self, names) -> dict:
        return {"method": self.method, "mean_rewards": {k: float(self.rewards[k].mean()) for k in names},
                "tilt_reward": self.tilt_reward, "nfe": self.nfe, "unet_forward_per_sample": self.unet_forward,
                "seconds": self.seconds, "ess_min": self.ess_min}


class NormalizedReward:
    """r̃(x) = (r(x) − mean)/std of one reward (a differentiable callable for DAS)."""

    def __init__(self, setup: DigitSetup, name: str):
        self.reward, self.normalizer, self.name = setup.rewards[name], setup.normalizers[name], name

    def __call__(self, x):
        return self.normalizer(self.reward(x))


def rivals(setup: DigitSetup, experts: list[AlignmentRun], weights=None, n: int | None = None) -> dict:
    """DAS on the pretrained model with the reward Σ_i w_i c_i r̃_i (α = 1), DB-MPA and the corrected blend
    of the experts (each a fine-tune of q·e^{c_i r̃_i}) with weights w: all target q·e^{Σ w_i c_i r̃_i}.
    Also the pretrained sampler for reference. Returns {method: RivalRun}."""
    from cda_lite.inference import WeightedReward, das, sample_blend_corrected, sample_db_mpa

    cfg = setup.config
    n = int(n or cfg.particles)
    m = len(experts)
    w = np.full(m, 1.0 / m) if weights is None else np.asarray(weights, dtype=float)
    c = np.array([e.fixed_weights[0] if e.fixed_weights else e.lam[0] for e in experts])
    names = [e.constraints[0]["name"] for e in experts]
    reward = WeightedReward([NormalizedReward(setup, k) for k in names], w * c)
    K, steps = len(setup.chain), cfg.sample_steps
    out = {}
    counter = SharedBase(setup.pretrained)

    t0 = time.perf_counter()
    x = sample(counter, setup.schedule, (n, *SHAPE), steps=steps, eta=1.0, seed=cfg.seed + 505)
    out["pretrained"] = RivalRun("pretrained", x, setup.reward_table(x), K, counter.images / n,
                                 time.perf_counter() - t0)

    counter.reset()
    t0 = time.perf_counter()
    res = das(counter, reward, setup.schedule, n, alpha=1.0, steps=steps, dim=SHAPE, seed=cfg.seed + 506)
    out["das"] = RivalRun("das", res.x, setup.reward_table(res.x), res.nfe, counter.images / n,
                          time.perf_counter() - t0, float(res.ess.min()))

    models, base = expert_models(setup, experts)
    t0 = time.perf_counter()
    x = sample_db_mpa(models, w, setup.schedule, n, steps=steps, eta=1.0, seed=cfg.seed + 507, dim=SHAPE)
    out["db_mpa"] = RivalRun("db_mpa", x, setup.reward_table(x), K * m, base.images / n, time.perf_counter() - t0)

    base.reset()
    t0 = time.perf_counter()
    res = sample_blend_corrected(models, w, setup.schedule, n, steps=steps, eta=1.0, seed=cfg.seed + 507, dim=SHAPE)
    out["corrected"] = RivalRun("corrected", res.x, setup.reward_table(res.x), res.nfe, base.images / n,
                                time.perf_counter() - t0, float(res.ess.min()))
    for run in out.values():
        run.tilt_reward = float(sum(wc * run.rewards[k].mean() for wc, k in zip(w * c, names)))
    return out


# --------------------------------------------------------------------------- everything
@dataclass
class ChapterResults:
    setup: DigitSetup
    constrained: AlignmentRun
    equal: AlignmentRun
    experts: list
    composition: CompositionRun
    rivals: dict
    seconds: float


def run_all(config: ImageConfig | None = None, constraints=CONSTRAINTS, experts=EXPERTS, cache: bool | str = True,
            progress: bool = False, pretrained: nn.Module | None = None) -> ChapterResults:
    """Experiments 1-3 of Chapter 9 in order (cached fine-tunes are reused)."""
    t0 = time.perf_counter()
    s = setup(config, pretrained)
    con = align(s, constraints, label="constrained", cache=cache, progress=progress)
    eq = align(s, constraints, fixed_weights=equal_weights(con), label="equal weights", cache=cache,
               progress=progress)
    ex = [align(s, [(name, ">=", 0.0)], fixed_weights=[w], steps=s.config.expert_steps, label=f"expert {name}",
                cache=cache, progress=progress, n_eval=s.config.n_eval_expert) for name, w in experts]
    comp = compose(s, ex)
    riv = rivals(s, ex)
    return ChapterResults(s, con, eq, ex, comp, riv, time.perf_counter() - t0)


def targets(res: ChapterResults, tol: float = 0.1) -> dict:
    """The issue's targets: every constraint met within ``tol`` σ by the constrained run; the
    equal-weights run misses one (by more than ``tol``) or has a larger KL; the composition's KL spread
    is smaller at the learned λ than at equal weights."""
    con, eq, comp = res.constrained, res.equal, res.composition
    return {"constrained_meets_all": bool(np.all(con.slacks >= -tol)),
            "equal_misses_one": bool(np.any(eq.slacks < -tol)),
            "equal_larger_kl": bool(eq.kl > con.kl),
            "compose_spread_smaller": bool(CompositionRun.spread(comp.kls_constrained)
                                           < CompositionRun.spread(comp.kls_equal))}


def summary(res: ChapterResults) -> dict:
    """The bench's JSON: the issue's keys plus details."""
    con, eq, comp = res.constrained, res.equal, res.composition
    names = comp.names
    t = targets(res)
    return {
        "constraints": con.constraints,
        "achieved_constrained": con.achieved.tolist(),
        "achieved_equal_weights": eq.achieved.tolist(),
        "kl_constrained": con.kl,
        "kl_equal_weights": eq.kl,
        "lam": con.lam.tolist(),
        "lam_equal_weights": eq.lam.tolist(),
        "compose_kls_constrained": comp.kls_constrained.tolist(),
        "compose_kls_equal": comp.kls_equal.tolist(),
        "compose_lam": comp.lam.tolist(),
        "seconds": res.seconds,
        "slacks_constrained": con.slacks.tolist(),
        "slacks_equal_weights": eq.slacks.tolist(),
        "kl_se": [con.kl_se, eq.kl_se],
        "experts": [e.summary() for e in res.experts],
        "composition": comp.summary(),
        "rivals": {k: v.summary(names) for k, v in res.rivals.items()},
        "targets": {**t, "met": t["constrained_meets_all"] and (t["equal_misses_one"] or t["equal_larger_kl"])
                    and t["compose_spread_smaller"]},
        "config": dataclasses.asdict(res.setup.config),
        "normalizers": {k: [v.mean, v.std] for k, v in res.setup.normalizers.items()},
        "runs_seconds": {"constrained": con.seconds, "equal_weights": eq.seconds,
                         "experts": [e.seconds for e in res.experts], "composition": comp.seconds,
                         "rivals": {k: v.seconds for k, v in res.rivals.items()}},
        "cached": [r.cached for r in (con, eq, *res.experts)],
    }


__all__ = ["AlignmentRun", "align", "evaluate", "equal_weights",
           "residual_model", "CompositionRun", "compose", "expert_models", "RivalRun", "rivals", "ChapterResults",
           "run_all", "targets", "summary"]
