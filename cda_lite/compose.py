"""Composition of diffusion models by constrained learning: products (AND) and mixtures (OR).

AND (Theorem 3): min_p max_i KL(p ‖ q_i). The solution is the tilted product
q_AND^λ ∝ ∏_i q_i^{λ_i} with λ on the simplex; at λ* every expert with λ*_i > 0 sits at one KL.

- :func:`and_primal_dual` — **Algorithm 2**. Each round: sample q_AND^λ by annealed Langevin MCMC
  with the surrogate score Σ_i λ_i s_i (:mod:`cda_lite.langevin`), fit a model to the samples by
  denoising score matching (Lemma 3: the primal step is DSM on samples of q_AND^λ; the model is warm
  started across rounds), estimate KL(model ‖ q_i) with Lemma 2 (:func:`cda_lite.kl.pointwise_kl`),
  and step λ ← Proj_Δ(λ + η_k KL) (:class:`cda_lite.constraints.SimplexDual`).
- :func:`and_dual_only` — **Algorithm 3**. No primal model: sample with ε = Σ_i λ_i ε_i through the
  DDPM chain, estimate each KL by Lemma 2 between that surrogate and expert i on the samples, step λ.
  Σ λ_i s_i is not the product's score at t > 0 unless the experts share one covariance, so with
  unequal covariances its fixed point is not λ* (Chapter 5 measures by how much).

OR (Theorem 5): min_p max_i CE(q_i, p), the cross-entropy (negative ELBO) of the model on each
expert's data. Its Lagrangian Σ λ_i CE(q_i, p) = CE(Σ λ_i q_i, p) is minimised by the mixture
Σ λ_i q_i, and the dual is the mixture's entropy, so λ* = argmax_λ H(Σ λ_i q_i).

- :func:`elbo_loss` — a diffusion model's cross-entropy on data up to a constant shared by all data
  sets: the denoising loss with Lemma 2's weights β_t/(2(1−ᾱ_t)) plus the prior term.
- :func:`or_primal_dual` — train a mixture model by DSM on data drawn from Σ λ_i q_i, step λ by
  the per-expert losses. :func:`or_dual_exact` — the same dual with the exact mixture as primal.

Every algorithm is a generator of :class:`ComposeRound` (a chapter can plot as it runs);
:func:`run_rounds` collects a :class:`ComposeResult`. Chapters 5 and 6; ``python -m cda_lite.bench
compose2d``; ``python -m cda_lite.bench.reproduce fig1|fig2``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from scipy.optimize import brentq

from cda_lite.constraints import SimplexDual
from cda_lite.exact.product import GaussianProduct, GridProduct, gaussian_kl
from cda_lite.exact.simplex import check_experts, simplex_solve
from cda_lite.gmm import GaussianMixture
from cda_lite.kl import lemma2_weights, pointwise_kl
from cda_lite.langevin import annealed_langevin, denoise_from, langevin_levels, score_from_eps
from cda_lite.models import ExactEps, LinearCombinationEps, MLPEps
from cda_lite.sampling import Chain, batch_shape, mean_eps_coefficient, sample, step_sigma
from cda_lite.schedules import Schedule, q_sample
from cda_lite.train import train_dsm


OR_DUAL_LR = 0.4  # OR's default dual step: the losses differ by log-ratios of λ, a scale-free quantity


@dataclass
class ComposeConfig:
    """Settings of Algorithms 2 and 3 and of the OR dual (defaults: the 2-D fast profile)."""

    rounds: int = 8  # dual steps
    dual_lr: float | None = None  # η_0 of SimplexDual; None: AND uses dual_lr_scale / mean(first KLs), OR 0.4
    dual_lr_scale: float = 0.2  # AND with dual_lr=None: η_0 · mean KL at λ = 1/m (scale-free first step)
    dual_decay: float = 0.9  # η_k = η_0 · decay^k (the paper decays the dual step by 0.9)
    average_last: int = 3  # the reported λ is the mean of the last iterates (Polyak averaging)
    n_samples: int = 500  # MCMC particles (Alg. 2), chain samples (Alg. 3), data per expert (OR)
    seed: int = 0
    # Algorithm 2: annealed Langevin with the surrogate score
    langevin_levels: int = 10  # noise levels, geometric in 1 − ᾱ from t = T−1 to t = langevin_t_min
    langevin_steps: int = 10  # Langevin steps per level (the paper's code: 10 × 10)
    langevin_step: str | float = "curvature"  # "curvature", "beta" (h = scale·β_t) or a fixed step
    langevin_step_scale: float = 0.1  # h_t = scale / mean precision ("curvature"); the paper: 2 with "beta"
    langevin_final_steps: int = 60  # Langevin steps at the last level, where the particles settle
    langevin_t_min: int = 0  # last Langevin level; if > 0, DDPM steps with Σλ_i ε_i carry the particles on to
    # t = 0. Use 1 with DSM-trained experts: a network's score at t = 0 is poorly learned (its DSM target has
    # almost no signal there) and Langevin would follow it at full strength. 0 is exact for exact experts.
    # the primal model (Algorithm 2 and OR): an MLPEps trained by DSM, warm-started across rounds
    dsm_steps_first: int = 300  # DSM steps in the first round (from scratch)
    dsm_steps: int = 100  # DSM steps in every later round
    batch_size: int = 256
    model_lr: float = 2e-3
    hidden: int = 128
    layers: int = 3
    # KL / loss estimates
    kl_samples: int = 1000  # samples of the model that are forward-noised for Lemma 2
    kl_source: str = "model"  # Algorithm 2: x0 for Lemma 2 from the fitted model ("model") or the MCMC
    kl_timesteps: int | None = 8  # k random t per sample (unbiased for Lemma 2's sum); None: every t
    weighted: bool = True  # Lemma 2's weights β_t/(2(1−ᾱ_t)); False: the public code's plain ε-MSE sums
    sampler_steps: int | None = None  # Algorithm 3 and model samples: DDPM over every timestep (None)

    def __post_init__(self):
        for name in ("rounds", "n_samples", "langevin_levels", "langevin_steps", "langevin_final_steps",
                     "dsm_steps_first", "batch_size", "kl_samples", "average_last"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.dsm_steps < 0:
            raise ValueError(f"dsm_steps must be ≥ 0, got {self.dsm_steps}")
        if self.dual_lr is not None and not self.dual_lr > 0:
            raise ValueError(f"dual_lr must be > 0 (or None), got {self.dual_lr}")
        if not 0 < self.dual_decay <= 1:
            raise ValueError(f"dual_decay must lie in (0, 1], got {self.dual_decay}")
        if not isinstance(self.langevin_t_min, (int, np.integer)) or self.langevin_t_min < 0:
            raise ValueError(f"langevin_t_min must be an integer ≥ 0, got {self.langevin_t_min!r}")
        if self.kl_source not in ("model", "mcmc"):
            raise ValueError(f"kl_source must be 'model' or 'mcmc', got {self.kl_source!r}")


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


# --------------------------------------------------------------------------- AND: references
def surrogate_eps(models, lam) -> LinearCombinationEps:
    """ε = Σ_i λ_i ε_i: the surrogate product of Algorithm 3 (its score is Σ_i λ_i s_i)."""
    lam = _check_lam(lam, len(models))
    return LinearCombinationEps(models, lam)


def surrogate_score(models, lam, schedule: Schedule):
    """s(x, t) = Σ_i λ_i s_i(x, t), the score Algorithm 2's MCMC follows."""
    return score_from_eps(surrogate_eps(models, lam), schedule)


