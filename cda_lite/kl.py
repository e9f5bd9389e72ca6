"""KL divergences between diffusion models.

- **Path-wise KL (Lemma 1)**: between the sampling chains of two ε-models that share a schedule and
  a stochastic sampler (σ_t > 0). Each step's transition is Gaussian with mean a·x_t + c·ε̂, so

      KL(p_{0:T} ‖ q_{0:T}) = Σ_t E_{x_t ∼ p} [ c_t² / (2σ_t²) ‖ε_p(x_t, t) − ε_q(x_t, t)‖² ],

  taken along p's own trajectories. It is the regulariser of constrained alignment (Chapter 4).
- **Point-wise KL (Lemma 2)**: between the final laws of two models with (near-)exact scores,

      KL(p₀ ‖ q₀) ≈ Σ_t β_t / (2(1−ᾱ_t)) E_{x_t} ‖ε_p(x_t, t) − ε_q(x_t, t)‖²,

  with x_t forward-noised samples of p₀ (error O(1/T)). It measures the composed model's distance to
  each expert (Chapters 5, 6). The public code drops the weights; :func:`pointwise_kl` offers that
  variant (``weighted=False``) so the book can show what it costs.
- :func:`gaussian_chain_kl`: the exact path-wise KL between two linear-Gaussian chains, the ground
  truth that the estimators are validated against.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from cda_lite._checks import InputError, check_finite
from cda_lite.sampling import Chain, mean_eps_coefficient, step_mean_std, step_sigma
from cda_lite.schedules import Schedule, q_sample


def pathwise_weights(chain: Chain) -> np.ndarray:
    """c_t² / (2σ_t²) per step of the chain (inf-free: steps with σ = 0 get weight 0 and must not differ)."""
    w = []
    for ab_t, ab_s in zip(chain.ab_t, chain.ab_s):
        sigma = step_sigma(float(ab_t), float(ab_s), chain.eta)
        c = mean_eps_coefficient(float(ab_t), float(ab_s), chain.eta)
        w.append(c * c / (2 * sigma * sigma) if sigma > 0 else 0.0)
    return np.array(w)


def pathwise_noise_coefficients(chain: Chain) -> np.ndarray:
    """c_t / σ_t per step (0 where σ = 0): the realised log-likelihood ratio of a path adds
    (c_t/σ_t)(ε_p − ε_q)·z_t to each step's KL term, z_t the step's noise
    (:func:`cda_lite.differentiable.sample_differentiable` with ``log_ratio=True``)."""
    out = []
    for ab_t, ab_s in zip(chain.ab_t, chain.ab_s):
        sigma = step_sigma(float(ab_t), float(ab_s), chain.eta)
        out.append(mean_eps_coefficient(float(ab_t), float(ab_s), chain.eta) / sigma if sigma > 0 else 0.0)
    return np.array(out)


def pathwise_kl_step(eps_p: torch.Tensor, eps_q: torch.Tensor, weight: float) -> torch.Tensor:
    """One step's Gaussian KL per sample: weight · ‖ε_p − ε_q‖² summed over data dimensions."""
    return weight * ((eps_p - eps_q) ** 2).flatten(1).sum(1)


@torch.no_grad()
def pathwise_kl(model_p, model_q, chain: Chain, shape, seed: int = 0,
                dtype: torch.dtype = torch.float64) -> tuple[float, float]:
    """Monte-Carlo estimate (mean, standard error) of Lemma 1's path-wise KL(p ‖ q) along p's chain.

    The last step of a chain ending at ᾱ = 1 is deterministic (σ = 0) and contributes nothing; both
    chains must use the same σ_t (same schedule, steps and η > 0). ``dtype`` is the dtype the models
    are called with (float32 for networks trained in float32); the sums are kept in float64.
    """
    if not chain.stochastic:
        raise ValueError("the path-wise KL needs a stochastic sampler (eta > 0)")
    if len(shape) < 2 or shape[0] < 2:
        raise InputError(f"shape: expected (n, ...) with n ≥ 2 samples (a mean and its standard error), got {tuple(shape)}")
    weights = pathwise_weights(chain)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    total = torch.zeros(shape[0], dtype=torch.float64)
    for i, t in enumerate(chain.ts):
        ep = model_p(x.to(dtype), int(t)).double()
        eq = model_q(x.to(dtype), int(t)).double()
        total += pathwise_kl_step(ep, eq, weights[i])
        mean, sigma = step_mean_std(x, ep, float(chain.ab_t[i]), float(chain.ab_s[i]), chain.eta)
        x = mean + sigma * torch.randn(shape, generator=gen, dtype=torch.float64) if sigma > 0 else mean
    return float(total.mean()), float(total.std() / math.sqrt(shape[0]))


