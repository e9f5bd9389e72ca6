"""DAS — Diffusion Alignment as Sampling (Kim, Kim & Park, ICLR 2025, arXiv 2501.05803).

Training-free alignment: N particles run the pretrained reverse chain p_θ and are reweighted and
resampled (sequential Monte Carlo) towards the tilted target

    p_θ(x₀) e^{r(x₀)/α} / Z.

Intermediate targets at each visited x_t use Tweedie's look-ahead reward r(x̂₀(x_t)) tempered by
λ_k, rising from 0 (noise end) to 1. The proposal is the pretrained step shifted along the reward
gradient, ::

    m(x'|x) = N(μ_θ(x) + σ_t² λ_{k+1} ∇_x r(x̂₀(x))/α, σ_t²),

and the incremental log-weight of a move x → x' is ::

    log p_θ(x'|x) − log m(x'|x) + λ_{k+1} r(x̂₀(x'))/α − λ_k r(x̂₀(x))/α,

with the exact r(x₀) at λ = 1 in the last one, so the target never changes. Particles are
resampled (systematically) when ESS < 0.5 N and at the end: :func:`das` returns equally weighted
samples of the target — not the arg-max particle. Chapter 7.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cda_lite.inference.common import check_alpha, lookahead, model_dtype, new_generator, step_sigma
from cda_lite.inference.smc import ess, flat_indices, normalize_log_weights, systematic_resample
from cda_lite.sampling import Chain, batch_shape, step_mean_std

TEMPERINGS = ("exp", "poly", "adaptive", "none")


# --------------------------------------------------------------------------- tempering
def exponential_tempering(steps: int, gamma: float | None = None) -> np.ndarray:
    """DAS's default λ_k = min((1+γ)^k − 1, 1), k = 0..steps (λ_steps = 1 is the exact final reward).

    ``gamma=None`` picks γ = 2^{1/(0.87·steps)} − 1, so that λ reaches 1 at 87 % of the chain: this
    is the paper's γ = 0.008 for 100 steps, and scales to other step counts.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if gamma is None:
        gamma = 2.0 ** (1.0 / (0.87 * steps)) - 1.0
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    lam = np.minimum((1.0 + gamma) ** np.arange(steps + 1) - 1.0, 1.0)
    lam[-1] = 1.0
    return lam