def product_of_experts(experts, lam):
    """The exact q_AND^λ ∝ ∏ q_i^{λ_i}: a Gaussian (precision Σ λ_i Σ_i⁻¹) when every expert is one
    Gaussian, else a :class:`~cda_lite.grid.GridDensity`."""
    experts = check_experts(experts)
    lam = _check_lam(lam, len(experts))
    fam = _family(experts)
    return fam.target(lam)


def product_kls(experts, lam) -> np.ndarray:
    """KL(q_AND^λ ‖ q_i) for every expert, exactly (closed form or grid)."""
    experts = check_experts(experts)
    return _family(experts).kls(_check_lam(lam, len(experts)))


def surrogate_gaussian(experts, lam, alpha_bar: float) -> GaussianMixture:
    """The Gaussian whose score is Σ λ_i ∇log q_{i,t}: the product of the *noised* experts
    ∏ N(√ᾱ μ_i, ᾱΣ_i + (1−ᾱ)I)^{λ_i}. It equals the noised product q_AND,t at ᾱ = 1, and at every
    ᾱ when the Σ_i are equal; otherwise it is a different Gaussian (Chapter 5)."""
    experts = check_experts(experts)
    if any(e.n_components != 1 for e in experts):
        raise ValueError("experts: surrogate_gaussian needs single-Gaussian experts")
    noised = [e.noised(alpha_bar) for e in experts]
    return GaussianProduct(noised).target(_check_lam(lam, len(experts)))


