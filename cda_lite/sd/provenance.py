"""Where every preset value comes from: ``paper`` (the camera-ready or its public code, Khalafi et al. 2025),
``derived`` (computed from the paper's value, e.g. by :mod:`cda_lite.sd.calibration`), ``guess`` (the paper
does not record it; our reading) or ``ours`` (an implementation setting that does not change the method:
memory, logging, seeds). :func:`table` writes the Markdown table of Chapter 10 from the presets themselves,
so it cannot drift from them; a test checks that every field of every preset has an entry.
"""
from __future__ import annotations

from dataclasses import fields

from cda_lite.sd import presets as P

_SKIP = {"name", "published", "tiny"}

_ALIGN = {
    "constraints": ("paper", "Table 10/11 levels in σ units of Table 7"),
    "train_prompts": ("guess", "45 simple animals: the paper's list is not recorded (ours, disjoint from evaluation)"),
    "eval_prompts": ("paper", "the 6 evaluation animals"),
    "steps": ("paper", "20 optimiser steps of 64 images"),
    "images_per_step": ("paper", "64 images per optimiser step"),
    "micro_batch": ("ours", "memory only: images_per_step = micro_batch × accumulation"),
    "lora_rank": ("paper", "r = 4 on to_q/to_k/to_v/to_out.0"),
    "lr": ("paper", "AdamW 1e-3"),
    "sample_steps": ("paper", "15 DDIM steps"),
    "eta": ("paper", "η = 1"),
    "guidance": ("paper", "guidance 5"),
    "grad_steps": ("paper", "truncated backprop K ≈ 3"),
    "random_truncation": ("paper", "AlignProp's random truncation"),
    "reference_final_step": ("ours", "the σ = 0 step carries no path-wise KL: base model there, in training and evaluation"),
    "checkpointing": ("paper", "gradient checkpointing on every network call"),
    "kl_weight": ("derived", "paper 0.1 / ρ_path (cda_lite.sd.calibration.kl_weight); the public code never applies it"),
    "dual": ("paper", "νPI controller"),
    "dual_lr": ("paper", "κ_i = 0.05 on z-normalised slacks (same units as the public code: no recalibration)"),
    "kappa_p": ("paper", "κ_p = 0"),
    "nu": ("paper", "νPI EMA unused when κ_p = 0"),
    "dual_warmup": ("paper", "public code: dual step warmed up over 10 epochs (an epoch read as an optimiser step)"),
    "dual_every": ("guess", "one dual step per epoch in the public code; an epoch read as one optimiser step"),
    "lam_init": ("paper", "initial λ = 0.2"),
    "fixed_weights": ("paper", "baseline: λ frozen at 0.2"),
    "height": ("paper", "512 px"),
    "width": ("paper", "512 px"),
    "grad_clip": ("guess", "clipping at 1.0 (AlignProp's default), not recorded for the paper"),
    "checkpoint_every": ("ours", "checkpoint frequency"),
    "seed": ("ours", "random seed"),
    "eval_images": ("guess", "the paper's evaluation image count is not recorded"),
    "eval_seed": ("ours", "evaluation seed (not recorded)"),
    "reward_stats": ("paper", "empty: Table 7's statistics (fitted for the paper's sampler; refit with calibration.refit_stats)"),
    "model_id": ("paper", "SD 1.5"),
    "calibration_images": ("ours", "pretrained-model images measuring σ of a reward without Table 7 statistics"),
    "optimizer": ("paper", "AdamW"),
    "lr_cosine": ("ours", "constant learning rate (no schedule is recorded)"),
    "lam_average": ("ours", "λ reported as the average over the last quarter of dual steps"),
    "polish": ("ours", "off: no primal steps at frozen λ"),
    "patience": ("ours", "dual steps before a constraint is reported likely infeasible"),
    "on_infeasible": ("ours", "warn, not stop, on a likely infeasible level"),
    "dual_precondition": ("ours", "off: the paper's plain dual step"),
}
_ALIGN_BY_PRESET = {
    "fig4": {"constraints": ("guess", "aesthetic, PickScore ≥ 0.5σ are the paper's; hps ≥ 0, mps ≥ 0 are ours (not recorded)"),
             "steps": ("guess", "\"25 epochs\" read as 25 optimiser steps of 64 images")},
    "table2": {"constraints": ("guess", "the adapters' objective is not recorded: one constraint (level 1σ) per reward"),
               "steps": ("paper", "10 steps of 64 images"), "sample_steps": ("paper", "50 DDIM steps"),
               "grad_steps": ("paper", "truncation K ≈ 10"),
               "kl_weight": ("derived", "paper 0.1 / ρ_path at 50 steps")},
}
_COMPOSE = {
    "experts": ("paper", "LoRA adapters (Fig. 5) or prompts (Tables 1/4)"),
    "adapters": ("paper", "the Table 2 adapters"),
    "prompts": ("paper", "the 6 evaluation animals"),
    "dual_steps": ("paper", "5 dual steps"),
    "dual_lr": ("derived", "paper 1.0 / ρ (25 steps, 512 px; cda_lite.sd.calibration.dual_lr)"),
    "dual_decay": ("paper", "×0.9 per dual step"),
    "lam_average": ("guess", "how Fig. 5's λ is reported is not recorded: the last iterate"),
    "sample_steps": ("paper", "25 DDIM steps"),
    "eta": ("paper", "η = 1"),
    "guidance": ("paper", "guidance 5"),
    "kl_guidance": ("paper", "the sampling guidance"),
    "batch": ("paper", "batch 4"),
    "kl_timesteps": ("ours", "random t per sample in Lemma 2's unbiased estimate (the public code: the k sampler steps)"),
    "height": ("paper", "512 px"),
    "width": ("paper", "512 px"),
    "seed": ("ours", "random seed"),
    "reference_final_step": ("ours", "as the adapters were trained: base model on the σ = 0 step"),
    "model_id": ("paper", "SD 1.5"),
    "n_sets": ("paper", "one set of experts"),
    "sets_seed": ("ours", "seed of the prompt-set draws"),
    "concept_pool": ("paper", "unused (fixed experts)"),
}
_CONCEPTS = {
    "prompts": ("guess", "one example pair/triplet; the table draws n_sets random sets from concept_pool"),
    "dual_steps": ("paper", "50 dual steps"), "dual_lr": ("derived", "paper 0.05 / ρ (10 steps, 512 px)"),
    "dual_decay": ("paper", "constant dual step"), "lam_average": ("paper", "λ = mean of the last 5"),
    "sample_steps": ("paper", "10 DDIM steps"), "guidance": ("paper", "guidance 12"),
    "kl_guidance": ("paper", "120 inside the KL (here: a factor (120/12)² on the dual step, exact for prompt experts)"),
    "batch": ("guess", "images per dual step not recorded"), "model_id": ("paper", "SD 1.4"),
    "n_sets": ("paper", "50 random pairs (Table 1) / triplets (Table 4)"),
    "concept_pool": ("guess", "the pool the sets are drawn from is not recorded (ours: 51 animals)"),
}
_INFER = {
    "method": ("paper", "DAS (Kim et al., ICLR 2025) / Diffusion Blend (arXiv 2505.18547)"),
    "reward": ("guess", "the reward DAS is run with here (aesthetic)"),
    "adapters": ("guess", "which Table 2 adapters are blended"),
    "weights": ("guess", "equal blend weights"),
    "lam": ("guess", "DB-KLA's λ"),
    "prompts": ("paper", "the 6 evaluation animals"),
    "particles": ("paper", "DAS: 4 particles"),
    "steps": ("paper", "DAS 100 / Diffusion Blend 50 DDIM steps"),
    "eta": ("paper", "η = 1"),
    "gamma": ("paper", "DAS: exponential tempering γ = 0.008"),
    "alpha": ("guess", "DAS's KL weight α is not recorded in our sources"),
    "guidance": ("guess", "guidance 5, as the paper's SD runs"),
    "chunk": ("ours", "memory only"),
    "height": ("paper", "512 px"),
    "width": ("paper", "512 px"),
    "seed": ("ours", "random seed"),
    "reference_final_step": ("ours", "blends: base model on the adapters' σ = 0 step, as trained"),
}