def polynomial_tempering(steps: int, power: float = 1.0) -> np.ndarray:
    """λ_k = (k/steps)^power, k = 0..steps."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not power > 0:
        raise ValueError(f"power must be > 0, got {power}")
    return (np.arange(steps + 1) / steps) ** power


def adaptive_next_lambda(log_w: np.ndarray, R: np.ndarray, lam: np.ndarray, target: float,
                         iters: int = 50) -> np.ndarray:
    """The largest λ' ∈ [λ, 1] (per group) with ESS(w·e^{(λ'−λ)R}) ≥ target·ESS(w), by bisection.

    ``log_w`` and ``R`` (look-ahead rewards / α) have shape (G, N), ``lam`` shape (G,). The move's
    own weight factor is not known before the move, so the next temperature is chosen on the
    current particles (adaptive tempering, e.g. Jasra et al. 2011).
    """
    base = ess(log_w)

    def ok(l_new):
        return ess(log_w + (l_new - lam)[:, None] * R) >= target * base - 1e-9

    lo, hi = lam.copy(), np.ones_like(lam)
    done = ok(hi)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        good = ok(mid)
        lo = np.where(good, mid, lo)
        hi = np.where(good, hi, mid)
    return np.where(done, 1.0, lo)


# --------------------------------------------------------------------------- sampler
@dataclass
class SMCResult:
    """Output of an SMC sampler (DAS or the corrected blend).

    - x : (G·N, d) resampled particles with equal weights (G independent runs of N particles, run-major).
    - ess : (updates, G) ESS after each weight update, before the resampling decision (DAS: one per
      step plus the final reward, steps + 1; the corrected blend: one per stochastic step plus one).
    - lambdas : (steps + 1, G) temperature at each visited x_t (last row: x₀, λ = 1); None for blends.
    - resampled : (updates, G) whether that update triggered resampling (the last row always does).
    - log_weights : (G, N) normalised log-weights just before the final resampling.
    - nfe : forward + backward ε-network evaluations per particle.
    """

    x: torch.Tensor
    ess: np.ndarray
    lambdas: np.ndarray | None
    resampled: np.ndarray
    log_weights: np.ndarray
    nfe: int
    groups: int = 1

    @property
    def n_resamples(self) -> np.ndarray:
        """Resampling events per run, not counting the final one."""
        return self.resampled[:-1].sum(0)


def _tempering_table(tempering, steps, gamma, power):
    if tempering == "exp":
        return exponential_tempering(steps, gamma)
    if tempering == "poly":
        return polynomial_tempering(steps, power)
    if tempering == "none":  # the full reward at every step (no tempering)
        lam = np.ones(steps + 1)
        lam[0] = 0.0
        return lam
    return None


def das(
    eps_model,
    reward,
    schedule,
    n: int,
    alpha: float = 1.0,
    steps: int | None = None,
    eta: float = 1.0,
    tempering: str = "exp",
    gamma: float | None = None,
    power: float = 1.0,
    ess_target: float = 0.5,
    resample_threshold: float = 0.5,
    use_gradient: bool = True,
    groups: int = 1,
    dim: int | tuple = 2,
    seed: int | None = 0,
    spacing: str = "trailing",
    progress: bool = False,
) -> SMCResult:
    """Sample p_θ(x₀)·e^{r(x₀)/α} with DAS (SMC over the reverse chain of ``eps_model``).

    Parameters
    ----------
    eps_model : any ε-model ``eps(x, t)`` (exact or a network); differentiated by autograd.
    reward : callable on torch (n, d) → (n,), differentiable (e.g. :class:`~cda_lite.exact.QuadraticReward`).
    dim : the size of one sample (an int) or its shape, e.g. (1, 8, 8) for digit images.
    n : particles per run; ``groups`` independent runs go side by side (output has groups·n rows).
    tempering : ``"exp"`` (γ, see :func:`exponential_tempering`), ``"poly"`` (``power``),
        ``"adaptive"`` (the largest next λ, by bisection, that keeps the ESS at ≥ ``ess_target`` times
        its current value; :func:`adaptive_next_lambda`),
        or ``"none"`` (λ = 1 from the first move).
    use_gradient : False drops the reward-gradient shift (the proposal is then the pretrained step).
    resample_threshold : resample when ESS < threshold·n (systematic resampling).
    """
    alpha = check_alpha(alpha)
    if tempering not in TEMPERINGS:
        raise ValueError(f"tempering must be one of {TEMPERINGS}, got {tempering!r}")
    if int(n) < 1 or int(groups) < 1:
        raise ValueError(f"n and groups must be >= 1, got n={n}, groups={groups}")
    if not 0 < ess_target <= 1:
        raise ValueError(f"ess_target must lie in (0, 1], got {ess_target}")
    if not 0 <= resample_threshold <= 1:
        raise ValueError(f"resample_threshold must lie in [0, 1], got {resample_threshold}")
    n, G = int(n), int(groups)
    chain = Chain.make(schedule, steps, eta, spacing)
    K = len(chain)
    table = _tempering_table(tempering, K, gamma, power)
    gen = new_generator(seed)
    rng = np.random.default_rng(None if seed is None else int(seed) + 7919)
    dtype = model_dtype(eps_model)
    x = torch.randn(batch_shape(G * n, dim), generator=gen, dtype=dtype)
    bcast = (1,) * (x.ndim - 1)

    log_w = np.zeros((G, n))
    lam = np.zeros(G) if table is None else np.full(G, table[0])
    lam_prev, R_prev, log_ratio = lam.copy(), None, np.zeros((G, n))
    ess_trace, lam_trace, res_trace = [], [], []
    nfe = 0

    def per_particle(v):  # (G,) → (G·n, 1, …) torch, broadcastable against x
        return torch.as_tensor(np.repeat(v, n), dtype=dtype).view(-1, *bcast)

    for k, t, ab_t, ab_s in chain.steps(progress, "DAS"):
        sigma = step_sigma(ab_t, ab_s, chain.eta)
        need_grad = use_gradient and sigma > 0
        eps, R, g = lookahead(eps_model, reward, x, t, ab_t, alpha, need_grad)
        nfe += 1 + int(need_grad)
        R_np = R.double().numpy().reshape(G, n)
        # weight of the move that brought the particles here (intermediate target at λ_k)
        if R_prev is None:
            log_w = log_w + lam[:, None] * R_np
        else:
            log_w = log_w + log_ratio + lam[:, None] * R_np - lam_prev[:, None] * R_prev
        log_w = normalize_log_weights(log_w)
        e = ess(log_w)
        do = e < resample_threshold * n
        ess_trace.append(e)
        lam_trace.append(lam.copy())
        res_trace.append(do)
        if do.any():
            idx = np.tile(np.arange(n), (G, 1))
            idx[do] = systematic_resample(np.exp(log_w[do]), rng)
            flat = torch.as_tensor(flat_indices(idx))
            x, eps = x[flat], eps[flat]
            g = g[flat] if g is not None else None
            R_np = np.take_along_axis(R_np, idx, axis=1)
            log_w[do] = -math.log(n)
        # next temperature
        if k == K - 1:
            lam_next = np.ones(G)
        elif table is None:
            lam_next = adaptive_next_lambda(log_w, R_np, lam, ess_target)
        else:
            lam_next = np.full(G, table[k + 1])
        # move: pretrained step shifted by σ² λ_{k+1} ∇ r(x̂₀)/α
        mean, sigma = step_mean_std(x, eps, ab_t, ab_s, chain.eta)
        if sigma > 0:
            z = torch.randn(x.shape, generator=gen, dtype=dtype)
            shift = sigma**2 * per_particle(lam_next) * g if g is not None else torch.zeros_like(mean)
            x = mean + shift + sigma * z
            # log N(x'; μ, σ²) − log N(x'; μ + shift, σ²)
            lr = ((sigma * z) ** 2).flatten(1).sum(1) - ((shift + sigma * z) ** 2).flatten(1).sum(1)
            log_ratio = (lr / (2 * sigma**2)).double().numpy().reshape(G, n)
        else:
            x = mean
            log_ratio = np.zeros((G, n))
        lam_prev, lam, R_prev = lam, lam_next, R_np

    # final target: exact reward at λ = 1
    with torch.no_grad():
        R0 = (reward(x) / alpha).double().numpy().reshape(G, n)
    log_w = normalize_log_weights(log_w + log_ratio + R0 - lam_prev[:, None] * R_prev)
    ess_trace.append(ess(log_w))
    lam_trace.append(np.ones(G))
    res_trace.append(np.ones(G, bool))
    idx = systematic_resample(np.exp(log_w), rng)
    x = x[torch.as_tensor(flat_indices(idx))]
    return SMCResult(x.detach(), np.array(ess_trace).reshape(K + 1, G), np.array(lam_trace).reshape(K + 1, G),
                     np.array(res_trace).reshape(K + 1, G), log_w, nfe, G)
