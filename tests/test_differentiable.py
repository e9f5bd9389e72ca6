"""Differentiable sampling (cda_lite.differentiable): gradients of the sampled reward and of the path-wise
KL against central finite differences, truncation, checkpointing, reproducibility, the σ = 0 step."""
import copy

import numpy as np
import pytest
import torch

from cda_lite.differentiable import sample_differentiable
from cda_lite.gmm import GaussianMixture
from cda_lite.kl import gaussian_chain_kl
from cda_lite.models import ExactEps, MLPEps, ResidualEps
from cda_lite.pretrained import default_schedule
from cda_lite.sampling import Chain
from gaussian_chain import chain_law

SCHEDULE = default_schedule()
N_STEPS = 6
CHAIN = Chain.make(SCHEDULE, N_STEPS, 1.0)


def reward(x):
    """A smooth non-linear reward, so the chain's Jacobians all matter."""
    return -((x - torch.tensor([1.0, 0.5], dtype=x.dtype)) ** 2).sum(1) + torch.sin(2 * x[:, 0])


BASE_GM = GaussianMixture([0.5, 0.5], [[-1.5, 0.0], [1.5, 0.0]], [np.eye(2) * 0.3, np.eye(2) * 0.3])


def make_models(seed=0):
    """The exact ε of a two-mode mixture as the frozen base (non-linear in x_t), and the base plus an MLP
    correction with random (non-zero) weights, all in float64."""
    torch.manual_seed(seed)
    base = ExactEps(BASE_GM, SCHEDULE)
    model = ResidualEps(copy.deepcopy(base), MLPEps(SCHEDULE.T, 2, hidden=16, layers=1).double())
    with torch.no_grad():  # move off zero: at δ = 0 the KL gradient vanishes and could not be checked
        for p in model.correction.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return base, model


def params_of(model):
    return [p for p in model.parameters() if p.requires_grad]


def run(model, ref, seed=5, n=16, chain=CHAIN, **kw):
    gen = torch.Generator().manual_seed(seed)
    x_T = torch.randn((n, 2), generator=gen, dtype=torch.float64)
    return sample_differentiable(model, chain, x_T, ref_model=ref, generator=gen, **kw)


def objectives(out):
    return reward(out.x0).mean(), out.kl.mean()


def directional_fd(model, ref, v, h=1e-5, **kw):
    """Central differences of (mean reward, mean KL) along the parameter direction v, same noise."""
    params = params_of(model)
    vals = []
    for sign in (+1, -1):
        with torch.no_grad():
            for p, d in zip(params, v):
                p.add_(sign * h * d)
            vals.append([float(o) for o in objectives(run(model, ref, **kw))])
            for p, d in zip(params, v):
                p.sub_(sign * h * d)
    return (np.array(vals[0]) - np.array(vals[1])) / (2 * h)


@pytest.mark.parametrize("deterministic", [False, True])
def test_reward_and_kl_gradients_match_finite_differences(deterministic):
    base, model = make_models()
    params = params_of(model)
    gen = torch.Generator().manual_seed(11)
    v = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    kw = dict(deterministic_model=base) if deterministic else {}
    grads = []
    for obj in objectives(run(model, base, **kw)):
        g = torch.autograd.grad(obj, params, retain_graph=True)
        grads.append(sum(float((gi * vi).sum()) for gi, vi in zip(g, v)))
    fd = directional_fd(model, base, v, **kw)
    assert abs(fd[1]) > 1e-3 and abs(fd[0]) > 1e-3  # non-trivial directions
    assert np.allclose(grads, fd, rtol=1e-4, atol=1e-9)


def test_kl_gradient_needs_the_reference_in_the_graph():
    """The bug this test exists for: evaluating the frozen reference under no_grad cuts the path
    θ → x_t → ε_ref(x_t), and the KL gradient is then wrong (finite differences disagree)."""
    base, model = make_models()
    params = params_of(model)

    class Detached(torch.nn.Module):
        def forward(self, x, t):
            with torch.no_grad():
                return base(x, t)

    v = [torch.randn(p.shape, generator=torch.Generator().manual_seed(3), dtype=p.dtype) for p in params]
    _, kl = objectives(run(model, Detached()))
    g = torch.autograd.grad(kl, params)
    wrong = sum(float((gi * vi).sum()) for gi, vi in zip(g, v))
    fd = directional_fd(model, base, v)[1]
    assert abs(wrong - fd) > 1e-3 * abs(fd)


