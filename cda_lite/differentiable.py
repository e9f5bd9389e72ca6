"""Differentiable sampling with truncated backpropagation (AlignProp-style), and the path-wise KL
accumulated along the same trajectory (Lemma 1). One function for 2-D points, digit images and
SD latents: the ε-model is any ``eps(x, t)``.

Gradient flows only through the last K sampler steps (K fixed, or drawn uniformly from 1..K per
call as in AlignProp); earlier steps run without a graph. Gradient checkpointing recomputes each
network call in the backward pass instead of storing its activations. Chapters 4 and 10.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from cda_lite.kl import pathwise_kl_step, pathwise_noise_coefficients, pathwise_weights
from cda_lite.sampling import Chain, step_mean_std


@dataclass
class DifferentiableSample:
    x0: torch.Tensor  # final samples, with a graph through the last K steps
    kl: torch.Tensor | None  # per-sample path-wise KL to the reference (None without a reference)
    grad_steps: int  # the K actually used
    log_ratio: torch.Tensor | None = None  # per-sample log dP/dP_ref of the path (``log_ratio=True``)


def sample_differentiable(
    eps_model,
    chain: Chain,
    x_T: torch.Tensor,
    ref_model=None,
    grad_steps: int | None = None,
    random_truncation: bool = False,
    generator: torch.Generator | None = None,
    checkpointing: bool = False,
    kl_grad: str = "all",
    deterministic_model=None,
    log_ratio: bool = False,
) -> DifferentiableSample:
    """Run the DDIM(η) chain from ``x_T`` keeping a graph through the last ``grad_steps`` steps.

    ``ref_model`` (frozen) adds the path-wise KL Σ_t c_t²/(2σ_t²)‖ε_θ − ε_ref‖² along the trajectory.
    ``kl_grad="all"`` lets every step's KL term carry gradient to the parameters (x_t detached before
    the truncation point); ``"truncated"`` only the last K steps'. The step noise is drawn from
    ``generator`` in a fixed order, so a run is reproducible.

    ``deterministic_model`` (e.g. the frozen reference) replaces ``eps_model`` on steps with σ = 0
    (the final denoising step x_t → x̂₀). Those steps carry no path-wise KL, so a model trained
    through them could move its samples at zero KL cost; alignment therefore shares them with the
    reference (see :class:`cda_lite.align.AlignedEps`).

    ``log_ratio=True`` (needs ``ref_model``) also returns the realised log-likelihood ratio of each
    sampled path, log dP/dP_ref = Σ_t [c_t²/(2σ_t²)‖ε − ε_ref‖² + (c_t/σ_t)(ε − ε_ref)·z_t] with z_t the
    step's noise: its mean is the path-wise KL, and exp(−log_ratio) reweights the model's paths into
    the reference's (importance weights, Chapter 4). Steps with σ = 0 must share their model.
    """
    n_steps = len(chain)
    K = n_steps if grad_steps is None else int(grad_steps)
    if not 1 <= K <= n_steps:
        raise ValueError(f"grad_steps must lie in [1, {n_steps}], got {grad_steps}")
    if kl_grad not in ("all", "truncated"):
        raise ValueError("kl_grad must be 'all' or 'truncated'")
    if random_truncation:
        K = int(torch.randint(1, K + 1, (1,), generator=generator))
    first_grad = n_steps - K
    weights = pathwise_weights(chain) if ref_model is not None else None
    if log_ratio and ref_model is None:
        raise ValueError("log_ratio: needs ref_model (the ratio is to the reference's path law)")
    noise_coef = pathwise_noise_coefficients(chain) if log_ratio else None
    if log_ratio and deterministic_model is None and chain.stochastic and (noise_coef == 0).any():
        raise ValueError("log_ratio: the chain has a step with σ = 0; pass deterministic_model (the reference) "
                         "so that step is shared and the path ratio exists")

    def call(model, x, t):
        if checkpointing and torch.is_grad_enabled():
            return _checkpoint(model, x, t, use_reentrant=False)
        return model(x, t)

    grad_on = torch.is_grad_enabled()  # under torch.no_grad() nothing builds a graph
    x = x_T
    kl = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device) if ref_model is not None else None
    martingale = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device) if log_ratio else None
    for i in range(n_steps):
        t = int(chain.ts[i])
        in_graph = i >= first_grad
        if not in_graph:
            x = x.detach()
        want_kl = ref_model is not None and weights[i] > 0
        stochastic = chain.stochastic and chain.ab_s[i] < 1
        model_i = eps_model if (stochastic or deterministic_model is None) else deterministic_model
        shares_base = want_kl and model_i is eps_model and getattr(eps_model, "base", None) is ref_model \
            and hasattr(eps_model, "forward_with_base")
        with torch.set_grad_enabled(grad_on and (in_graph or (want_kl and kl_grad == "all"))):
            if shares_base:  # ε_θ = ε_ref + δ: one call of the frozen reference serves both
                eps, eps_ref = eps_model.forward_with_base(x, t)
            else:
                eps = call(model_i, x, t)
        if want_kl:
            if not shares_base:
                # The reference is frozen, but its output depends on x_t, which depends on the parameters
                # through earlier steps: keep that path in the graph on the steps that carry gradient.
                with torch.set_grad_enabled(in_graph and grad_on):
                    eps_ref = call(ref_model, x, t)
            kl = kl + pathwise_kl_step(eps, eps_ref, float(weights[i]))
        eps_step = eps if in_graph else eps.detach()
        mean, sigma = step_mean_std(x, eps_step, float(chain.ab_t[i]), float(chain.ab_s[i]), chain.eta)
        if sigma > 0:
            gen_device = generator.device if generator is not None else x.device
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=gen_device).to(x.device)
            x = mean + sigma * noise
            if log_ratio and want_kl:
                martingale = martingale + float(noise_coef[i]) * ((eps - eps_ref).detach() * noise).flatten(1).sum(1)
        else:
            x = mean
    ratio = kl.detach() + martingale if log_ratio else None
    return DifferentiableSample(x, kl, K, ratio)