class _SurrogateChain:
    """Single-Gaussian experts' affine ε maps ε_i(x, t) = A_i x + b_i along a DDIM(η) chain,
    precomputed once so that the output law for any λ is a cheap linear-Gaussian recursion."""

    def __init__(self, experts, schedule: Schedule, steps: int | None, eta: float):
        if any(e.n_components != 1 for e in experts):
            raise ValueError("experts: the surrogate chain's law is closed-form only for single-Gaussian experts")
        d = experts[0].dim
        self.d = d
        chain = Chain.make(schedule, steps, eta)
        eye = np.eye(d)
        self.A, self.b, self.scal = [], [], []
        for ab_t, ab_s in zip(chain.ab_t, chain.ab_s):
            # ε_i(x) = √(1−ᾱ) C_i⁻¹ (x − √ᾱ μ_i), C_i = ᾱΣ_i + (1−ᾱ)I
            Ci = np.linalg.inv(ab_t * np.stack([e.covs[0] for e in experts]) + (1 - ab_t) * eye)
            mu = np.stack([e.means[0] for e in experts])
            self.A.append(math.sqrt(1 - ab_t) * Ci)
            self.b.append(-math.sqrt(1 - ab_t) * math.sqrt(ab_t) * np.einsum("ijk,ik->ij", Ci, mu))
            c = mean_eps_coefficient(float(ab_t), float(ab_s), eta)
            sigma = step_sigma(float(ab_t), float(ab_s), eta)
            self.scal.append((math.sqrt(ab_s / ab_t), c, sigma))  # mean = √(ᾱ_s/ᾱ_t) x + c ε

    def output(self, lam) -> GaussianMixture:
        eye = np.eye(self.d)
        mean, cov = np.zeros(self.d), eye.copy()
        for A, b, (a, c, sigma) in zip(self.A, self.b, self.scal):
            M = a * eye + c * np.einsum("i,ijk->jk", lam, A)
            mean = M @ mean + c * (lam @ b)
            cov = M @ cov @ M.T + sigma**2 * eye
        return GaussianMixture.gaussian(mean, (cov + cov.T) / 2)


def surrogate_chain_gaussian(experts, lam, schedule: Schedule, steps: int | None = None,
                             eta: float = 1.0) -> GaussianMixture:
    """The exact law of what Algorithm 3 samples: the DDIM(η) chain (η = 1, every step: DDPM) driven by
    ε = Σ λ_i ε_i from x_T ~ N(0, I), for single-Gaussian experts. Every ε_i is affine in x, so the
    chain stays Gaussian; its mean and covariance are propagated step by step (no sampling)."""
    experts = check_experts(experts)
    return _SurrogateChain(experts, schedule, steps, eta).output(_check_lam(lam, len(experts)))


def surrogate_fixed_point(experts, schedule: Schedule, steps: int | None = None, eta: float = 1.0):
    """Where Algorithm 3 settles when its KLs are exact: the λ on the simplex at which the surrogate
    chain's output (:func:`surrogate_chain_gaussian`) is equally far, in KL, from every active expert.
    Returns ``(lam, kls)``. Equals λ* when the experts share one covariance (Chapter 5)."""
    experts = check_experts(experts)
    chain = _SurrogateChain(experts, schedule, steps, eta)

    def kls(lam):
        out = chain.output(np.clip(lam, 0, None) / np.clip(lam, 0, None).sum())
        return np.array([gaussian_kl(out.means[0], out.covs[0], e.means[0], e.covs[0]) for e in experts])

    if len(experts) == 2:  # one unknown: the root of KL_1 − KL_2 on (0, 1), if it changes sign
        gap = lambda a: float(np.subtract(*kls(np.array([a, 1 - a]))))
        lo, hi = 1e-9, 1 - 1e-9
        if gap(lo) * gap(hi) < 0:
            a = brentq(gap, lo, hi, xtol=1e-12)
            lam = np.array([a, 1 - a])
            return lam, kls(lam)
    lam = simplex_solve(lambda l: float(np.max(kls(l))), kls, len(experts))
    return lam, kls(lam)