def provenance(preset) -> dict:
    """{field: (label, reason)} for every field of ``preset`` (KeyError if one is unannotated)."""
    if isinstance(preset, P.AlignPreset):
        table = {**_ALIGN, **_ALIGN_BY_PRESET.get(preset.name, {})}
    elif isinstance(preset, P.ComposePreset):
        table = {**_COMPOSE, **(_CONCEPTS if preset.experts == "prompts" else {})}
    else:
        table = _INFER
    return {f.name: table[f.name] for f in fields(preset) if f.name not in _SKIP}


def _fmt(v) -> str:
    if isinstance(v, list):
        if v and isinstance(v[0], P.ConstraintSpec):
            return "; ".join(f"{c.reward} {c.direction} {c.level:g}" for c in v)
        return f"{len(v)} items" if len(v) > 6 else ", ".join(map(str, v)) or "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "Table 7" if not v else ", ".join(f"{k}: {m:.4g} ± {s:.4g}" for k, (m, s) in v.items())
    return str(v)


def table(names: list[str] | None = None) -> str:
    """Markdown: one row per (preset, setting) with its value, its label and the reason."""
    rows = ["| preset | setting | value | source | why |", "|---|---|---|---|---|"]
    for n in names or P.names():
        p = P.get_preset(n)
        for k, (label, why) in provenance(p).items():
            rows.append(f"| {n} | `{k}` | {_fmt(getattr(p, k))} | {label} | {why} |")
    return "\n".join(rows)
