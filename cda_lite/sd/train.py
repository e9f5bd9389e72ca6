"""Constrained LoRA alignment of Stable Diffusion (Algorithm 1) through the shared core,
:class:`cda_lite.align.PrimalDualTrainer`: nothing here is SD-specific except ``sample_batch``.

``sample_batch(generator)`` draws training prompts, runs :func:`cda_lite.differentiable.sample_differentiable`
on the LoRA UNet (ε with classifier-free guidance) with the *same* UNet, adapter disabled, as the
path-wise-KL reference, decodes to [0, 1] images and returns (images, KL per image). Prompt-aware
rewards read the batch's prompts from a shared context. Every draw (prompts, K, x_T, step noise)
comes from the trainer's generator, so ``resume`` continues exactly. Chapter 10.
"""
from __future__ import annotations

import csv
import json
import os
import time

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from cda_lite.align import AlignConfig, AlignedEps, PrimalDualTrainer
from cda_lite import checkpoint as C
from cda_lite.checkpoint import atomic_write_json
from cda_lite.constraints import Constraint
from cda_lite.differentiable import sample_differentiable
from cda_lite.runner import AlignmentOutcome
from cda_lite.sd import lora as L
from cda_lite.sd import sampling as S
from cda_lite.sd.presets import AlignPreset, derived
from cda_lite.sd.device import pipe_device
from cda_lite.sd.registry import normalizer
from cda_lite.sd.rewards import follow


class PromptContext:
    """The prompts of the batch being scored (set by ``sample_batch``, read by prompt-aware rewards)."""

    prompts: list | None = None


def make_constraints(preset: AlignPreset, ctx: PromptContext, device=None, pipe=None) -> list[Constraint]:
    """One :class:`Constraint` per spec; the reward is a name, a ``module:function`` path or a callable
    (:func:`cda_lite.sd.config.resolve_reward`), its level in the spec's ``units`` (σ units measured on
    ``pipe``'s own samples when no Table 7 statistics exist)."""
    from cda_lite.sd.config import check_spec, resolve_reward, reward_name

    out = []
    for i, spec in enumerate(preset.constraints):
        check_spec(spec, f"constraints[{i}]")
        r = follow(resolve_reward(spec.reward), device)  # the reward's networks on the pipeline's device

        def value(images, r=r):
            return r(images, ctx.prompts)
        name = reward_name(spec.reward)
        units = getattr(spec, "units", "auto")
        norm = None if units == "raw" or not isinstance(spec.reward, str) else normalizer(spec.reward, getattr(preset, "reward_stats", None))
        if units == "sigma" and norm is None:
            if pipe is None:
                raise ValueError(f"constraints[{i}]: units 'sigma' for {name!r} needs the pipeline to measure σ")
            norm = calibrate(pipe, preset, r, device=device)
        out.append(Constraint(name, value, spec.level, spec.direction, norm))
    return out


@torch.no_grad()
def calibrate(pipe, p: AlignPreset, reward, device=None, seed: int = 4321):
    """(mean, std) of ``reward`` over ``p.calibration_images`` samples of the pretrained model (training
    prompts, the run's chain): the σ unit of a reward without Table 7 statistics."""
    from cda_lite.constraints import RewardNormalizer

    n = int(p.calibration_images)
    gen = torch.Generator().manual_seed(seed)
    prompts = [p.train_prompts[i % len(p.train_prompts)] for i in range(n)]
    eps = S.SDEps(pipe.unet, p.guidance).set_prompts(pipe, prompts)
    chain = S.make_chain(pipe, p.sample_steps, p.eta)
    x_T = S.initial_latents(pipe, n, p.height, p.width, gen, device=device)
    with S.adapters_disabled(pipe.unet):
        images = S.decode(pipe, sample_differentiable(eps, chain, x_T, generator=gen).x0)
    return RewardNormalizer.fit(reward(images, prompts).detach().cpu())


def align_config(p: AlignPreset) -> AlignConfig:
    """The core configuration of the preset: every :class:`AlignConfig` field the preset names is copied;
    the SD-specific ones are mapped (micro-batch, νPI vs ascent, fixed λ as a list)."""
    from dataclasses import fields

    derived(p)  # checks divisibility
    shared = {f.name for f in fields(AlignConfig)} & {f.name for f in fields(p)}
    kw = {k: getattr(p, k) for k in shared}
    kw.update(batch_size=p.micro_batch, grad_accum=p.grad_accum,
              kappa_p=p.kappa_p if p.dual == "nupi" else 0.0, nu=p.nu if p.dual == "nupi" else 0.0,
              fixed_weights=[p.lam_init] * len(p.constraints) if p.fixed_weights else None,
              checkpoint_every=0, checkpoint_path=None)  # the SD run checkpoints itself (run())
    return AlignConfig(**kw)


