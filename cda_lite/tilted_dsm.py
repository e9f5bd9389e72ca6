"""The tilted-DSM primal step of Algorithm 1 (``AlignConfig(primal="tilted_dsm")``, Chapter 4).

For fixed λ the Lagrangian's minimiser over all laws is the tilt q̂·exp(Σ_i λ_i s_i r_i / w)/Z of the
reference sampler's law (Theorem 1). :class:`TiltedDSM` fits it by denoising score matching on the
model's own recent samples, resampled ∝ exp(Σ_i λ_i s_i r_i / w) · dP_ref/dP_θ: the second factor is
each sampled path's realised likelihood ratio
(:func:`cda_lite.differentiable.sample_differentiable` with ``log_ratio=True``), so the reweighted
pool has the tilt's law whichever θ drew it. :func:`cda_lite.align.finetune` wires it into
:class:`~cda_lite.align.PrimalDualTrainer`.
"""
from __future__ import annotations

import numpy as np
import torch

from cda_lite.train import dsm_loss


def tilt_log_weights(values: torch.Tensor, constraints, lam, kl_weight: float = 1.0) -> torch.Tensor:
    """log of q̂·exp(Σ_i λ_i s_i r_i / w)/q̂ at sample points, up to a constant: ``values`` (m, N) are the
    constraints' (normalised) rewards, s_i their signs. The tilt is Theorem 1's minimiser of the
    Lagrangian at fixed λ (the levels only shift the constant)."""
    lam_t = torch.as_tensor(np.asarray(lam, dtype=float), dtype=values.dtype)
    signs = torch.tensor([c.sign for c in constraints], dtype=values.dtype)
    return (lam_t * signs) @ values / kl_weight


def effective_sample_size(log_weights: torch.Tensor) -> float:
    """Kish's (Σw)²/Σw² of self-normalised weights exp(log_weights): the points the tilt still
    has (N when the tilt is flat, → 1 as it concentrates)."""
    w = torch.softmax(log_weights.double(), 0)
    return float(1.0 / (w ** 2).sum())


def tilted_dsm_loss(model, pool: torch.Tensor, log_weights: torch.Tensor, schedule, batch: int,
                    gen: torch.Generator | None = None) -> torch.Tensor:
    """Denoising score matching towards a reweighted law: ``batch`` pool points resampled ∝
    exp(log_weights) (with replacement), then DDPM's ε loss on them (:func:`cda_lite.train.dsm_loss`).
    Its minimiser over ε is the ε of the reweighted law, noised."""
    idx = torch.multinomial(torch.softmax(log_weights.double(), 0), batch, replacement=True, generator=gen)
    return dsm_loss(model, pool[idx], schedule, gen)


class TiltedDSM:
    """The ``tilted_dsm`` primal step: a callable ``(generator, λ) -> loss`` for
    :class:`~cda_lite.align.PrimalDualTrainer` (``config`` an :class:`~cda_lite.align.AlignConfig`),
    fed by :meth:`record` with the model's samples, their (normalised) rewards and their paths'
    log dP_θ/dP_ref. The pool holds the last ``config.buffer`` draws (one per dual step; older draws
    stay valid importance samples, only less efficient). A point's log weight is
    Σ_i λ_i s_i r_i / w − log dP_θ/dP_ref, so the resampled pool has (up to self-normalisation) the
    law of the tilt of the reference sampler, whichever θ drew it."""

    def __init__(self, model, schedule, constraints, config):
        self.model, self.schedule, self.constraints, self.config = model, schedule, list(constraints), config
        self.keep = config.buffer  # draws kept (the trainer draws once per dual step)
        self.pool: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def record(self, x0: torch.Tensor, values: torch.Tensor, log_ratio: torch.Tensor) -> None:
        """Add one batch: samples (the model's own space: latents for a latent model), (m, n) rewards,
        (n,) log dP_θ/dP_ref."""
        self.pool.append((x0.detach(), values.detach().double(), log_ratio.detach().double()))
        del self.pool[:-self.keep]

    def log_weights(self, lam) -> torch.Tensor:
        values = torch.cat([v for _, v, _ in self.pool], 1)
        ratio = torch.cat([r for _, _, r in self.pool])
        return tilt_log_weights(values, self.constraints, lam, self.config.kl_weight) - ratio

    def ess(self, lam) -> float:
        """Kish's effective size of the pool under the tilt at ``lam`` (of ``len(pool points)``)."""
        return effective_sample_size(self.log_weights(lam))

    def __call__(self, gen, lam) -> torch.Tensor:
        if not self.pool:
            raise RuntimeError("TiltedDSM: no samples recorded yet (the trainer records before the first step)")
        pool = torch.cat([x for x, _, _ in self.pool])
        return tilted_dsm_loss(self.model, pool, self.log_weights(lam), self.schedule, self.config.dsm_batch, gen)

    def state_dict(self) -> dict:
        return {"pool": [tuple(t.clone() for t in item) for item in self.pool]}

    def load_state_dict(self, state: dict) -> None:
        self.pool = [tuple(t.clone() for t in item) for item in state["pool"]]
