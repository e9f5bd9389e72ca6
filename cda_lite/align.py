"""Constrained alignment by primal-dual training (Algorithm 1, Theorem 2).

    min_θ KL(p_θ ‖ q)  s.t.  E_{p_θ}[r_i] ≥ b_i   (or ≤)

λ starts at 1/m; each round takes primal gradient steps on the Lagrangian
L(θ, λ) = KL_path(θ) − Σ_i λ_i s_i (Ê r_i(θ) − b_i) with the reward gradient backpropagated
through the sampler (truncated to the last K steps), then a dual step
λ_i ← [λ_i − η_d s_i (Ê r_i − b_i)]₊ (or νPI). With ``fixed_weights`` the same loop is the
weighted-objective baseline (λ frozen).

:class:`PrimalDualTrainer` knows nothing about 2-D: it takes a ``sample_batch(generator)`` that
returns differentiable samples with their path-wise KL, so the digits and Stable Diffusion rungs
reuse it unchanged. :func:`finetune` builds that function for an ε-model and a frozen reference.
``run()`` is a generator yielding :class:`AlignState` each primal step (Chapter 4 plots it live).
With ``polish`` > 0 the last primal steps run at λ frozen to its average, so the model returned is the
best response to the multipliers reported.

Two primal steps (``AlignConfig.primal``). ``"pathwise"`` (the paper's): a gradient step on L(θ, λ)
with the rewards' gradients backpropagated through the chain. ``"tilted_dsm"``: for fixed λ the
Lagrangian's minimiser over all laws is the tilt q̂·exp(Σ_i λ_i s_i r_i / w)/Z of the reference
sampler's law (Theorem 1's primal solution, w = ``kl_weight``), so each primal step is one
denoising-score-matching step towards that tilt (:class:`~cda_lite.tilted_dsm.TiltedDSM`): on the model's own recent
samples, resampled ∝ exp(Σ_i λ_i s_i r_i / w) · dP_ref/dP_θ, the second factor the realised likelihood
ratio of each sampled path (importance weights that turn the model's paths into the reference's;
they flatten as the model reaches the tilt). It needs no reward gradient, and it moves mass between
modes as fast as within one, where path-wise gradients reach a mode boundary only through the
trajectories that cross it (Chapter 4). The dual step is the same for both: the slacks of fresh
samples of the current model, which in ``tilted_dsm`` are also the primal's samples.
"""
from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from cda_lite import checkpoint as ckpt
from cda_lite._checks import check_count, check_number
from cda_lite.constraints import Constraint, DualAscent, bounded_newton_step, lagrangian
from cda_lite.differentiable import sample_differentiable
from cda_lite.models import ResidualEps
from cda_lite.sampling import Chain
from cda_lite.tilted_dsm import TiltedDSM


@dataclass
class AlignConfig:
    """Settings of one primal-dual run (every field has a default that works on the 2-D problems)."""

    steps: int = 400  # primal optimiser steps
    batch_size: int = 256  # samples per micro-batch (per call of sample_batch)
    grad_accum: int = 1  # micro-batches per primal step (gradient accumulation; SD: 64 images = 4 × 16)
    lr: float = 1e-3  # primal learning rate (Adam)
    optimizer: str = "adam"  # "adam", "adamw" (weight decay 0.01; the SD runs) or "sgd" (momentum 0.9)
    lr_cosine: bool = False  # decay the primal lr to 5 % along a cosine over ``steps``
    dual_lr: float = 0.5  # η_d (κ_i of νPI), in normalised-reward units
    dual_every: int = 1  # primal steps per dual step (N of Algorithm 1)
    kappa_p: float = 0.0  # νPI proportional gain (0: projected ascent)
    nu: float = 0.0  # νPI EMA factor
    dual_warmup: int = 0  # dual steps over which the dual step ramps up
    lam_init: float | list | None = None  # initial λ (default 1/m)
    fixed_weights: list | None = None  # freeze λ at these weights: the weighted baseline
    sample_steps: int = 20  # sampler steps of the chain being fine-tuned
    eta: float | str = 1.0  # sampler stochasticity: DDIM η > 0, or "large" (σ² = β_t); path-wise KL needs noise
    grad_steps: int | None = None  # K: backprop through the last K steps (None: all)
    random_truncation: bool = False  # draw K uniformly from 1..grad_steps each step (AlignProp)
    checkpointing: bool = False  # gradient checkpointing of each network call
    kl_weight: float = 1.0  # multiplies the KL term (1 = the paper's Lagrangian)
    primal: str = "pathwise"  # "pathwise" (reward gradients through the chain) or "tilted_dsm" (see above)
    buffer: int = 20  # tilted_dsm: the model's samples of this many last draws (one per dual step) make the pool
    dsm_batch: int = 512  # tilted_dsm: pool points resampled per primal step
    grad_clip: float | None = 1.0
    lam_average: float = 0.25  # report λ averaged over this last fraction of dual steps
    polish: float = 0.0  # last fraction of primal steps run at λ frozen to that average (no dual steps)
    dual_precondition: bool = False  # dual step along Cov⁻¹·slack (a damped Newton step; see newton_slacks)
    patience: int = 200  # dual steps a constraint may stay violated before "likely infeasible"
    on_infeasible: str = "raise"
    seed: int = 0
    checkpoint_every: int = 0  # 0: never
    checkpoint_path: str | None = None


