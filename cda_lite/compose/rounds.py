"""What every composition algorithm shares: :class:`ComposeConfig`, the per-round record
:class:`ComposeRound`, :func:`run_rounds` collecting a :class:`ComposeResult`, the simplex dual and the
checks of weights and ε-models."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from cda_lite._checks import InputError, check_simplex
from cda_lite.constraints import SimplexDual



OR_DUAL_LR = 0.4  # OR's default dual step: the losses differ by log-ratios of λ, a scale-free quantity


@dataclass
class ComposeConfig:
    """Settings of Algorithms 2 and 3 and of the OR dual (defaults: the 2-D fast profile)."""

    rounds: int = 8  # dual steps
    dual_lr: float | None = None  # η_0 of SimplexDual; None: AND uses dual_lr_scale / mean(first KLs), OR 0.4
    dual_lr_scale: float = 0.2  # AND with dual_lr=None: η_0 · mean KL at λ = 1/m (scale-free first step)
    dual_decay: float = 0.9  # η_k = η_0 · decay^k (the paper decays the dual step by 0.9)
    # Algorithm 2 only: steps of length dual_radius · dual_radius_decay^k along KL − mean KL
    # (SimplexDual(normalized=True)) instead of the paper's λ + η_k·KL above
    dual_normalized: bool = False
    dual_radius: float = 0.4
    dual_radius_decay: float = 0.7
    # with dual_normalized: Newton's step, capped at dual_radius · decay^k, instead of one of that length along
    # KL − mean KL (the dual's curvature Cov_p(log q_i, log q_j) from two independent draws of the experts'
    # denoising losses on the particles, kl.log_density_covariance)
    dual_newton: bool = False
    average_last: int = 3  # the reported λ is the mean of the last iterates (Polyak averaging)
    n_samples: int = 500  # MCMC particles (Alg. 2), chain samples (Alg. 3), data per expert (OR)
    n_samples_early: int | None = None  # Algorithm 2: particles in the rounds before the last `average_last`,
    # whose λ is not averaged and whose capped steps need only the KLs' direction (None: n_samples)
    seed: int = 0
    # Algorithm 2: annealed Langevin with the surrogate score
    langevin_levels: int = 10  # noise levels, geometric in 1 − ᾱ from t = T−1 to t = langevin_t_min
    langevin_steps: int = 10  # Langevin steps per level (the paper's code: 10 × 10)
    langevin_step: str | float = "curvature"  # "curvature", "beta" (h = scale·β_t) or a fixed step
    langevin_step_scale: float = 0.025  # h_t = scale / mean precision ("curvature"); the paper: 2 with "beta".
    # Unadjusted Langevin settles on a law wider than the target by about h·P/2 (≈ 5 % at 0.1): the KLs to
    # narrow experts magnify that, and it moved λ by 0.02–0.03 on random problems (issue 12)
    langevin_final_steps: int = 240  # Langevin steps at the last level, where the particles settle
    langevin_snapshots: int = 1  # Algorithm 2: states of each chain kept at the last level (evenly spaced,
    # annealed_langevin(snapshots=)); the dual's denoising losses average over all of them
    langevin_precondition: bool = False  # Algorithm 2 on vectors: each level's step preconditioned by the
    # particles' covariance (annealed_langevin(precondition=True))
    langevin_t_min: int = 0  # last Langevin level; if > 0, DDPM steps with Σλ_i ε_i carry the particles on to
    # t = 0. Use ≥ 1 with ε-networks conditioned on the timestep by DDPM's embedding: their score at the
    # smallest t is poorly learned (the DSM target has a signal of size σ_t there, and each t learns alone)
    # and Langevin follows it at full strength. Score networks conditioned on σ_t (MLPEps(sigmas=...)) and
    # exact experts run to 0 (compose2d.LEARNED_T_MIN).
    # the primal model (Algorithm 2 and OR): an MLPEps trained by DSM, warm-started across rounds
    dsm_steps_first: int = 300  # DSM steps in the first round (from scratch)
    dsm_steps: int = 100  # DSM steps in every later round
    batch_size: int = 256
    model_lr: float = 2e-3
    hidden: int = 128
    layers: int = 3
    # KL / loss estimates
    kl_samples: int = 1000  # samples of the model that are forward-noised for Lemma 2
    kl_source: str = "denoising"  # Algorithm 2's KLs: Lemma 2 between the fitted model and each expert on the
    # model's samples ("model") or on the MCMC samples ("mcmc"); or "denoising": each expert's Lemma-2-weighted
    # denoising loss on the MCMC samples (cda_lite.kl.denoising_kls: the KL differences the dual step uses,
    # unbiased, with no fitted model in between), placed at the level of the model's Lemma 2 KLs
    kl_timesteps: int | None = 8  # k random t per sample (unbiased for Lemma 2's sum); None: every t
    weighted: bool = True  # Lemma 2's weights β_t/(2(1−ᾱ_t)); False: the public code's plain ε-MSE sums
    kl_quadrature: str = "lemma2"  # Algorithm 2's KL weights: Lemma 2's or "log_snr" (kl.log_snr_weights: the
    # continuous identity's log-SNR cells; at T = 100 within 2.5 % of the KLs where Lemma 2's sum is 5–13 % low)
    sampler_steps: int | None = None  # Algorithm 3 and model samples: DDPM over every timestep (None)

    def __post_init__(self):
        for name in ("rounds", "n_samples", "langevin_levels", "langevin_steps", "langevin_final_steps", "langevin_snapshots",
                     "dsm_steps_first", "batch_size", "kl_samples", "average_last"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.n_samples_early is not None and (not isinstance(self.n_samples_early, (int, np.integer))
                                                 or self.n_samples_early < 2):
            raise ValueError(f"n_samples_early must be an integer ≥ 2 or None, got {self.n_samples_early!r}")
        if self.dsm_steps < 0:
            raise ValueError(f"dsm_steps must be ≥ 0, got {self.dsm_steps}")
        if self.dual_lr is not None and not self.dual_lr > 0:
            raise ValueError(f"dual_lr must be > 0 (or None), got {self.dual_lr}")
        for name in ("dual_decay", "dual_radius_decay"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in (0, 1], got {getattr(self, name)}")
        if self.dual_newton and not self.dual_normalized:
            raise ValueError("dual_newton: Newton steps need dual_normalized=True (their length is capped at dual_radius)")
        if self.dual_newton and not self.weighted:
            raise ValueError("dual_newton: the curvature Cov(log q_i, log q_j) needs Lemma 2's weighted losses "
                             "(weighted=True); unweighted ε-MSE sums are not log-densities")
        if not self.dual_radius > 0:
            raise ValueError(f"dual_radius must be > 0, got {self.dual_radius}")
        if not isinstance(self.langevin_t_min, (int, np.integer)) or self.langevin_t_min < 0:
            raise ValueError(f"langevin_t_min must be an integer ≥ 0, got {self.langevin_t_min!r}")
        if self.kl_quadrature not in ("lemma2", "log_snr"):
            raise ValueError(f"kl_quadrature must be 'lemma2' or 'log_snr', got {self.kl_quadrature!r}")
        if self.kl_source not in ("model", "mcmc", "denoising"):
            raise ValueError(f"kl_source must be 'model', 'mcmc' or 'denoising', got {self.kl_source!r}")


@dataclass
class ComposeRound:
    """One round: the λ used, the per-expert values it produced (KLs or losses), the λ after the dual
    step, the round's samples and (Algorithm 2, OR) the primal model."""

    round: int
    lam: np.ndarray
    values: np.ndarray
    lam_next: np.ndarray
    samples: np.ndarray
    model: torch.nn.Module | None = None