def test_truncated_gradient_equals_the_gradient_of_the_last_k_steps():
    """With grad_steps=K the gradient is that of the last K steps started from the (fixed) state
    reached after the first n − K steps: check it by finite differences of that suffix chain."""
    base, model = make_models()
    params = params_of(model)
    K = 2
    out = run(model, base, grad_steps=K)
    assert out.grad_steps == K
    g = torch.autograd.grad(reward(out.x0).mean(), params)
    # prefix without gradient, then the suffix as its own chain with the same noise stream
    gen = torch.Generator().manual_seed(5)
    x_T = torch.randn((16, 2), generator=gen, dtype=torch.float64)
    prefix = Chain(CHAIN.ts[:-K], CHAIN.ab_t[:-K], CHAIN.ab_s[:-K], CHAIN.eta)
    suffix = Chain(CHAIN.ts[-K:], CHAIN.ab_t[-K:], CHAIN.ab_s[-K:], CHAIN.eta)
    with torch.no_grad():
        x_mid = sample_differentiable(model, prefix, x_T, generator=gen).x0.detach()
    state = gen.get_state()

    def suffix_reward():
        gen.set_state(state)
        return float(reward(sample_differentiable(model, suffix, x_mid, generator=gen).x0).mean())

    v = [torch.randn(p.shape, generator=torch.Generator().manual_seed(4), dtype=p.dtype) for p in params]
    h, vals = 1e-5, []
    with torch.no_grad():
        for sign in (+1, -1):
            for p, d in zip(params, v):
                p.add_(sign * h * d)
            vals.append(suffix_reward())
            for p, d in zip(params, v):
                p.sub_(sign * h * d)
    fd = (vals[0] - vals[1]) / (2 * h)
    analytic = sum(float((gi * vi).sum()) for gi, vi in zip(g, v))
    assert analytic == pytest.approx(fd, rel=1e-4)
    # and it differs from the full gradient
    full = torch.autograd.grad(reward(run(model, base).x0).mean(), params)
    assert not np.isclose(sum(float((gi * vi).sum()) for gi, vi in zip(full, v)), analytic, rtol=1e-3)


@pytest.mark.parametrize("K,expect_grad", [(1, False), (N_STEPS - 1, False), (N_STEPS, True)])
def test_x_T_gets_gradient_only_without_truncation(K, expect_grad):
    _, model = make_models()
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn((8, 2), generator=gen, dtype=torch.float64, requires_grad=True)
    out = sample_differentiable(model, CHAIN, x_T, grad_steps=K, generator=gen)
    reward(out.x0).mean().backward()
    if expect_grad:
        assert x_T.grad is not None and float(x_T.grad.abs().sum()) > 0
    else:
        assert x_T.grad is None or float(x_T.grad.abs().sum()) == 0.0


def test_random_truncation_draws_k_in_range():
    eps = ExactEps(GaussianMixture.gaussian([0.0, 0.0], np.eye(2)), SCHEDULE)
    ks = []
    for seed in range(60):
        gen = torch.Generator().manual_seed(seed)
        x_T = torch.randn((4, 2), generator=gen, dtype=torch.float64)
        ks.append(sample_differentiable(eps, CHAIN, x_T, grad_steps=3, random_truncation=True, generator=gen).grad_steps)
    assert set(ks) == {1, 2, 3}


def test_checkpointing_gives_the_same_gradient():
    base, model = make_models()
    params = params_of(model)
    grads = []
    for ckpt in (False, True):
        r, kl = objectives(run(model, base, checkpointing=ckpt, deterministic_model=base))
        grads.append(torch.autograd.grad(r + 0.3 * kl, params))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_same_seed_same_samples():
    base, model = make_models()
    with torch.no_grad():
        a, b, c = run(model, base, seed=1), run(model, base, seed=1), run(model, base, seed=2)
    assert torch.equal(a.x0, b.x0) and torch.equal(a.kl, b.kl)
    assert not torch.allclose(a.x0, c.x0)