def gaussian_chain_kl(p, q, chain: Chain) -> float:
    """Exact path-wise KL between the DDIM(η) chains of two Gaussian models N(μ_p, Σ_p), N(μ_q, Σ_q).

    Both exact ε's are affine in x (ε(x, t) = A_t x + b_t), so x_t under p's chain stays Gaussian and
    every step's expected ‖Δε‖² is a closed form of its mean and covariance. ``p`` and ``q`` are
    single-component GaussianMixtures.
    """
    d = p.dim
    I = np.eye(d)

    def affine_eps(g, ab):
        # ε* = −√(1−ab)·score, score = −C⁻¹(x − √ab μ) with C = ab Σ + (1−ab) I
        C = ab * g.covs[0] + (1 - ab) * I
        Ci = np.linalg.inv(C)
        return math.sqrt(1 - ab) * Ci, -math.sqrt(1 - ab) * Ci @ (math.sqrt(ab) * g.means[0])

    m, S = np.zeros(d), np.eye(d)  # x_T ~ N(0, I)
    total = 0.0
    for ab_t, ab_s in zip(chain.ab_t, chain.ab_s):
        Ap, bp = affine_eps(p, ab_t)
        Aq, bq = affine_eps(q, ab_t)
        sigma = step_sigma(float(ab_t), float(ab_s), chain.eta)
        c = mean_eps_coefficient(float(ab_t), float(ab_s), chain.eta)
        if sigma > 0:
            dA, db = Ap - Aq, bp - bq
            mean_diff = dA @ m + db
            total += c * c / (2 * sigma * sigma) * (mean_diff @ mean_diff + np.trace(dA @ S @ dA.T))
        a = 1 / math.sqrt(ab_t) * math.sqrt(ab_s)  # coefficient of x in the mean
        M = a * I + c * Ap
        m = M @ m + c * bp
        S = M @ S @ M.T + sigma * sigma * I
    return float(total)


def lemma2_weights(schedule: Schedule) -> np.ndarray:
    """β_t / (2(1−ᾱ_t)) for t = 0..T−1 (Lemma 2's per-step weights on ε-differences)."""
    return schedule.betas / (2 * (1 - schedule.alphas_cumprod))


def log_snr_weights(schedule: Schedule) -> np.ndarray:
    """Weights on ε-differences from the continuous identity KL(p₀‖q₀) = ½∫ E‖ε_p − ε_q‖² d(log SNR)
    (Kingma et al. 2021, VDM), SNR_t = ᾱ_t/(1−ᾱ_t): ½ × the log-SNR width of timestep t's cell, cells
    split at the midpoints of log SNR. The first cell reaches on to SNR = ∞ and the last to SNR = 0,
    where for smooth densities the integrand falls like 1/SNR and like SNR: each tail adds ½ × (the
    integrand at its end), weight ½. To first order in β_t these are Lemma 2's β_t/(2(1−ᾱ_t)); where
    β_t is large (T = 100) the sum of Lemma 2 falls 5–13 % below the KL, this one within 2.5 %."""
    ab = schedule.alphas_cumprod
    L = np.log(ab) - np.log1p(-ab)
    mid = (L[:-1] + L[1:]) / 2
    edges = np.concatenate([[L[0] + 1.0], mid, [L[-1] - 1.0]])  # the tails as one unit of log SNR each
    return 0.5 * (edges[:-1] - edges[1:])


