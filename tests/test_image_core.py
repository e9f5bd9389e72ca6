"""The shared core on image-shaped samples (n, C, H, W), as the digits rung (Chapter 9) uses it.

Two kinds of check:
- *flattening*: an ε-model on (n, 1, 4, 4) images and the same model seen through a reshape as a
  16-vector model must give the same path-wise KL, differentiable samples, Algorithm-3 λ's, DAS and
  blend particles (same seeds ⇒ same random numbers), so every sum runs over all non-batch dims;
- *closed forms*: a Gaussian on 4×4 images (its exact ε is affine) gives the exact chain KL
  (:func:`cda_lite.kl.gaussian_chain_kl`) and the exact tilted mean under a linear reward, which the
  image-shaped estimators must reproduce within Monte-Carlo error.
"""
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from cda_lite.align import AlignConfig, finetune
from cda_lite.compose import ComposeConfig, and_dual_only, elbo_loss, run_rounds, surrogate_chain_gaussian
from cda_lite.constraints import Constraint
from cda_lite.differentiable import sample_differentiable
from cda_lite.gmm import GaussianMixture
from cda_lite.inference import das, sample_blend_corrected, sample_db_mpa
from cda_lite.kl import gaussian_chain_kl, pathwise_kl, pointwise_kl
from cda_lite.models import ExactEps, ResidualEps
from cda_lite.sampling import Chain, batch_shape, sample
from cda_lite.schedules import linear

SHAPE = (1, 4, 4)
D = 16
SCHEDULE = linear(50, 1e-4, 0.2)


class TinyConvEps(nn.Module):
    """A two-layer conv ε-network on (n, 1, H, W) with t/T as an extra input channel."""

    def __init__(self, T, width=6, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.T = T
        self.inp = nn.Conv2d(2, width, 3, padding=1)
        self.out = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x, t):
        t = torch.as_tensor(t, device=x.device)
        tt = (t.to(x.dtype) / self.T).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        return self.out(torch.tanh(self.inp(torch.cat([x, tt], 1))))


class Flat(nn.Module):
    """The same ε-model seen as a model of D-vectors: (n, D) → reshape → model → flatten."""

    def __init__(self, model, shape=SHAPE):
        super().__init__()
        self.model, self.shape = model, shape

    def forward(self, x, t):
        return self.model(x.reshape(x.shape[0], *self.shape), t).flatten(1)


