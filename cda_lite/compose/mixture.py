"""OR composition (Theorem 5): min_p max_i CE(q_i, p), solved by the mixture Σ λ_i q_i; the diffusion
model's cross-entropy :func:`elbo_loss`, :func:`or_primal_dual` and :func:`or_dual_exact`. Chapter 6."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from cda_lite.constraints import SimplexDual
from cda_lite.exact.simplex import check_experts
from cda_lite.gmm import GaussianMixture
from cda_lite.kl import lemma2_weights
from cda_lite.models import ExactEps, MLPEps
from cda_lite.sampling import sample
from cda_lite.schedules import Schedule, q_sample
from cda_lite.train import train_dsm


from cda_lite.compose.rounds import OR_DUAL_LR, ComposeConfig, ComposeRound


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