def _family(experts):
    return GaussianProduct(experts) if all(e.n_components == 1 for e in experts) else GridProduct(experts)


def _check_lam(lam, m: int) -> np.ndarray:
    lam = np.asarray(lam, dtype=float)
    if lam.shape != (m,) or not np.all(np.isfinite(lam)):
        raise ValueError(f"lam: expected {m} finite weights, got {lam.tolist()}")
    if np.any(lam < 0) or abs(lam.sum() - 1) > 1e-6:
        raise ValueError(f"lam: weights must lie on the simplex (non-negative, sum 1), got {lam.tolist()}")
    return lam


def _check_models(models):
    models = list(models)
    if len(models) < 2:
        raise ValueError(f"experts: need at least 2 ε-models to compose, got {len(models)}")
    for i, m in enumerate(models):
        if not callable(m):
            raise ValueError(f"experts[{i}]: expected an ε-model eps(x, t), got {type(m).__name__}")
    return models


def _dual(m: int, config: ComposeConfig, first_values, default_lr) -> SimplexDual:
    lr = config.dual_lr if config.dual_lr is not None else default_lr(np.asarray(first_values))
    return SimplexDual(m, lr=float(lr), decay=config.dual_decay)


def _and_default_lr(config):
    return lambda g: config.dual_lr_scale / max(float(np.mean(g)), 1e-6)


# --------------------------------------------------------------------------- AND: Algorithm 2
def sample_product_mcmc(models, lam, schedule: Schedule, shape, config: ComposeConfig | None = None,
                        seed: int = 0) -> torch.Tensor:
    """Samples of q_AND^λ for Algorithm 2: annealed Langevin with Σ λ_i s_i over ``langevin_levels``
    noise levels from t = T−1 down to ``langevin_t_min``, then (if t_min > 0) DDPM steps with
    ε = Σ λ_i ε_i down to t = 0 (:func:`cda_lite.langevin.denoise_from`)."""
    config = config or ComposeConfig()
    eps = surrogate_eps(models, lam)
    levels = langevin_levels(schedule, config.langevin_levels, t_min=config.langevin_t_min)
    x = annealed_langevin(score_from_eps(eps, schedule), schedule, shape, levels=levels,
                          steps_per_level=config.langevin_steps, step=config.langevin_step,
                          step_scale=config.langevin_step_scale, final_steps=config.langevin_final_steps, seed=seed)
    if config.langevin_t_min > 0:
        x = denoise_from(eps, schedule, x, config.langevin_t_min, seed=seed + 1)
    return x


def and_primal_dual(experts, schedule: Schedule, config: ComposeConfig | None = None, dim: int | tuple = 2,
                    model: torch.nn.Module | None = None) -> Iterator[ComposeRound]:
    """Algorithm 2 (primal-dual AND composition) over ε-models ``experts``; yields every round.

    ``model`` is the primal ε-network (default: a fresh MLPEps, for vector data); it is trained in place
    by DSM on the MCMC samples of q_AND^λ, warm-started from the previous round. ``dim``: the size of
    one sample or its shape (images need an explicit ``model``).
    """
    config = config or ComposeConfig()
    experts = _check_models(experts)
    m = len(experts)
    gen_seed = config.seed
    if model is None and not isinstance(dim, (int, np.integer)):
        raise ValueError(f"model: the default MLPEps takes vectors; pass a model for samples of shape {dim}")
    if model is None:
        torch.manual_seed(gen_seed)
        model = MLPEps(schedule.T, dim=dim, hidden=config.hidden, layers=config.layers)
    lam = np.full(m, 1.0 / m)
    dual = None
    for k in range(config.rounds):
        x_mcmc = sample_product_mcmc(experts, lam, schedule, batch_shape(config.n_samples, dim), config,
                                     seed=gen_seed + 1000 * k)
        if not torch.isfinite(x_mcmc).all():
            raise FloatingPointError(f"annealed Langevin diverged in round {k}; lower langevin_step_scale")
        steps = config.dsm_steps_first if k == 0 else config.dsm_steps
        for _ in train_dsm(model, x_mcmc, schedule, steps=steps, batch_size=config.batch_size,
                           lr=config.model_lr, seed=gen_seed + 1000 * k + 1):
            pass
        model.eval()
        if config.kl_source == "model":
            x0 = sample(model, schedule, batch_shape(config.kl_samples, dim), steps=config.sampler_steps,
                        eta=1.0, seed=gen_seed + 1000 * k + 2)
        else:
            x0 = x_mcmc[: config.kl_samples]
        kls = np.array([pointwise_kl(model, e, schedule, x0, weighted=config.weighted, n_t=config.kl_timesteps,
                                     seed=gen_seed + k) for e in experts])
        if dual is None:
            dual = _dual(m, config, kls, _and_default_lr(config))
        lam_next = dual.update(kls)
        yield ComposeRound(k, lam, kls, lam_next, x_mcmc.double().numpy(), model)
        lam = lam_next