class AsImage(nn.Module):
    """A vector ε-model (e.g. the exact ε of a 16-D Gaussian) applied to (n, 1, 4, 4) images."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, t):
        return self.model(x.flatten(1), t).reshape(x.shape)


def conv_pair():
    p = TinyConvEps(SCHEDULE.T, seed=1).double()
    q = TinyConvEps(SCHEDULE.T, seed=2).double()
    return p, q


def gaussian(seed, scale):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(D, D)) * scale / math.sqrt(D)
    return GaussianMixture.gaussian(rng.normal(size=D) * 0.5, A @ A.T + 0.3 * np.eye(D))


def test_batch_shape():
    assert batch_shape(5, 2) == (5, 2)
    assert batch_shape(5, (1, 8, 8)) == (5, 1, 8, 8)
    with pytest.raises(ValueError, match="dim"):
        batch_shape(5, 0)
    with pytest.raises(ValueError, match="dim"):
        batch_shape(5, (1, 0, 8))


def test_pathwise_kl_of_images_equals_the_flattened_chain():
    p, q = conv_pair()
    chain = Chain.make(SCHEDULE, 8, 1.0)
    img = pathwise_kl(p, q, chain, (64, *SHAPE), seed=3)
    vec = pathwise_kl(Flat(p), Flat(q), chain, (64, D), seed=3)
    assert img[0] > 0
    assert img[0] == pytest.approx(vec[0], rel=1e-12) and img[1] == pytest.approx(vec[1], rel=1e-12)


class Offset(nn.Module):
    """q's ε plus a fixed image-shaped offset scaled by (1 + t/T): ε_p − ε_q does not depend on x, so both
    KL estimators have no Monte-Carlo error and their value is a sum written out by hand."""

    def __init__(self, model, pattern, T):
        super().__init__()
        self.model, self.pattern, self.T = model, pattern, T

    def forward(self, x, t):
        scale = 1 + torch.as_tensor(t, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1))) / self.T
        return self.model(x, t) + scale * self.pattern.to(x.dtype)


def _offset_pair():
    q = TinyConvEps(SCHEDULE.T, seed=2).double()
    pattern = torch.arange(D, dtype=torch.float64).reshape(SHAPE) / D - 0.4  # every pixel different
    return Offset(q, pattern, SCHEDULE.T), q, float((pattern ** 2).sum())


def test_pathwise_kl_of_images_by_hand():
    """Lemma 1 with ‖ε_p − ε_q‖² = (1 + t/T)²‖pattern‖² summed over *all* pixels, and the DDPM step's
    c_t and σ_t written out (η = 1): Σ_k c_k²/(2σ_k²)(1 + t_k/T)²‖pattern‖²; the last step (σ = 0) adds 0."""
    p, q, norm2 = _offset_pair()
    chain = Chain.make(SCHEDULE, 8, 1.0)
    total = _lemma1_by_hand(chain, norm2)
    mean, se = pathwise_kl(p, q, chain, (5, *SHAPE), seed=0)
    assert mean == pytest.approx(total, rel=1e-9) and se == pytest.approx(0.0, abs=1e-9 * total)


def test_pointwise_kl_of_images_by_hand():
    """Lemma 2 with the same offset: Σ_t β_t/(2(1 − ᾱ_t)) (1 + t/T)²‖pattern‖², ᾱ_t by a running product."""
    p, q, norm2 = _offset_pair()
    x0 = torch.randn(7, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    total, ab = 0.0, 1.0
    for t, beta in enumerate(SCHEDULE.betas.tolist()):
        ab *= 1 - beta
        total += beta / (2 * (1 - ab)) * (1 + t / SCHEDULE.T) ** 2 * norm2
    assert pointwise_kl(p, q, SCHEDULE, x0) == pytest.approx(total, rel=1e-9)
    # the random-timestep variant is unbiased: it averages T·w_t·d_t over 2100 × 20 uniform draws of t,
    # whose relative standard error here is 0.21 % (computed from the weights); 1 % is ≈ 5 of them
    est = pointwise_kl(p, q, SCHEDULE, x0.repeat(300, 1, 1, 1), n_t=20, seed=1)
    assert est == pytest.approx(total, rel=0.01)


def test_pathwise_kl_on_images_matches_the_exact_gaussian_chain_kl():
    """Independent truth: two Gaussians on 4×4 images; their exact chain KL is a closed form."""
    P, Q = gaussian(0, 0.8), gaussian(1, 0.6)
    chain = Chain.make(SCHEDULE, 10, 1.0)
    mean, se = pathwise_kl(AsImage(ExactEps(P, SCHEDULE)), AsImage(ExactEps(Q, SCHEDULE)), chain,
                           (3000, *SHAPE), seed=2)
    exact = gaussian_chain_kl(P, Q, chain)
    assert exact > 1.0 and se < 0.03 * exact
    assert abs(mean - exact) < 4 * se


def test_pointwise_kl_and_elbo_of_images_equal_the_flattened_values():
    p, q = conv_pair()
    x0 = torch.randn(40, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for n_t in (None, 3):
        a = pointwise_kl(p, q, SCHEDULE, x0, n_t=n_t, seed=4)
        b = pointwise_kl(Flat(p), Flat(q), SCHEDULE, x0.flatten(1), n_t=n_t, seed=4)
        assert a > 0 and a == pytest.approx(b, rel=1e-10)
    pf, xf = p.float(), x0.float()
    assert elbo_loss(pf, xf, SCHEDULE, seed=1) == pytest.approx(elbo_loss(Flat(pf), xf.flatten(1), SCHEDULE, seed=1),
                                                                rel=1e-6)


def test_sample_differentiable_on_images_equals_the_flattened_chain_and_has_gradients():
    base, corr = conv_pair()
    model = ResidualEps(copy.deepcopy(base), corr)
    with torch.no_grad():
        for prm in model.correction.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    flat_model = ResidualEps(Flat(copy.deepcopy(base)), Flat(copy.deepcopy(model.correction)))
    flat_model.correction.model.load_state_dict(model.correction.state_dict())  # undo the zero-init
    chain = Chain.make(SCHEDULE, 6, 1.0)

    def run(m, ref, shape):
        gen = torch.Generator().manual_seed(7)
        x_T = torch.randn(shape, generator=gen, dtype=torch.float64)
        return sample_differentiable(m, chain, x_T, ref_model=ref, grad_steps=3, generator=gen)

    a = run(model, model.base, (12, *SHAPE))
    b = run(flat_model, flat_model.base, (12, D))
    assert a.x0.shape == (12, *SHAPE) and a.kl.shape == (12,)
    torch.testing.assert_close(a.x0.flatten(1), b.x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.kl, b.kl, rtol=1e-12, atol=1e-14)
    assert float(a.kl.detach().min()) > 0
    loss = a.x0.mean() + a.kl.mean()
    grads = torch.autograd.grad(loss, [q for q in model.correction.parameters()])
    assert all(torch.isfinite(g).all() for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def _lemma1_by_hand(chain, norm2):
    """Σ_k c_k²/(2σ_k²)(1 + t_k/T)²‖pattern‖² with the DDPM step (η = 1) written out."""
    total = 0.0
    for t, ab_t, ab_s in zip(chain.ts, chain.ab_t, chain.ab_s):
        sigma2 = (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)
        if sigma2 > 0:
            c = -math.sqrt(ab_s) * math.sqrt(1 - ab_t) / math.sqrt(ab_t) + math.sqrt(1 - ab_s - sigma2)
            total += c * c / (2 * sigma2) * (1 + t / SCHEDULE.T) ** 2 * norm2
    return total


def test_sample_differentiable_kl_on_images_by_hand():
    """The KL that Algorithm 1 trains on, accumulated along the differentiable image chain, for a model
    whose ε differs from the reference by an x-independent image: every sample's KL is the hand sum."""
    p, q, norm2 = _offset_pair()
    chain = Chain.make(SCHEDULE, 6, 1.0)
    x_T = torch.randn((5, *SHAPE), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for grad_steps in (3, 6):
        out = sample_differentiable(p, chain, x_T, ref_model=q, grad_steps=grad_steps,
                                    generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(out.kl.detach(), torch.full((5,), _lemma1_by_hand(chain, norm2), dtype=torch.float64),
                                   rtol=1e-10, atol=0)


def test_residual_eps_zero_inits_a_conv_correction_and_rejects_one_without_layers():
    base, corr = conv_pair()
    model = ResidualEps(base, corr)
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    torch.testing.assert_close(model(x, 10), base(x, 10), rtol=0, atol=0)
    assert float(corr.out.weight.detach().abs().sum()) == 0 and float(corr.inp.weight.detach().abs().sum()) > 0

    class NoLayers(nn.Module):
        def forward(self, x, t):
            return torch.zeros_like(x)

    with pytest.raises(ValueError, match="correction"):
        ResidualEps(base, NoLayers())


def test_finetune_on_images_starts_at_the_base_and_raises_the_reward():
    """Algorithm 1 on image samples: KL = 0 at the first step (zero-init correction), then the mean pixel
    (a linear reward) rises to its ≥ level while the KL grows from 0."""
    torch.manual_seed(0)
    P = gaussian(0, 0.8)
    base = AsImage(ExactEps(P, SCHEDULE)).float()  # ExactEps computes in float64 and casts back

    def mean_pixel(x):
        return x.flatten(1).mean(1)

    x_pre = sample(base, SCHEDULE, (2000, *SHAPE), steps=10, seed=1)
    start = float(mean_pixel(x_pre).mean())
    cons = [Constraint("mean pixel", mean_pixel, start + 0.3, ">=")]
    cfg = AlignConfig(steps=60, batch_size=64, lr=1e-2, dual_lr=2.0, sample_steps=10, grad_steps=4, seed=0)
    trainer, aligned = finetune(base, cons, SCHEDULE, cfg, noise_shape=SHAPE, correction=TinyConvEps(SCHEDULE.T))
    states = list(trainer.run())
    assert states[0].kl == 0.0
    x = sample(aligned, SCHEDULE, (2000, *SHAPE), steps=10, seed=2)
    assert x.shape == (2000, *SHAPE)
    end = float(mean_pixel(x).mean())
    assert end > start + 0.2, (start, end)
    assert states[-1].kl > 0


def test_algorithm3_on_images_equals_the_flattened_run():
    experts = [TinyConvEps(SCHEDULE.T, seed=s) for s in (1, 2, 3)]  # float32: the sampler's dtype
    cfg = ComposeConfig(rounds=3, n_samples=32, kl_timesteps=2, seed=5)
    img = run_rounds(and_dual_only(experts, SCHEDULE, cfg, dim=SHAPE))
    vec = run_rounds(and_dual_only([Flat(e) for e in experts], SCHEDULE, cfg, dim=D))
    assert img.samples.shape == (32, *SHAPE)
    np.testing.assert_allclose(img.values_history, vec.values_history, rtol=1e-6)
    np.testing.assert_allclose(img.lam_history, vec.lam_history, rtol=1e-6)
    assert not np.allclose(img.lam_history[-1], img.lam_history[0])  # λ moved


def test_algorithm3_on_images_matches_lemma2_by_hand_for_gaussian_experts():
    """Independent truth: Gaussian experts N(μ_i, Σ) on 4×4 images sharing Σ. Noised, q_i,t = N(√ᾱ_t μ_i, C_t)
    with C_t = ᾱ_t Σ + (1 − ᾱ_t) I, so ε_i(x) = √(1−ᾱ_t) C_t⁻¹(x − √ᾱ_t μ_i) and ε_λ − ε_i is the constant
    √(1−ᾱ_t)√ᾱ_t C_t⁻¹(μ_i − Σ_j λ_j μ_j). Lemma 2 over every t is then exact whatever the samples:
    KL_i = Σ_t β_t ᾱ_t / 2 · ‖C_t⁻¹(μ_i − μ̄_λ)‖², written here from the schedule alone."""
    rng = np.random.default_rng(7)
    A = rng.normal(size=(D, D)) * 0.5 / math.sqrt(D)
    S = A @ A.T + 0.3 * np.eye(D)
    mus = [rng.normal(size=D) * 0.7 for _ in range(3)]
    experts = [AsImage(ExactEps(GaussianMixture.gaussian(mu, S), SCHEDULE)) for mu in mus]
    cfg = ComposeConfig(rounds=2, n_samples=8, kl_timesteps=None, seed=3)
    res = run_rounds(and_dual_only(experts, SCHEDULE, cfg, dim=SHAPE))
    assert res.samples.shape == (8, *SHAPE)

    def by_hand(lam):
        mbar = sum(l * mu for l, mu in zip(lam, mus))
        out = np.zeros(3)
        for t in range(SCHEDULE.T):
            ab, beta = SCHEDULE.alphas_cumprod[t], SCHEDULE.betas[t]
            C = ab * S + (1 - ab) * np.eye(D)
            for i, mu in enumerate(mus):
                d = np.linalg.solve(C, mu - mbar)
                out[i] += beta * ab / 2 * float(d @ d)
        return out

    for lam, values in zip(res.lam_history, res.values_history):  # both rounds: λ = 1/3 each, then moved
        np.testing.assert_allclose(values, by_hand(lam), rtol=2e-4)  # float32 sampling: 1e-5 measured
    assert not np.allclose(res.lam_history[1], res.lam_history[0])


def test_das_and_blends_on_images_equal_the_flattened_runs():
    p, q = conv_pair()
    w = torch.linspace(-1, 1, D, dtype=torch.float64)

    def r_img(x):
        return (x.flatten(1) * w).sum(1) - 0.1 * (x ** 2).flatten(1).sum(1)

    def r_vec(x):
        return (x * w).sum(1) - 0.1 * (x ** 2).sum(1)

    a = das(p, r_img, SCHEDULE, 64, alpha=0.5, steps=8, dim=SHAPE, seed=3)
    b = das(Flat(p), r_vec, SCHEDULE, 64, alpha=0.5, steps=8, dim=D, seed=3)
    assert a.x.shape == (64, *SHAPE) and a.nfe == b.nfe
    torch.testing.assert_close(a.x.flatten(1), b.x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a.ess, b.ess, rtol=1e-8)
    assert a.ess.min() < 63  # the weights were not all equal: the comparison covered the weights

    a = sample_blend_corrected([p, q], [0.3, 0.7], SCHEDULE, 64, steps=8, dim=SHAPE, seed=4)
    b = sample_blend_corrected([Flat(p), Flat(q)], [0.3, 0.7], SCHEDULE, 64, steps=8, dim=D, seed=4)
    torch.testing.assert_close(a.x.flatten(1), b.x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a.log_weights, b.log_weights, rtol=1e-8, atol=1e-10)
    assert a.ess.min() < 63

    a = sample_db_mpa([p, q], [0.3, 0.7], SCHEDULE, 16, steps=8, dim=SHAPE, seed=4)
    b = sample_db_mpa([Flat(p), Flat(q)], [0.3, 0.7], SCHEDULE, 16, steps=8, dim=D, seed=4)
    assert a.shape == (16, *SHAPE)
    torch.testing.assert_close(a.flatten(1), b, rtol=1e-10, atol=1e-10)


def test_db_mpa_on_images_samples_the_exact_surrogate_chain_law():
    """Independent truth: DB-MPA runs the chain with Σ w_i ε_i; for single-Gaussian experts every ε_i is
    affine, so the chain's output law is the Gaussian :func:`cda_lite.compose.surrogate_chain_gaussian`
    propagates step by step without sampling. The image-shaped samples must match its mean and variance."""
    P1, P2 = gaussian(11, 0.6), gaussian(12, 0.9)
    w, steps, n = [0.3, 0.7], 10, 4000
    law = surrogate_chain_gaussian([P1, P2], w, SCHEDULE, steps, 1.0)
    x = sample_db_mpa([AsImage(ExactEps(P, SCHEDULE)) for P in (P1, P2)], w, SCHEDULE, n, steps=steps,
                      dim=SHAPE, seed=2)
    assert x.shape == (n, *SHAPE)
    got = x.flatten(1).double().numpy()
    sd = np.sqrt(np.diag(law.covs[0]))
    z = (got.mean(0) - law.means[0]) / (sd / math.sqrt(n))  # standard errors, one per pixel
    assert np.abs(z).max() < 4.5, np.abs(z).max()  # 16 pixels: a 4.5σ miss has probability < 1e-4
    np.testing.assert_allclose(got.var(0), np.diag(law.covs[0]), rtol=0.12)  # se of a variance: √(2/n) ≈ 2 %


def test_das_on_images_reaches_the_exact_tilted_mean():
    """Independent truth: a Gaussian on 4×4 images; its 25-step ancestral chain (exact ε) outputs an exact
    Gaussian N(m̂, Ŝ) (:func:`cda_lite.compose.surrogate_chain_gaussian` with one expert twice), and DAS
    targets that law tilted by the linear reward ⟨w, x⟩/α: N(m̂ + Ŝw/α, Ŝ)."""
    P = gaussian(3, 0.7)
    w = np.random.default_rng(0).normal(size=D) * 0.3
    alpha, steps = 1.0, 25
    w_t = torch.as_tensor(w)

    def reward(x):
        return (x.flatten(1) * w_t.to(x.dtype)).sum(1)

    law = surrogate_chain_gaussian([P, P], [0.5, 0.5], SCHEDULE, steps, 1.0)
    target = law.means[0] + law.covs[0] @ w / alpha
    out = das(AsImage(ExactEps(P, SCHEDULE)), reward, SCHEDULE, 500, alpha=alpha, steps=steps, dim=SHAPE, seed=0)
    got = out.x.flatten(1).double().numpy().mean(0)
    shift_exact = float(w @ (target - law.means[0]))  # = wᵀŜw/α, the move along the reward direction
    shift_got = float(w @ (got - law.means[0]))
    assert shift_exact > 0.5
    assert abs(shift_got - shift_exact) < 0.1 * shift_exact
    assert np.abs(got - target).max() < 0.2


def test_shared_base_reuses_a_repeated_call_and_counts_images():
    """Chapter 9's SharedBase: Σ_i λ_i (ε_base + δ_i) on one x costs one base pass (no_grad), equal to the
    uncached sum; a new tensor, an in-place change, another t or grad mode all recompute."""
    from cda_lite.digits.experiment_setup import SharedBase
    from cda_lite.models import LinearCombinationEps

    base = TinyConvEps(SCHEDULE.T, seed=1).double()
    shared = SharedBase(base)
    deltas = [TinyConvEps(SCHEDULE.T, seed=s).double() for s in (2, 3)]
    experts = [ResidualEps(shared, d) for d in deltas]
    with torch.no_grad():
        for d in deltas:
            for prm in d.parameters():
                prm.add_(0.1 * torch.randn_like(prm))
    x = torch.randn(5, *SHAPE, dtype=torch.float64)
    mix = LinearCombinationEps(experts, [0.3, 0.7])
    with torch.no_grad():
        got = mix(x, 7)
        want = base(x, 7) + 0.3 * deltas[0](x, 7) + 0.7 * deltas[1](x, 7)
        assert shared.images == 5  # one pass for both experts
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        shared(x, 8)
        assert shared.images == 10  # another t
        x.add_(1.0)
        torch.testing.assert_close(shared(x, 8), base(x, 8))
        assert shared.images == 15  # modified in place
        shared(x.clone(), 8)
        assert shared.images == 20  # another tensor
        t = torch.full((5,), 8)
        shared(x, t), shared(x, t)
        assert shared.images == 25  # a (n,) t tensor equal to the last one is recognised
    shared(x, 8)
    assert shared.images == 30  # with gradients on, never cached


def test_conv_correction_starts_at_zero_inside_residual_eps():
    from cda_lite.digits.experiment_setup import ConvCorrection

    base = TinyConvEps(SCHEDULE.T, seed=1)
    corr = ConvCorrection(SCHEDULE.T, channels=1, width=8, size=4)
    model = ResidualEps(base, corr)
    x = torch.randn(6, *SHAPE)
    t = torch.arange(6) * 5
    torch.testing.assert_close(model(x, t), base(x, t), rtol=0, atol=0)
    # one gradient step moves it off zero through both the template and the convolutions
    loss = (model(x, t) - base(x, t) - 1.0).pow(2).sum()
    loss.backward()
    assert corr.template.bias.grad.abs().sum() > 0 and corr.out.weight.grad.abs().sum() > 0


def test_chapter9_pipeline_smoke_and_bench_keys():
    """Chapter 9's experiments end to end on a random tiny UNet with a tiny effort (interface, not
    numbers): the bench's JSON keys, shapes, and the cost bookkeeping of the rivals."""
    from cda_lite.bench.images import format as bench_format
    from cda_lite.digits.experiment_setup import config_for
    from cda_lite.digits.experiments import run_all, summary
    from cda_lite.digits.unet import UNetEps

    torch.manual_seed(0)
    unet = UNetEps(100, block_out_channels=(8, 16)).eval()
    cfg = config_for("fast", sample_steps=3, n_norm=16, n_eval=16, n_eval_expert=8, steps=2, expert_steps=1,
                     batch_size=4, rounds=2, compose_samples=8, compose_eval=8, kl_timesteps=1, particles=8, width=8)
    res = run_all(cfg, cache=False, pretrained=unet)
    out = summary(res)
    for key in ("constraints", "achieved_constrained", "achieved_equal_weights", "kl_constrained",
                "kl_equal_weights", "lam", "compose_kls_constrained", "compose_kls_equal", "seconds"):
        assert key in out, key
    m = len(out["constraints"])
    assert all(c["units"] == "sigma" for c in out["constraints"])
    assert len(out["achieved_constrained"]) == len(out["achieved_equal_weights"]) == len(out["lam"]) == m
    assert len(out["compose_kls_constrained"]) == len(out["compose_kls_equal"]) == len(res.experts) == 3
    assert res.constrained.samples.shape == (16, 1, 8, 8)
    assert np.allclose(res.equal.lam, np.sum(res.constrained.lam) / m)  # equal split of the same total
    K = 3
    assert out["rivals"]["db_mpa"]["unet_forward_per_sample"] == K  # one shared UNet pass per step
    assert out["rivals"]["db_mpa"]["nfe"] == 3 * K
    assert isinstance(bench_format({**out, "profile": "fast"}), str)
    # values, not just keys: multipliers are ≥ 0 (projected ascent), KLs (path-wise and Lemma 2's, sums
    # of weighted squares) are ≥ 0, and the constrained run's multipliers are those its dual recorded
    assert np.all(np.array(out["lam"]) >= 0) and out["kl_constrained"] >= 0 and out["kl_equal_weights"] >= 0
    assert np.all(np.array(out["compose_kls_constrained"]) >= 0) and np.all(np.array(out["compose_kls_equal"]) >= 0)
    np.testing.assert_allclose(out["lam"], res.constrained.lam)
