"""One Algorithm 1 driver (paper, Algorithm 1: primal-dual constrained alignment).

Given the base ε-model, rewards with directions and levels (raw or σ units), samples of the
pretrained model and an :class:`~cda_lite.align.AlignConfig`, :func:`run_alignment` fits one
:class:`~cda_lite.constraints.RewardNormalizer` per reward on the pretrained samples, builds the
σ-unit :class:`~cda_lite.constraints.Constraint` list (:func:`normalized_constraints`), fine-tunes
with :func:`~cda_lite.align.finetune` (its checkpoint/resume options and tqdm bar) and returns an
:class:`AlignmentOutcome`. The raw ↔ σ conversion is the normaliser's: b_σ = (b_raw − m)/s.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from cda_lite.align import AlignConfig, finetune
from cda_lite.constraints import Constraint, RewardNormalizer


def fit_normalizers(rewards, pretrained_samples) -> list[RewardNormalizer]:
    """One normaliser per reward from its values on the pretrained model's samples."""
    return [RewardNormalizer.fit(r(pretrained_samples)) for r in rewards]


def normalized_constraints(rewards, levels, normalizers, directions=">=", units: str = "raw",
                           names=None) -> list[Constraint]:
    """σ-unit constraints E[(r−m)/s] ≷ b_σ; ``units="raw"`` converts each level b ↦ (b − m)/s."""
    if units not in ("raw", "sigma"):
        raise ValueError(f"units: must be 'raw' or 'sigma', got {units!r}")
    m = len(rewards)
    if len(levels) != m or len(normalizers) != m:
        raise ValueError(f"levels: {len(levels)} levels and {len(normalizers)} normalisers for {m} rewards")
    dirs = [directions] * m if isinstance(directions, str) else list(directions)
    if len(dirs) != m:
        raise ValueError(f"directions: {len(dirs)} directions for {m} rewards")
    names = names or [getattr(r, "name", f"r{i}") for i, r in enumerate(rewards)]
    return [Constraint(nm, r, (b - n.mean) / n.std if units == "raw" else float(b), d, n)
            for nm, r, b, n, d in zip(names, rewards, levels, normalizers, dirs)]


@dataclass
class AlignmentOutcome:
    """One Algorithm 1 run: the trainer, the aligned model, its constraints and normalisers."""

    trainer: object
    model: torch.nn.Module
    constraints: list
    normalizers: list

    def summary(self, expected_raw=None, kl=None) -> dict:
        """λ in the constraints' units (σ where normalised) and in the rewards' units, levels in both
        units (σ entries None for a constraint without a normaliser); with ``expected_raw`` the expected
        rewards and σ slacks; ``kl`` as given (the caller's estimate)."""
        cons = self.constraints
        out = {"lam": np.asarray(self.trainer.lam, float).tolist(),
               "lam_raw": np.asarray(self.trainer.lam_raw(), float).tolist(),
               "levels_sigma": [c.level if c.normalizer else None for c in cons],
               "levels_raw": [c.raw_level() for c in cons]}
        if expected_raw is not None:
            e = [float(v) for v in expected_raw]
            out["expected_raw"] = e
            out["expected_sigma"] = [float(c.normalizer(v)) if c.normalizer else None for c, v in zip(cons, e)]
            out["slack_sigma"] = [c.slack(s) if s is not None else None for c, s in zip(cons, out["expected_sigma"])]
        if kl is not None:
            out["kl"] = float(kl)
        return out


def run_alignment(pretrained, schedule, rewards, levels, config: AlignConfig, noise_shape, pretrained_samples,
                  directions=">=", units: str = "raw", names=None, correction=None, fixed_weights_raw=None,
                  progress: bool = False, train: bool = True, normalizers=None) -> AlignmentOutcome:
    """Algorithm 1 end to end. ``normalizers`` (already fitted on ``pretrained_samples``; then
    ``pretrained_samples`` may be None) skips the fit. ``fixed_weights_raw`` (multipliers in the rewards' units) freezes λ at
    w·s (σ units): the weighted-objective baseline. ``train=False`` returns before training (resume)."""
    if normalizers is None:
        normalizers = fit_normalizers(rewards, pretrained_samples)
    constraints = normalized_constraints(rewards, levels, normalizers, directions, units, names)
    if fixed_weights_raw is not None:
        if len(fixed_weights_raw) != len(constraints):
            raise ValueError(f"fixed_weights_raw: {len(fixed_weights_raw)} weights for {len(constraints)} rewards")
        config = replace(config, fixed_weights=[w * n.std for w, n in zip(fixed_weights_raw, normalizers)])
    trainer, model = finetune(pretrained, constraints, schedule, config, noise_shape, correction=correction)
    if train:
        trainer.train(progress=progress)
    return AlignmentOutcome(trainer, model, constraints, normalizers)