QUADRATURES = {"lemma2": lemma2_weights, "log_snr": log_snr_weights}


def kl_weights(schedule: Schedule, weighted: bool = True, quadrature: str = "lemma2") -> np.ndarray:
    """Per-timestep weights on ε-differences: Lemma 2's (``"lemma2"``), the log-SNR rule
    (``"log_snr"``, :func:`log_snr_weights`), or ones (``weighted=False``: the public code's sums)."""
    if quadrature not in QUADRATURES:
        raise ValueError(f"quadrature: expected one of {sorted(QUADRATURES)}, got {quadrature!r}")
    return QUADRATURES[quadrature](schedule) if weighted else np.ones(schedule.T)


@torch.no_grad()
def denoising_losses(models, schedule: Schedule, x0, n_t: int | None = 8, seed: int = 0,
                     weighted: bool = True, quadrature: str = "lemma2") -> np.ndarray:
    """Each ε-model's Lemma-2-weighted denoising loss on every sample of ``x0``: an (n, m) array
    ℓ_i(x₀) = Σ_t w_t ‖z − ε_i(√ᾱ_t x₀ + √(1−ᾱ_t) z, t)‖², Monte Carlo over (t, z).

    ℓ_i(x₀) is the negative ELBO of x₀ under model i up to a constant (Ho et al. 2020, eq. 5; tight
    for the exact ε in the continuous-time limit): −log q_i(x₀) + c. Its mean over samples of p is
    :func:`denoising_kls`, its covariance across samples :func:`log_density_covariance`. One draw of
    (t, z) per sample is shared by every model (common random numbers). ``n_t``: timesteps drawn per
    sample (None: every t). ``weighted=False``: the public code's unweighted sums; ``quadrature``:
    Lemma 2's weights or the log-SNR rule (:func:`kl_weights`).
    """
    w_np = kl_weights(schedule, weighted, quadrature)
    x0 = torch.as_tensor(np.asarray(x0) if not isinstance(x0, torch.Tensor) else x0)
    if x0.ndim < 2 or x0.shape[0] == 0:
        raise ValueError(f"x0: expected (n, ...) samples with n ≥ 1, got shape {tuple(x0.shape)}")
    check_finite(x0, "x0")
    models = list(models)
    gen = torch.Generator().manual_seed(seed)
    wt = torch.as_tensor(w_np, dtype=x0.dtype)
    n = x0.shape[0]
    # every t once with weight w_t, or n_t draws of one uniform t per sample with weight w_t · T / n_t
    plan = [(t, 1.0) for t in range(schedule.T)] if n_t is None else [(None, schedule.T / n_t)] * n_t
    total = torch.zeros(n, len(models), dtype=torch.float64)
    for t, scale in plan:
        tt = torch.randint(0, schedule.T, (n,), generator=gen) if t is None else t
        z = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        xt = q_sample(x0, tt, z, schedule)
        w = wt[tt] * scale
        for i, m in enumerate(models):
            total[:, i] += (w * ((z - m(xt, tt)) ** 2).flatten(1).sum(1)).double()
    return total.numpy()


def denoising_kls(models, schedule: Schedule, x0, n_t: int | None = 8, seed: int = 0,
                  weighted: bool = True, quadrature: str = "lemma2") -> np.ndarray:
    """Lemma 2's KL(p₀ ‖ q_i) for every ε-model q_i, up to one constant shared by all i, from samples
    ``x0`` of p₀ alone — no model of p.

    With x_t = √ᾱ_t x₀ + √(1−ᾱ_t) z, the noise z is an unbiased target for p's ε, so
    E‖ε_p − ε_i‖² = E‖z − ε_i(x_t)‖² − E‖z − ε_p(x_t)‖², and the last term does not depend on i.
    Hence Σ_t w_t E‖z − ε_i(x_t, t)‖² (w_t of Lemma 2: each expert's weighted denoising loss on p's
    samples, :func:`denoising_losses`) equals Lemma 2's KL_i plus a constant. The differences
    KL_i − KL_j — all a dual step on the simplex uses — come out unbiased, whatever a fitted model of p
    gets wrong. One draw of (t, z) per sample is shared by every expert (common random numbers), so the
    differences have low variance.
    """
    return denoising_losses(models, schedule, x0, n_t, seed, weighted, quadrature).mean(0)