def build(pipe, p: AlignPreset, device=None, adapter: str = "default"):
    """Add a LoRA adapter to ``pipe.unet`` and return (trainer, eps, ref, chain, ctx)."""
    if p.dual not in ("nupi", "ascent"):
        raise ValueError(f"dual must be 'nupi' or 'ascent', got {p.dual!r}")
    if p.eta <= 0:
        raise ValueError("eta must be > 0: the path-wise KL needs a stochastic sampler")
    device = pipe_device(pipe) if device is None else device
    params = L.add_lora(pipe.unet, p.lora_rank, name=adapter)
    eps = S.SDEps(pipe.unet, p.guidance)
    ref = S.AdapterOff(eps)
    chain = S.make_chain(pipe, p.sample_steps, p.eta)
    ctx = PromptContext()
    cfg = align_config(p)
    k_min = 2 if p.reference_final_step else 1  # with a shared last step, K = 1 carries no reward gradient
    if p.reference_final_step and p.grad_steps < 2:
        raise ValueError("grad_steps must be >= 2 when the last step is the reference's (reference_final_step)")

    def decode(z):
        if p.checkpointing and torch.is_grad_enabled():
            return _checkpoint(lambda u: S.decode(pipe, u), z, use_reentrant=False)
        return S.decode(pipe, z)

    def sample_batch(gen):
        idx = torch.randint(len(p.train_prompts), (p.micro_batch,), generator=gen)
        prompts = [p.train_prompts[i] for i in idx.tolist()]
        eps.set_prompts(pipe, prompts)
        K = int(torch.randint(k_min, p.grad_steps + 1, (1,), generator=gen)) if p.random_truncation else p.grad_steps
        x_T = S.initial_latents(pipe, p.micro_batch, p.height, p.width, gen, device=device)
        out = sample_differentiable(eps, chain, x_T, ref_model=ref, grad_steps=K, generator=gen,
                                    checkpointing=p.checkpointing,
                                    deterministic_model=ref if p.reference_final_step else None)
        ctx.prompts = prompts
        return decode(out.x0), out.kl

    trainer = PrimalDualTrainer(params, sample_batch, make_constraints(p, ctx, device, pipe), cfg)
    return trainer, eps, ref, chain, ctx