def test_accumulated_kl_matches_the_exact_chain_kl():
    p = GaussianMixture.gaussian([0.5, 0.3], [[0.6, 0.1], [0.1, 0.4]])
    q = GaussianMixture.gaussian([0.0, 0.0], [[1.0, 0.3], [0.3, 0.5]])
    with torch.no_grad():
        out = run(ExactEps(p, SCHEDULE), ExactEps(q, SCHEDULE), n=4000)
    se = float(out.kl.std()) / np.sqrt(4000)
    assert abs(float(out.kl.mean()) - gaussian_chain_kl(p, q, CHAIN)) < 4 * se


def test_final_deterministic_step_uses_the_deterministic_model():
    """With only the last (σ = 0) step in the graph, the samples depend on the trainable correction
    unless that step is handed to the frozen reference (the loophole AlignedEps closes)."""
    base, model = make_models()
    params = params_of(model)
    loose = run(model, base, grad_steps=1)
    g = torch.autograd.grad(reward(loose.x0).mean(), params, allow_unused=True)
    assert any(gi is not None and float(gi.abs().sum()) > 0 for gi in g)
    shut = run(model, base, grad_steps=1, deterministic_model=base)
    assert not shut.x0.requires_grad
    # and it costs nothing in path-wise KL either way: the σ = 0 step has weight 0
    assert torch.allclose(loose.kl, shut.kl)


def test_bad_arguments():
    base, model = make_models()
    for K in (0, N_STEPS + 1):
        with pytest.raises(ValueError, match="grad_steps"):
            run(model, base, grad_steps=K)
    with pytest.raises(ValueError, match="kl_grad"):
        run(model, base, kl_grad="some")


def test_path_log_ratio_reweights_the_model_into_the_reference():
    """log_ratio = log dP/dP_ref of each sampled path (the σ = 0 last step shared with the reference).
    Independent truths, both Gaussian chains with exact ε (every step affine plus noise): its mean is the
    exact path KL (``gaussian_chain_kl``), and the
    paths of p reweighted by exp(−log_ratio) have the reference chain's final mean and covariance,
    propagated in closed form (``gaussian_chain.chain_law``); exp(−log_ratio) averages to 1."""
    p = GaussianMixture.gaussian([0.5, 0.3], [[0.6, 0.1], [0.1, 0.4]])
    q = GaussianMixture.gaussian([0.0, 0.0], [[1.0, 0.3], [0.3, 0.5]])
    n = 200_000
    with torch.no_grad():
        ref = ExactEps(q, SCHEDULE)  # the last (σ = 0) step is the reference's, as in alignment
        out = run(ExactEps(p, SCHEDULE), ref, n=n, log_ratio=True, deterministic_model=ref)
    lr = out.log_ratio
    se = float(lr.std()) / np.sqrt(n)
    assert abs(float(lr.mean()) - gaussian_chain_kl(p, q, CHAIN)) < 4 * se
    w = torch.exp(-lr)
    assert float(w.mean()) == pytest.approx(1.0, abs=0.02)
    w = w / w.sum()
    mean = (w[:, None] * out.x0).sum(0).numpy()
    cov = ((w[:, None, None] * (out.x0 - torch.as_tensor(mean))[:, :, None] * (out.x0 - torch.as_tensor(mean))[:, None, :]).sum(0)).numpy()
    law_q = chain_law(q, CHAIN)
    m_q, S_q = law_q.means[0], law_q.covs[0]
    assert np.abs(out.x0.mean(0).numpy() - m_q).max() > 0.2  # the chains differ: unweighted samples would fail
    assert np.allclose(mean, m_q, atol=0.02)
    assert np.allclose(cov, S_q, atol=0.03)
    with pytest.raises(ValueError, match="log_ratio"):
        sample_differentiable(ExactEps(p, SCHEDULE), CHAIN, torch.zeros(3, 2), log_ratio=True)
    with pytest.raises(ValueError, match="deterministic_model"):  # σ = 0 at the end, not shared
        sample_differentiable(ExactEps(p, SCHEDULE), CHAIN, torch.zeros(3, 2), ref_model=ref, log_ratio=True)