@dataclass
class AlignState:
    step: int
    loss: float
    kl: float  # batch mean path-wise KL
    expected: np.ndarray  # batch means of the (normalised) constraint rewards
    slacks: np.ndarray
    lam: np.ndarray


PRIMAL_STEPS = ("pathwise", "tilted_dsm")


def check_config(config: AlignConfig) -> None:
    """Counts ≥ 1 and finite rates, named (``config.steps: must be ≥ 1, got -3``) before any work."""
    if config.primal not in PRIMAL_STEPS:
        raise ValueError(f"config.primal: must be one of {PRIMAL_STEPS}, got {config.primal!r}")
    for name in ("steps", "batch_size", "grad_accum", "dual_every", "sample_steps", "buffer", "dsm_batch"):
        check_count(getattr(config, name), f"config.{name}")
    check_count(config.checkpoint_every, "config.checkpoint_every", minimum=0)
    for name in ("lr", "dual_lr"):
        check_number(getattr(config, name), f"config.{name}", positive=True)
    for name in ("kl_weight", "kappa_p", "nu", "polish"):
        check_number(getattr(config, name), f"config.{name}", nonnegative=True)
    if config.grad_clip is not None:
        check_number(config.grad_clip, "config.grad_clip", nonnegative=True)
    if config.grad_steps is not None:
        check_count(config.grad_steps, "config.grad_steps")