def _write_logs(trainer, names, out):
    rows = []
    for h in trainer.log:
        row = {"step": h["step"], "loss": h["loss"], "kl": h["kl"], "seconds": h.get("seconds")}
        row.update({f"E[{n}]": e for n, e in zip(names, h["expected"])})
        row.update({f"lam[{n}]": lam for n, lam in zip(names, h["lam"])})
        rows.append(row)
    tmp = os.path.join(out, ".log.jsonl.tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, os.path.join(out, "log.jsonl"))
    tmp = os.path.join(out, ".log.csv.tmp")
    with open(tmp, "w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    os.replace(tmp, os.path.join(out, "log.csv"))


# preset fields that do not change the trajectory (steps may grow; evaluation and notes)
# Fields that do not change the trained model: evaluation, logging and run control (a resumed run may
# change them), besides the trainer's own (steps, checkpoint interval: cda_lite.align).
RESUME_IGNORES = ("eval_prompts", "published", "resume", "validate_every", "validation_prompts", "validation_seeds",
                  "tensorboard", "eval_prompts_file")


def run_identity(p: AlignPreset, model_id: str | None = None) -> dict:
    """What a checkpoint of this run records about its preset and model (compared on resume)."""
    from dataclasses import asdict, fields
    # the preset's own fields: a TrainConfig (cda_lite.sd.config) adds run control that does not change the model
    return {"preset": {f.name: asdict(p)[f.name] for f in fields(AlignPreset)}, "model": model_id}


def check_resume(out: str, p: AlignPreset, model_id: str | None = None, force: bool = False) -> None:
    """Before any pipeline is built: refuse to resume ``out/checkpoint.pt`` under another preset, seed,
    baseline, constraints or model (:class:`~cda_lite.checkpoint.ConfigMismatchError`) unless ``force``."""
    path = os.path.join(out, "checkpoint.pt")
    header = C.read_header(path)  # every file corrupt: CorruptCheckpointError, one line
    if header is not None and not header.get("legacy"):
        saved = {k: (header.get("config") or {}).get(k) for k in ("preset", "model")}
        C.check_resume_config(saved, run_identity(p, model_id), path,
                              ignore=RESUME_IGNORES + PrimalDualTrainer.RESUME_IGNORES, force=force)


def run(pipe, p: AlignPreset, out: str, resume: bool = True, progress: bool = True, device=None,
        max_steps: int | None = None, setup=None, main: bool = True, on_step=None, force_resume: bool = False,
        model_id: str | None = None) -> dict:
    """Train, logging every step (log.jsonl, log.csv), checkpointing every ``p.checkpoint_every`` steps
    (checkpoint.pt + lora/, the last two kept), resuming from ``out/checkpoint.pt`` when ``resume`` — refused
    under another preset/seed/baseline/model unless ``force_resume``. A non-finite loss or gradient stops
    the run before the step (nothing non-finite is saved) with the last finite checkpoint's path. Returns the summary (also summary.json).

    ``setup(trainer)`` runs right after the trainer is built (the multi-process run of
    :mod:`cda_lite.sd.distributed` installs its synchronisation there); ``on_step(trainer)`` after every
    step (logs, validation images); ``main=False`` writes nothing. ``out/config.yaml``: the resolved
    configuration (:mod:`cda_lite.sd.config`)."""
    if main:
        os.makedirs(out, exist_ok=True)
        from cda_lite.sd.config import save_config
        save_config(p, out)
    trainer, eps, ref, chain, ctx = build(pipe, p, device)
    if setup is not None:
        setup(trainer)
    trainer.extra_config = run_identity(p, model_id)
    trainer.RESUME_IGNORES = PrimalDualTrainer.RESUME_IGNORES + RESUME_IGNORES
    ckpt = os.path.join(out, "checkpoint.pt")
    if resume and C.exists(ckpt):
        trainer.resume(ckpt, force=force_resume)
    names = [c.name for c in trainer.constraints]
    status = "done"
    t0 = time.time()
    try:
        for _ in trainer.run(steps=max_steps, progress=progress):
            trainer.log[-1]["seconds"] = time.time() - t0
            t0 = time.time()
            if main:
                _write_logs(trainer, names, out)
            if main and p.checkpoint_every and trainer.step % p.checkpoint_every == 0:
                trainer.save(ckpt)
                L.save_lora(pipe, os.path.join(out, "lora"))
            if on_step is not None:
                on_step(trainer)
    except FloatingPointError as e:
        status = f"stopped: {e}"
        if main:
            atomic_write_json({"status": status, "step": trainer.step, "last_checkpoint": trainer.last_checkpoint},
                              os.path.join(out, "summary.json"))
        raise
    if main:
        trainer.save(ckpt)
        L.save_lora(pipe, os.path.join(out, "lora"))
    last = trainer.log[-1] if trainer.log else {}
    summary = {"status": status if trainer.step >= p.steps else "partial", "preset": p.name, "step": trainer.step,
               "constraints": [c.describe() for c in trainer.constraints],
               **AlignmentOutcome(trainer, None, trainer.constraints, [c.normalizer for c in trainer.constraints]).summary(),
               "last_expected": last.get("expected"),
               "last_kl": last.get("kl"), "published": p.published}
    if main:
        atomic_write_json(summary, os.path.join(out, "summary.json"))
    summary["trainer"] = trainer
    return summary


def aligned_eps(eps, chain, reference_final_step: bool = True):
    """The ε of the chain that training runs: the LoRA UNet on the stochastic steps and, with
    ``reference_final_step``, the frozen base on the final σ = 0 step (:class:`cda_lite.align.AlignedEps`,
    t ≤ the chain's last timestep). Evaluation samples this chain, so it reports the trained model."""
    if not reference_final_step:
        return eps
    return AlignedEps(eps, S.AdapterOff(eps), int(chain.ts[-1]))


@torch.no_grad()
def evaluate(pipe, p: AlignPreset, n: int | None = None, seed: int | None = None, adapter_on: bool = True,
             device=None) -> dict:
    """Mean raw reward of each constraint over ``n`` images of the evaluation prompts (default
    ``p.eval_images``, seed ``p.eval_seed``), sampled by the trained chain (:func:`aligned_eps`) or, with
    ``adapter_on=False``, the base model; the rewards run on the pipeline's device."""
    n = p.eval_images if n is None else int(n)
    gen = torch.Generator().manual_seed(p.eval_seed if seed is None else int(seed))
    eps = S.SDEps(pipe.unet, p.guidance)
    prompts = [p.eval_prompts[i % len(p.eval_prompts)] for i in range(n)]
    chain = S.make_chain(pipe, p.sample_steps, p.eta)
    model = aligned_eps(eps, chain, p.reference_final_step) if adapter_on else S.AdapterOff(eps)
    device = pipe_device(pipe) if device is None else device
    from cda_lite.sd.config import resolve_reward, reward_name
    rewards = {reward_name(spec.reward): follow(resolve_reward(spec.reward), device) for spec in p.constraints}
    values = {k: [] for k in rewards}
    for a in range(0, n, p.micro_batch):  # micro-batches of the training size (memory)
        rows = prompts[a:a + p.micro_batch]
        eps.set_prompts(pipe, rows)
        x_T = S.initial_latents(pipe, len(rows), p.height, p.width, gen, device=device)
        images = S.decode(pipe, sample_differentiable(model, chain, x_T, generator=gen).x0)
        for k, r in rewards.items():
            values[k].append(torch.as_tensor(r(images, rows)).reshape(-1).double().cpu())
    return {k: float(torch.cat(v).mean()) for k, v in values.items()}
