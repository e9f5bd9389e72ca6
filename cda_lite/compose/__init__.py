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

The package: :mod:`~cda_lite.compose.rounds` (configuration, rounds, result), :mod:`~cda_lite.compose.product`
(AND), :mod:`~cda_lite.compose.mixture` (OR); every name is importable from ``cda_lite.compose``.
Every algorithm is a generator of :class:`ComposeRound` (a chapter can plot as it runs);
:func:`run_rounds` collects a :class:`ComposeResult`. Chapters 5 and 6; ``python -m cda_lite.bench
compose2d``; ``python -m cda_lite.bench.reproduce fig1|fig2``.
"""
from cda_lite.compose.rounds import ComposeConfig, ComposeResult, ComposeRound, OR_DUAL_LR, run_rounds
from cda_lite.compose.product import and_dual_exact_kls, and_dual_only, and_primal_dual, product_kls, product_log_density_cov, product_of_experts, sample_product_mcmc, surrogate_chain_gaussian, surrogate_eps, surrogate_fixed_point, surrogate_gaussian, surrogate_kls, surrogate_score
from cda_lite.compose.mixture import elbo_loss, or_dual_exact, or_primal_dual

__all__ = ["ComposeConfig", "ComposeResult", "ComposeRound", "OR_DUAL_LR", "run_rounds", "and_dual_exact_kls", "and_dual_only", "and_primal_dual", "product_kls", "product_log_density_cov", "product_of_experts", "sample_product_mcmc", "surrogate_chain_gaussian", "surrogate_eps", "surrogate_fixed_point", "surrogate_gaussian", "surrogate_kls", "surrogate_score", "elbo_loss", "or_dual_exact", "or_primal_dual"]