class PrimalDualTrainer:
    """Algorithm 1 over any differentiable sampler.

    ``sample_batch(generator) -> (x0, kl_per_sample)``; rewards are evaluated by the constraints on x0
    (decoded images for latent models: decode inside ``sample_batch``). Without ``primal_loss`` the
    primal step descends the Lagrangian on those samples (the path-wise gradient); with
    ``primal_loss(generator, lam) -> loss`` it descends that loss instead, and ``sample_batch(generator,
    n)`` draws n samples without a graph for the dual's slacks (``AlignConfig.primal = "tilted_dsm"``);
    it may return ``(x0, kl, values)`` with the (m, n) rewards it has already evaluated, so an
    expensive reward runs once per sample.
    """

    def __init__(self, parameters, sample_batch: Callable, constraints: list[Constraint], config: AlignConfig,
                 modules: dict | None = None, primal_loss: Callable | None = None):
        if not constraints:
            raise ValueError("constraints: need at least one constraint")
        self.params = [p for p in parameters if p.requires_grad]
        if not self.params:
            raise ValueError("parameters: nothing to train (no parameter requires grad)")
        self.sample_batch, self.constraints, self.config = sample_batch, list(constraints), config
        self.primal_loss = primal_loss
        self.modules = modules or {}
        check_config(config)
        if config.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adam', 'adamw' or 'sgd', got {config.optimizer!r}")
        self.opt = (torch.optim.Adam(self.params, lr=config.lr) if config.optimizer == "adam"
                    else torch.optim.AdamW(self.params, lr=config.lr) if config.optimizer == "adamw"
                    else torch.optim.SGD(self.params, lr=config.lr, momentum=0.9))
        self.lr_sched = (torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, config.steps, eta_min=0.05 * config.lr)
                         if config.lr_cosine else None)
        self.dual = DualAscent(len(constraints), lr=config.dual_lr, kappa_p=config.kappa_p, nu=config.nu,
                               warmup=config.dual_warmup, init=config.lam_init if config.fixed_weights is None
                               else config.fixed_weights, patience=config.patience,
                               on_infeasible=config.on_infeasible, names=[c.name for c in constraints])
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.last_checkpoint: str | None = None  # the newest checkpoint written or resumed (finite)
        self.keep_checkpoints = ckpt.DEFAULT_KEEP
        self.extra_config: dict = {}  # more of the run's identity for checkpoints (SD: preset, model)
        self.log: list[dict] = []
        self._window: list[np.ndarray] = []  # slacks of the primal steps since the last dual step
        self._window_values: list[np.ndarray] = []  # their per-sample rewards (dual_precondition)
        self._last_measure = None  # tilted_dsm: (rewards, KL) of the last samples drawn for the dual

    # ------------------------------------------------------------------ loop
    def run(self, steps: int | None = None, progress: bool = False) -> Iterator[AlignState]:
        """Yield an :class:`AlignState` after every primal step until ``config.steps`` in total."""
        from tqdm.auto import tqdm

        cfg = self.config
        target = cfg.steps if steps is None else min(cfg.steps, self.step + steps)
        bar = tqdm(total=target - self.step, disable=not progress, desc="primal-dual", leave=False)
        polish_start = cfg.steps - int(round(cfg.polish * cfg.steps))
        while self.step < target:
            polishing = cfg.fixed_weights is None and self.step >= polish_start
            if polishing:
                # Polish: the last primal steps answer the averaged multiplier, so the returned model
                # is the best response to the λ that is reported (the last iterate alone chases the
                # dual noise).
                self.dual.lam = self.dual.averaged(cfg.lam_average)
            self.opt.zero_grad(set_to_none=True)
            # grad_accum micro-batches per optimiser step: L is linear in the batch means, so the
            # accumulated gradient of L_j / A equals the gradient on the union of the micro-batches.
            parts_v, parts_kl, loss_sum = [], [], 0.0
            if self.primal_loss is not None and self._last_measure is None:
                self._measure(parts_v, parts_kl)  # the primal's first samples: the model before any step
            for _ in range(cfg.grad_accum):
                if self.primal_loss is None:
                    x0, kl = self.sample_batch(self.generator)
                    values, kl_mean = self._rewards_and_kl(x0, kl)
                    loss = lagrangian(cfg.kl_weight * kl_mean, values, self.constraints, self.dual.lam)
                    parts_v.append(values.detach())
                    parts_kl.append(kl_mean.detach())
                else:
                    loss = self.primal_loss(self.generator, self.dual.lam)
                if not torch.isfinite(loss):
                    what = "Lagrangian" if self.primal_loss is None else "primal loss"
                    raise ckpt.NonFiniteError(ckpt.stop_message(f"{what} ({loss.item()})", self.step,
                                                                self.last_checkpoint), self.last_checkpoint)
                (loss / cfg.grad_accum).backward()
                loss_sum += loss.item() / cfg.grad_accum
            # a NaN gradient with a finite loss: stop before the optimiser writes it into the parameters
            ckpt.check_finite_step(loss_sum, self.params, self.step, self.last_checkpoint)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.opt.step()
            if self.lr_sched is not None:
                self.lr_sched.step()
            self.step += 1
            if self.primal_loss is not None:
                # Samples without a graph, as many as the path-wise window holds (batch_size × grad_accum
                # × dual_every, one batch), before the first step, every dual_every steps (also while polishing or
                # with λ fixed) and at the last; the sampler hands them to the primal's pool
                # (TiltedDSM.record). Between them the state repeats the last measurement.
                if self.step % cfg.dual_every == 0 or self.step == cfg.steps:
                    self._measure(parts_v, parts_kl)
                values, kl_mean = self._last_measure
                if not parts_v:  # no new samples: nothing enters the dual's window
                    state = self._state(loss_sum, kl_mean, values)
                    bar.update(1)
                    yield state
                    continue
            else:
                values = torch.cat(parts_v, 1)
                kl_mean = torch.stack(parts_kl).mean()
            expected = values.mean(1).double().cpu().numpy()
            slacks = np.array([c.slack(e) for c, e in zip(self.constraints, expected)])
            # The dual step uses the slacks averaged over the primal steps since the last one (every
            # batch of the window counts: √N less noise than the last batch alone).
            if not polishing and cfg.fixed_weights is None:
                self._window.append(slacks)
                if cfg.dual_precondition:
                    self._window_values.append(values.double().cpu().numpy())
            if not polishing and cfg.fixed_weights is None and self.step % cfg.dual_every == 0:
                step_slacks = np.mean(self._window, axis=0)
                if cfg.dual_precondition:
                    signs = np.array([c.sign for c in self.constraints])
                    cov = np.atleast_2d(np.cov(np.concatenate(self._window_values, 1) * signs[:, None]))
                    step_slacks = newton_slacks(step_slacks, cov, self.dual.lam, lr=cfg.dual_lr)
                    self._window_values = []
                self.dual.update(step_slacks, kl=kl_mean.item())
                self._window = []
            state = self._state(loss_sum, kl_mean, values)
            bar.update(1)
            yield state
        bar.close()

    def _measure(self, parts_v: list, parts_kl: list) -> None:
        """Draw batch_size × grad_accum × dual_every samples without a graph, in one call (with a
        ``primal_loss``: no graph to hold, and one large batch costs the small networks little more
        than one small one)."""
        cfg = self.config
        with torch.no_grad():
            values, kl_mean = self._rewards_and_kl(
                *self.sample_batch(self.generator, cfg.batch_size * cfg.grad_accum * cfg.dual_every))
        parts_v.append(values)
        parts_kl.append(kl_mean)
        self._last_measure = (torch.cat(parts_v, 1), torch.stack(parts_kl).mean())

    def _rewards_and_kl(self, x0, kl, values=None):
        if values is None:  # a sample_batch that already evaluated the rewards returns them third
            values = torch.stack([c.value(x0) for c in self.constraints])  # (m, n)
        kl_mean = kl.mean() if kl is not None else torch.zeros((), dtype=values.dtype, device=values.device)
        return values, kl_mean

    def _state(self, loss, kl_mean, values) -> AlignState:
        """Log the step, checkpoint when due, and return its :class:`AlignState`."""
        cfg = self.config
        expected = values.mean(1).double().cpu().numpy()
        slacks = np.array([c.slack(e) for c, e in zip(self.constraints, expected)])
        state = AlignState(self.step, loss, kl_mean.item(), expected, slacks, self.dual.lam.copy())
        self.log.append({"step": self.step, "loss": state.loss, "kl": state.kl,
                         "expected": expected.tolist(), "lam": state.lam.tolist()})
        if cfg.checkpoint_every and cfg.checkpoint_path and self.step % cfg.checkpoint_every == 0:
            self.save(cfg.checkpoint_path)
        return state

    def train(self, progress: bool = False) -> "PrimalDualTrainer":
        for _ in self.run(progress=progress):
            pass
        return self

    # ------------------------------------------------------------- results
    @property
    def lam(self) -> np.ndarray:
        """λ in normalised units: the last iterate for a fixed-weight run, else the average of the last
        ``lam_average`` fraction of dual iterates."""
        if self.config.fixed_weights is not None:
            return self.dual.lam.copy()
        return self.dual.averaged(self.config.lam_average)

    def lam_raw(self) -> np.ndarray:
        """λ in the rewards' own units (undoing each constraint's normalisation)."""
        return np.array([c.to_raw_multiplier(l) for c, l in zip(self.constraints, self.lam)])

    # ---------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {"step": self.step, "params": [p.detach().clone() for p in self.params],
                "opt": self.opt.state_dict(), "dual": self.dual.state_dict(),
                "lr_sched": None if self.lr_sched is None else self.lr_sched.state_dict(),
                "generator": self.generator.get_state(), "log": list(self.log),
                "window": [w.tolist() for w in self._window],
                "window_values": [v.tolist() for v in self._window_values],
                "last_measure": None if self._last_measure is None else tuple(t.clone() for t in self._last_measure),
                "primal": self.primal_loss.state_dict() if hasattr(self.primal_loss, "state_dict") else None,
                "modules": {k: m.state_dict() for k, m in self.modules.items()},
                "config": asdict(self.config)}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for p, v in zip(self.params, state["params"]):
                p.copy_(v)
        self.opt.load_state_dict(state["opt"])
        if self.lr_sched is not None and state.get("lr_sched") is not None:
            self.lr_sched.load_state_dict(state["lr_sched"])
        self.dual.load_state_dict(state["dual"])
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        self.log = list(state["log"])
        self._window = [np.asarray(w, dtype=float) for w in state.get("window", [])]
        self._window_values = [np.asarray(v, dtype=float) for v in state.get("window_values", [])]
        last = state.get("last_measure")
        self._last_measure = None if last is None else tuple(t.clone() for t in last)
        if state.get("primal") is not None and hasattr(self.primal_loss, "load_state_dict"):
            self.primal_loss.load_state_dict(state["primal"])
        for k, m in self.modules.items():
            if k in state.get("modules", {}):
                m.load_state_dict(state["modules"][k])

    # what must match for a resume to continue the same run (steps may grow; where/how often to save,
    # gradient checkpointing and the infeasibility report do not change the trajectory)
    RESUME_IGNORES = ("steps", "checkpoint_every", "checkpoint_path", "checkpointing", "patience", "on_infeasible")

    def run_config(self) -> dict:
        """The resolved configuration saved with every checkpoint and compared on resume."""
        return {"align": asdict(self.config), "constraints": [c.describe() for c in self.constraints],
                **self.extra_config}

    def save(self, path: str) -> None:
        """Checkpoint atomically (keeping the last ``keep_checkpoints``); refuses a non-finite state."""
        last = self.log[-1]["loss"] if self.log else None
        ckpt.check_finite_step(last, self.params, self.step, self.last_checkpoint)
        ckpt.save_checkpoint(self.state_dict(), path, self.run_config(), keep=self.keep_checkpoints)
        self.last_checkpoint = path

    def resume(self, path: str, force: bool = False) -> "PrimalDualTrainer":
        """Continue from the newest intact checkpoint at ``path`` (a corrupt one is named and the previous
        used); refuses (:class:`~cda_lite.checkpoint.ConfigMismatchError`) one written under another
        configuration unless ``force``."""
        state, header, used = ckpt.load_checkpoint(path)
        saved = header.get("config") if not header.get("legacy") else {"align": state.get("config")}
        requested = self.run_config() if not header.get("legacy") else {"align": asdict(self.config)}
        ckpt.check_resume_config(saved, requested, used, ignore=self.RESUME_IGNORES, force=force)
        self.load_state_dict(state)
        self.last_checkpoint = used
        return self