# --------------------------------------------------------------------------- AND: Algorithm 3
def surrogate_kls(experts, lam, schedule: Schedule, config: ComposeConfig | None = None, dim: int | tuple = 2,
                  sample_seed: int = 0, kl_seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """One evaluation of Algorithm 3 at a given λ (no dual step): ``config.n_samples`` samples of the
    surrogate ε = Σ λ_i ε_i through the DDPM chain and Lemma 2's KL(surrogate ‖ q_i) for every expert on
    them. Returns ``(kls, samples)``. Chapter 9 evaluates equal and learned weights with it."""
    config = config or ComposeConfig()
    experts = _check_models(experts)
    eps = surrogate_eps(experts, lam)
    x0 = sample(eps, schedule, batch_shape(config.n_samples, dim), steps=config.sampler_steps, eta=1.0,
                seed=sample_seed)
    kls = np.array([pointwise_kl(eps, e, schedule, x0, weighted=config.weighted, n_t=config.kl_timesteps,
                                 seed=kl_seed) for e in experts])
    return kls, x0


def and_dual_only(experts, schedule: Schedule, config: ComposeConfig | None = None,
                  dim: int | tuple = 2) -> Iterator[ComposeRound]:
    """Algorithm 3 (dual-only AND composition): sample the surrogate ε = Σ λ_i ε_i through the DDPM
    chain, estimate KL(surrogate ‖ q_i) by Lemma 2 on its forward-noised samples, step λ.
    ``dim``: the size of one sample or its shape, e.g. (1, 8, 8) for the digits of Chapter 9."""
    config = config or ComposeConfig()
    experts = _check_models(experts)
    m = len(experts)
    lam = np.full(m, 1.0 / m)
    dual = None
    for k in range(config.rounds):
        kls, x0 = surrogate_kls(experts, lam, schedule, config, dim, sample_seed=config.seed + 1000 * k,
                                kl_seed=config.seed + k)
        if dual is None:
            dual = _dual(m, config, kls, _and_default_lr(config))
        lam_next = dual.update(kls)
        yield ComposeRound(k, lam, kls, lam_next, x0.double().numpy(), None)
        lam = lam_next


# --------------------------------------------------------------------------- OR
@torch.no_grad()
def elbo_loss(model, x0, schedule: Schedule, weighted: bool = True, seed: int = 0, batch: int = 8192) -> float:
    """The model's negative ELBO on data ``x0`` up to a constant that does not depend on the data:

        Σ_t w_t E‖ε_θ(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t) − ε‖² + ½ ᾱ_{T−1} E‖x₀‖²,

    w_t = β_t/(2(1−ᾱ_t)) (Lemma 2's weights; the KL–Fisher identity makes the weighted denoising loss
    equal CE(q, p) + const), the last term from the prior KL(q(x_T | x₀) ‖ N(0, I)). ``weighted=False``
    uses w_t = 1 (a plain ε-MSE sum, not a cross-entropy). The same ``seed`` gives the same noise for
    every data set of equal size (common random numbers make differences between experts precise).
    """
    x0 = torch.as_tensor(np.asarray(x0) if not isinstance(x0, torch.Tensor) else x0).float()
    if x0.ndim < 2 or len(x0) == 0:
        raise ValueError(f"x0: expected (n, ...) samples, got shape {tuple(x0.shape)}")
    gen = torch.Generator().manual_seed(seed)
    w = lemma2_weights(schedule) if weighted else np.ones(schedule.T)
    total = 0.0
    n = len(x0)
    for t in range(schedule.T):
        acc = 0.0
        for s in range(0, n, batch):
            xb = x0[s:s + batch]
            noise = torch.randn(xb.shape, generator=gen)
            xt = q_sample(xb, t, noise, schedule)
            acc += float(((model(xt, t) - noise) ** 2).sum())
        total += w[t] * acc / n
    if weighted:
        total += 0.5 * float(schedule.alphas_cumprod[-1]) * float((x0.double() ** 2).flatten(1).sum(1).mean())
    return float(total)


def _as_data(data, name):
    arr = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data).float()
    if arr.ndim != 2 or len(arr) < 2 or not torch.isfinite(arr).all():
        raise ValueError(f"{name}: expected a finite (n, d) array of samples, got shape {tuple(arr.shape)}")
    return arr