@dataclass
class ComposeResult:
    lam: np.ndarray  # mean of the last `average_last` iterates
    lam_history: np.ndarray  # (rounds + 1, m): λ used in each round, then the last λ
    values_history: np.ndarray  # (rounds, m): KL_i (AND) or losses (OR) per round
    samples: np.ndarray  # the last round's samples
    model: torch.nn.Module | None
    seconds: float
    extra: dict = field(default_factory=dict)  # what a caller adds (SD: expert names, decoded images)

    @property
    def values(self) -> np.ndarray:
        """The last round's per-expert values."""
        return self.values_history[-1]


def run_rounds(rounds: Iterator[ComposeRound], average_last: int = 3) -> ComposeResult:
    """Run a composition generator to the end and collect its history."""
    t0 = time.perf_counter()
    hist, vals, last = [], [], None
    for last in rounds:
        hist.append(last.lam)
        vals.append(last.values)
    if last is None:
        raise ValueError("rounds: the generator produced no round")
    hist.append(last.lam_next)
    lam_hist = np.array(hist)
    lam = lam_hist[-average_last:].mean(0)
    return ComposeResult(lam / lam.sum(), lam_hist, np.array(vals), last.samples, last.model,
                         time.perf_counter() - t0)



def _check_lam(lam, m: int) -> np.ndarray:
    lam = np.asarray(lam, dtype=float)
    if lam.shape != (m,):
        raise InputError(f"lam: expected {m} weights, got shape {lam.shape}")
    check_simplex(lam, "lam", atol=1e-6)  # finite, non-negative, summing to 1
    return lam


def _check_models(models):
    models = list(models)
    if len(models) < 2:
        raise ValueError(f"experts: need at least 2 ε-models to compose, got {len(models)}")
    for i, m in enumerate(models):
        if not callable(m):
            raise ValueError(f"experts[{i}]: expected an ε-model eps(x, t), got {type(m).__name__}")
    return models


def _dual(m: int, config: ComposeConfig, first_values, default_lr, normalizable: bool = False) -> SimplexDual:
    if normalizable and config.dual_normalized:
        return SimplexDual(m, lr=config.dual_radius, decay=config.dual_radius_decay, normalized=True)
    lr = config.dual_lr if config.dual_lr is not None else default_lr(np.asarray(first_values))
    return SimplexDual(m, lr=float(lr), decay=config.dual_decay)


def _and_default_lr(config):
    return lambda g: config.dual_lr_scale / max(float(np.mean(g)), 1e-6)