def newton_slacks(slacks, cov, lam, ridge: float = 0.05, lr: float | None = None) -> np.ndarray:
    """Slacks preconditioned by the inverse reward covariance on the active set (λ_i > 0 or violated).

    The dual D(λ) = λᵀb − log Z(λ) of Theorem 1 has gradient b − E_λ r and Hessian −Cov_λ(r), so
    λ ← [λ − η Cov⁻¹ slack]₊ is a damped Newton step (η = 1: exact for Gaussian q and linear r).
    Plain ascent λ ← [λ − η slack]₊ crawls along the dual's flat directions when Cov is
    ill-conditioned; this step does not. ``ridge`` (× the mean variance) keeps the solve stable on
    a noisy batch covariance; ``cov`` is of the signed rewards s_i r_i.

    With the dual step ``lr`` (η) the step keeps λ ≥ 0 the Newton way
    (:func:`cda_lite.constraints.bounded_newton_step`): a multiplier the step would take below 0 stops
    at 0 and the others are solved again without it. Clipping instead keeps the others' share of a
    step that multiplier never took: with two nearly collinear rewards and one of them inactive, a
    noisy violation of the inactive one sent the other's λ up or down by 0.3–0.5 in one step."""
    slacks = np.asarray(slacks, float)
    cov = np.atleast_2d(np.asarray(cov, float))
    lam = np.asarray(lam, float)
    active = (lam > 0) | (slacks < 0)
    out = slacks.copy()
    if not active.any():
        return out
    if lr is not None:
        d = bounded_newton_step(-slacks, cov / lr, lam, active, ridge=ridge)
        out[active] = -d[active] / lr
        return out
    C = cov[np.ix_(active, active)]
    C = C + ridge * np.trace(C) / len(C) * np.eye(len(C))
    out[active] = np.linalg.solve(C, slacks[active])
    return out