def log_density_covariance(models, schedule: Schedule, x0, n_t: int | None = 8, seed: int = 0,
                           quadrature: str = "lemma2") -> np.ndarray:
    """Cov_p(log q_i, log q_j) over samples ``x0`` of p, for ε-models q_i: an (m, m) matrix.

    −log q_i(x₀) is the per-sample denoising loss ℓ_i(x₀) (:func:`denoising_losses`) up to a constant,
    but one Monte Carlo draw of (t, z) adds its own noise, whose variance would inflate the diagonal.
    Two independent draws ℓ⁽¹⁾, ℓ⁽²⁾ on the same samples have independent noise, so their
    cross-covariance ½(Cov(ℓ⁽¹⁾, ℓ⁽²⁾) + its transpose) is unbiased for Cov_p(log q_i, log q_j). For the
    AND dual D(λ) = −log ∫∏q_i^{λ_i} this is −∇²D at the λ whose product p is (Chapter 5).
    """
    return cross_covariance(denoising_losses(models, schedule, x0, n_t, seed, quadrature=quadrature),
                            denoising_losses(models, schedule, x0, n_t, seed + 1, quadrature=quadrature))


def cross_covariance(a, b) -> np.ndarray:
    """½(Cov(a, b) + Cov(b, a)) of two (n, m) arrays of per-sample values with independent noise."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"a, b: expected two (n, m) arrays with n ≥ 2 of one shape, got {a.shape} and {b.shape}")
    m = a.shape[1]
    c = np.atleast_2d(np.cov(np.concatenate([a, b], 1).T))[:m, m:]
    return (c + c.T) / 2


@torch.no_grad()
def pointwise_kl(model_p, model_q, schedule: Schedule, x0, weighted: bool = True, n_t: int | None = None,
                 seed: int = 0, batch: int = 4096, quadrature: str = "lemma2") -> float:
    """Lemma 2's estimate of KL(p₀ ‖ q₀) from samples ``x0`` of p₀ (forward-noised at each t).

    ``weighted=False`` returns the public code's unweighted Σ_t E‖ε_p − ε_q‖² (not a KL).
    ``n_t`` = None sums over every t; an integer draws that many timesteps uniformly per sample
    (an unbiased estimate of the same sum, cheaper for large T). ``quadrature="log_snr"``: the
    log-SNR weights of :func:`log_snr_weights` instead of Lemma 2's.
    """
    w = kl_weights(schedule, weighted, quadrature)
    x0 = torch.as_tensor(np.asarray(x0) if not isinstance(x0, torch.Tensor) else x0)
    if x0.ndim < 2:
        raise ValueError(f"x0: expected (n, ...) samples, got shape {tuple(x0.shape)}")
    check_finite(x0, "x0")
    gen = torch.Generator().manual_seed(seed)
    wt = torch.as_tensor(w, dtype=x0.dtype)
    total = 0.0
    n = x0.shape[0]
    if n_t is None:
        for t in range(schedule.T):
            acc = 0.0
            for start in range(0, n, batch):
                xb = x0[start:start + batch]
                noise = torch.randn(xb.shape, generator=gen, dtype=xb.dtype)
                xt = q_sample(xb, t, noise, schedule)
                acc += float(((model_p(xt, t) - model_q(xt, t)) ** 2).flatten(1).sum(1).sum())
            total += float(wt[t]) * acc / n
        return total
    for _ in range(n_t):
        t = torch.randint(0, schedule.T, (n,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
        xt = q_sample(x0, t, noise, schedule)
        diff = ((model_p(xt, t) - model_q(xt, t)) ** 2).flatten(1).sum(1)
        total += float((wt[t] * diff).mean()) * schedule.T
    return total / n_t