def or_primal_dual(expert_data, schedule: Schedule, config: ComposeConfig | None = None,
                   model: torch.nn.Module | None = None) -> Iterator[ComposeRound]:
    """OR composition, primal-dual: each round trains the mixture model by DSM on data of Σ λ_i q_i
    (expert i's samples drawn with probability λ_i), evaluates its :func:`elbo_loss` on each expert's
    data and steps λ ← Proj_Δ(λ + η_k · losses). ``expert_data`` is a list of (n_i, d) samples of q_i."""
    config = config or ComposeConfig()
    pools = [_as_data(d, f"expert_data[{i}]") for i, d in enumerate(expert_data)]
    if len(pools) < 2:
        raise ValueError(f"expert_data: need at least 2 experts, got {len(pools)}")
    dim = pools[0].shape[1]
    if any(p.shape[1] != dim for p in pools):
        raise ValueError("expert_data: all experts' samples must have the same dimension")
    m = len(pools)
    evals = [p[: config.n_samples] for p in pools]
    k_eval = min(len(e) for e in evals)
    evals = [e[:k_eval] for e in evals]
    if model is None:
        torch.manual_seed(config.seed)
        model = MLPEps(schedule.T, dim=dim, hidden=config.hidden, layers=config.layers)
    lam = np.full(m, 1.0 / m)
    dual = SimplexDual(m, lr=config.dual_lr if config.dual_lr is not None else OR_DUAL_LR, decay=config.dual_decay)
    for k in range(config.rounds):
        probs = torch.as_tensor(lam, dtype=torch.float64)

        def data(n, gen, probs=probs):
            which = torch.multinomial(probs, n, replacement=True, generator=gen)
            out = torch.empty(n, dim)
            for i, pool in enumerate(pools):
                idx = (which == i).nonzero().flatten()
                if len(idx):
                    out[idx] = pool[torch.randint(0, len(pool), (len(idx),), generator=gen)]
            return out

        steps = config.dsm_steps_first if k == 0 else config.dsm_steps
        for _ in train_dsm(model, data, schedule, steps=steps, batch_size=config.batch_size, lr=config.model_lr,
                           seed=config.seed + 1000 * k + 1):
            pass
        model.eval()
        losses = np.array([elbo_loss(model, e, schedule, weighted=config.weighted, seed=config.seed + 7)
                           for e in evals])
        lam_next = dual.update(losses)
        x = sample(model, schedule, (config.kl_samples, dim), steps=config.sampler_steps, eta=1.0,
                   seed=config.seed + 1000 * k + 2)
        yield ComposeRound(k, lam, losses, lam_next, x.double().numpy(), model)
        lam = lam_next


def or_dual_exact(experts, schedule: Schedule, config: ComposeConfig | None = None) -> Iterator[ComposeRound]:
    """The OR dual with the primal solved exactly: the model is the exact mixture Σ λ_i q_i
    (:class:`~cda_lite.models.ExactEps`), its :func:`elbo_loss` is evaluated on exact samples of each
    expert, and λ steps as in :func:`or_primal_dual`. Checks the dual and the loss against
    :func:`cda_lite.exact.mixture_dual` without any training."""
    config = config or ComposeConfig()
    experts = check_experts(experts)
    m = len(experts)
    evals = [torch.from_numpy(e.sample(config.n_samples, seed=config.seed + i)).float() for i, e in enumerate(experts)]
    lam = np.full(m, 1.0 / m)
    dual = SimplexDual(m, lr=config.dual_lr if config.dual_lr is not None else OR_DUAL_LR, decay=config.dual_decay)
    for k in range(config.rounds):
        model = ExactEps(GaussianMixture.mixture_of(experts, lam), schedule)
        losses = np.array([elbo_loss(model, e, schedule, weighted=config.weighted, seed=config.seed + 7)
                           for e in evals])
        lam_next = dual.update(losses)
        yield ComposeRound(k, lam, losses, lam_next, np.empty((0, experts[0].dim)), model)
        lam = lam_next