class AlignedEps(torch.nn.Module):
    """The aligned sampler's ε: the fine-tuned network on the stochastic steps and the frozen
    reference on timesteps ≤ ``t_tail`` (the final deterministic denoising step, which the path-wise
    KL does not cover)."""

    def __init__(self, model: torch.nn.Module, reference: torch.nn.Module, t_tail: int):
        super().__init__()
        self.model, self.reference, self.t_tail = model, reference, int(t_tail)

    def forward(self, x, t):
        t_ = torch.as_tensor(t)
        if t_.ndim == 0:
            return (self.reference if int(t_) <= self.t_tail else self.model)(x, t)
        tail = (t_ <= self.t_tail).view(-1, *([1] * (x.ndim - 1)))
        return torch.where(tail, self.reference(x, t), self.model(x, t))


def finetune(pretrained: torch.nn.Module, constraints: list[Constraint], schedule, config: AlignConfig,
             noise_shape: tuple, decode: Callable | None = None, correction: torch.nn.Module | None = None,
             ) -> tuple[PrimalDualTrainer, torch.nn.Module]:
    """Set up Algorithm 1 for an ε-network: a trainable copy of ``pretrained``, the frozen original as
    the KL reference, and a differentiable DDIM(η) sampler. Returns (trainer, aligned ε-model)
    where the aligned model is an :class:`AlignedEps` (sample it with the same chain).

    With ``correction`` (a small ε-network) the trainable model is ``ResidualEps(reference,
    correction)`` — the pretrained network plus a zero-initialised correction, the 2-D analogue of a
    LoRA adapter; without it every weight of a copy of ``pretrained`` is trained.
    ``config.primal = "tilted_dsm"`` makes the primal step :class:`~cda_lite.tilted_dsm.TiltedDSM` (``trainer.primal_loss``)."""
    check_config(config)
    ref = copy.deepcopy(pretrained).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    if correction is None:
        model = copy.deepcopy(pretrained).train()
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        model = ResidualEps(ref, correction).train()
    chain = Chain.make(schedule, config.sample_steps, config.eta)
    tilted = TiltedDSM(model, schedule, constraints, config) if config.primal == "tilted_dsm" else None

    def sample_batch(gen, n=None):
        x_T = torch.randn((n or config.batch_size, *noise_shape), generator=gen)
        out = sample_differentiable(model, chain, x_T, ref_model=ref, grad_steps=config.grad_steps,
                                    random_truncation=config.random_truncation, generator=gen,
                                    checkpointing=config.checkpointing, deterministic_model=ref,
                                    log_ratio=tilted is not None)
        x0 = out.x0 if decode is None else decode(out.x0)
        if tilted is None:
            return x0, out.kl
        values = torch.stack([c.value(x0) for c in constraints])  # evaluated once: the pool and the dual share them
        tilted.record(out.x0, values, out.log_ratio)
        return x0, out.kl, values

    trainer = PrimalDualTrainer(model.parameters(), sample_batch, constraints, config, modules={"model": model},
                                primal_loss=tilted)
    aligned = AlignedEps(model, ref, int(chain.ts[-1]))
    trainer.model, trainer.reference, trainer.chain = aligned, ref, chain
    return trainer, aligned
