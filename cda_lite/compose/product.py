"""AND composition (Theorem 3): the tilted product q^λ ∝ ∏ q_i^{λ_i}, its closed-form references on
Gaussians, **Algorithm 2** (:func:`and_primal_dual`) and **Algorithm 3** (:func:`and_dual_only`).
Chapter 5."""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from scipy.optimize import brentq

from cda_lite.exact.product import GaussianProduct, GridProduct, gaussian_kl
from cda_lite.exact.simplex import check_experts, simplex_solve
from cda_lite.gmm import GaussianMixture
from cda_lite.kl import cross_covariance, denoising_losses, pointwise_kl
from cda_lite.langevin import annealed_langevin, denoise_from, langevin_levels, score_from_eps
from cda_lite.models import LinearCombinationEps, MLPEps
from cda_lite.sampling import Chain, batch_shape, mean_eps_coefficient, sample, step_sigma
from cda_lite.schedules import Schedule
from cda_lite.train import train_dsm


from cda_lite.compose.rounds import ComposeConfig, ComposeRound, _and_default_lr, _check_lam, _check_models, _dual


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


def product_log_density_cov(experts, lam) -> np.ndarray:
    """Cov(log q_i, log q_j) under q_AND^λ, exactly (closed form or grid): −∇²D(λ) of the AND dual
    D(λ) = −log ∫∏q_i^{λ_i}, whose gradient is (KL(q_AND^λ ‖ q_i))_i up to a shared constant."""
    experts = check_experts(experts)
    return _family(experts).log_density_cov(_check_lam(lam, len(experts)))


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


# --------------------------------------------------------------------------- AND: Algorithm 2
def sample_product_mcmc(models, lam, schedule: Schedule, shape, config: ComposeConfig | None = None,
                        seed: int = 0, snapshots: int = 1) -> torch.Tensor:
    """Samples of q_AND^λ for Algorithm 2: annealed Langevin with Σ λ_i s_i over ``langevin_levels``
    noise levels from t = T−1 down to ``langevin_t_min``, then (if t_min > 0) DDPM steps with
    ε = Σ λ_i ε_i down to t = 0 (:func:`cda_lite.langevin.denoise_from`). ``snapshots`` = k > 1:
    a ``(k, *shape)`` tensor of the chain at k steps of its last level (:func:`annealed_langevin`)."""
    config = config or ComposeConfig()
    eps = surrogate_eps(models, lam)
    levels = langevin_levels(schedule, config.langevin_levels, t_min=config.langevin_t_min)
    x = annealed_langevin(score_from_eps(eps, schedule), schedule, shape, levels=levels,
                          steps_per_level=config.langevin_steps, step=config.langevin_step,
                          step_scale=config.langevin_step_scale, final_steps=config.langevin_final_steps, seed=seed,
                          snapshots=snapshots, precondition=config.langevin_precondition)
    if config.langevin_t_min > 0:
        flat = x.reshape(-1, *x.shape[2:]) if snapshots > 1 else x
        flat = denoise_from(eps, schedule, flat, config.langevin_t_min, seed=seed + 1)
        x = flat.reshape(x.shape)
    return x


def and_primal_dual(experts, schedule: Schedule, config: ComposeConfig | None = None, dim: int | tuple = 2,
                    model: torch.nn.Module | None = None) -> Iterator[ComposeRound]:
    """Algorithm 2 (primal-dual AND composition) over ε-models ``experts``; yields every round.

    ``model`` is the primal ε-network (default: a fresh MLPEps, for vector data); it is trained in place
    by DSM on the MCMC samples of q_AND^λ, warm-started from the previous round. The dual step's KLs
    follow ``config.kl_source``: by default their differences are the experts' denoising losses on the
    MCMC samples (:func:`cda_lite.kl.denoising_kls`), their level Lemma 2 between the model and the
    experts; ``"model"`` is the paper's Lemma 2 on the model's samples throughout. ``dim``: the size of
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
        early = config.n_samples_early is not None and k < config.rounds - config.average_last
        snaps = config.langevin_snapshots
        x_kept = sample_product_mcmc(experts, lam, schedule,
                                     batch_shape(config.n_samples_early if early else config.n_samples, dim), config,
                                     seed=gen_seed + 1000 * k, snapshots=snaps)
        if not torch.isfinite(x_kept).all():
            raise FloatingPointError(f"annealed Langevin diverged in round {k}; lower langevin_step_scale")
        # the refit trains on the final particles; the dual's losses use every snapshot of the chain
        x_mcmc, x_loss = (x_kept[-1], x_kept.flatten(0, 1)) if snaps > 1 else (x_kept, x_kept)
        steps = config.dsm_steps_first if k == 0 else config.dsm_steps
        for _ in train_dsm(model, x_mcmc, schedule, steps=steps, batch_size=config.batch_size,
                           lr=config.model_lr, seed=gen_seed + 1000 * k + 1):
            pass
        model.eval()
        if config.kl_source == "mcmc":
            x0 = x_mcmc[: config.kl_samples]
        else:
            x0 = sample(model, schedule, batch_shape(config.kl_samples, dim), steps=config.sampler_steps,
                        eta=1.0, seed=gen_seed + 1000 * k + 2)
        kls = np.array([pointwise_kl(model, e, schedule, x0, weighted=config.weighted, n_t=config.kl_timesteps,
                                     seed=gen_seed + k, quadrature=config.kl_quadrature) for e in experts])
        hessian = None
        if config.kl_source == "denoising" or config.dual_newton:  # per-sample losses: two independent draws
            losses = [denoising_losses(experts, schedule, x_loss, n_t=config.kl_timesteps, weighted=config.weighted,
                                       quadrature=config.kl_quadrature, seed=gen_seed + 1000 * k + 3 + j)
                      for j in range(2 if config.dual_newton else 1)]
            if config.dual_newton:
                hessian = cross_covariance(*losses)  # Cov(log q_i, log q_j) on the particles
        if config.kl_source == "denoising":  # the differences from the MCMC samples, the level from Lemma 2
            gaps = np.mean([ell.mean(0) for ell in losses], 0)
            kls = gaps - gaps.mean() + kls.mean()
        if dual is None:
            dual = _dual(m, config, kls, _and_default_lr(config), normalizable=True)
        lam_next = dual.update(kls, hessian=hessian)
        yield ComposeRound(k, lam, kls, lam_next, x_mcmc.double().numpy(), model)
        lam = lam_next


def and_dual_exact_kls(experts, config: ComposeConfig | None = None) -> Iterator[ComposeRound]:
    """Algorithm 2's dual (the same :class:`SimplexDual`, first step, decay and rounds) fed the *exact*
    KL(q_AND^λ ‖ q_i) of :func:`product_kls` (and, with ``dual_newton``, the exact curvature
    :func:`product_log_density_cov`) instead of estimates: where its λ lands is what the dual
    schedule alone costs, the first part of Algorithm 2's error (``python -m cda_lite.bench sweep``)."""
    config = config or ComposeConfig()
    experts = check_experts(experts)
    m = len(experts)
    lam, dual = np.full(m, 1.0 / m), None
    for k in range(config.rounds):
        kls = product_kls(experts, lam)
        if dual is None:
            dual = _dual(m, config, kls, _and_default_lr(config), normalizable=True)
        lam_next = dual.update(kls, hessian=product_log_density_cov(experts, lam) if config.dual_newton else None)
        yield ComposeRound(k, lam, kls, lam_next, np.empty((0, experts[0].dim)), None)
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
