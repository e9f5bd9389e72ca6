"""Samplers driven by the exact ε of a Gaussian mixture must reproduce the mixture; single steps and
whole deterministic chains must agree with diffusers' schedulers (an independent implementation)."""
import numpy as np
import pytest
import torch

from cda_lite import sampling as SM
from cda_lite import schedules as S
from cda_lite.gmm import GaussianMixture
from cda_lite.models import ExactEps

diffusers = pytest.importorskip("diffusers")

GM = GaussianMixture([0.35, 0.65], [[-2.0, 0.0], [2.0, 1.0]], [0.4 * np.eye(2), [[0.5, 0.15], [0.15, 0.3]]])
N = 2500
_THETA = np.random.default_rng(0).standard_normal((256, 2))
_THETA /= np.linalg.norm(_THETA, axis=1, keepdims=True)


def sliced_wasserstein(x, y, seed=None):
    """Sliced W₁ for equal-size sets, written out: per direction, W₁ = mean |sorted − sorted|."""
    return float(np.abs(np.sort(x @ _THETA.T, 0) - np.sort(y @ _THETA.T, 0)).mean())


@pytest.fixture(scope="module")
def reference():
    """Fresh exact samples and the two-sample sliced-Wasserstein level of sets of the same size."""
    refs = [GM.sample(N, seed=100 + i) for i in range(4)]
    level = np.mean([sliced_wasserstein(refs[i], refs[i + 1], seed=i) for i in range(3)])
    return refs, level


def _check_reproduces(x, reference):
    refs, level = reference
    assert x.shape == (N, 2) and np.all(np.isfinite(x))
    sw = np.mean([sliced_wasserstein(x, r) for r in refs])
    assert sw < 2 * level, (sw, level)
    # Mode masses: nearest component mean (computed here, not by the library).
    near = np.argmin(((x[:, None, :] - GM.means[None]) ** 2).sum(-1), axis=1)
    masses = np.bincount(near, minlength=2) / N
    ref_near = np.argmin(((refs[0][:, None, :] - GM.means[None]) ** 2).sum(-1), axis=1)
    true_masses = np.bincount(ref_near, minlength=2) / N  # includes the small overlap between modes
    assert np.all(np.abs(masses - GM.weights) < 0.03), masses
    assert np.all(np.abs(masses - true_masses) < 0.03)
    # Means within 4 standard errors of the truth.
    se = x.std(0) / np.sqrt(N)
    assert np.all(np.abs(x.mean(0) - GM.mean()) < 4 * se), (x.mean(0), GM.mean())


@pytest.fixture(scope="module")
def linear1000():
    sched = S.linear(1000)
    return sched, ExactEps(GM, sched)


def test_ddpm_ancestral_reproduces_mixture(linear1000, reference):
    sched, eps = linear1000
    _check_reproduces(SM.sample_ddpm(eps, sched, N, seed=0), reference)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_100_steps_reproduces_mixture(linear1000, reference, eta):
    sched, eps = linear1000
    _check_reproduces(SM.sample_ddim(eps, sched, N, steps=100, eta=eta, seed=0), reference)


def test_pf_ode_reproduces_mixture(linear1000, reference):
    sched, eps = linear1000
    _check_reproduces(SM.sample_pf_ode(eps, sched, N, steps=250, seed=0), reference)


def test_broken_sampler_would_fail(linear1000, reference):
    """The checks above have power: the wrong mode weights, or an η=1 chain run without its noise
    (the η=1 mean with σ dropped), are caught."""
    sched, eps = linear1000
    wrong = GaussianMixture([0.5, 0.5], GM.means, GM.covs).sample(N, seed=3)
    with pytest.raises(AssertionError):
        _check_reproduces(wrong, reference)
    chain = SM.Chain.make(sched, 100, 1.0)
    # The mean of the last step alone, without adding noise on the earlier steps: an under-dispersed set.
    xs = torch.randn(N, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    for i in range(len(chain)):
        xs, _ = SM.step_mean_std(xs, eps(xs, int(chain.ts[i])), chain.ab_t[i], chain.ab_s[i], 1.0)
    with pytest.raises(AssertionError):
        _check_reproduces(xs.double().numpy(), reference)


def test_exact_eps_is_scaled_noised_score(linear1000):
    sched, eps = linear1000
    x = np.random.default_rng(0).normal(size=(40, 2)) * 2
    for t in (0, 10, 500, 999):
        ab = sched.alphas_cumprod[t]
        want = -np.sqrt(1 - ab) * GM.noised(ab).score(x)
        got = eps(torch.tensor(x), t).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # Per-sample timesteps.
    t = torch.tensor([0, 999] * 20)
    got = eps(torch.tensor(x), t).numpy()
    for i, ti in enumerate(t.tolist()):
        ab = sched.alphas_cumprod[ti]
        np.testing.assert_allclose(got[i], -np.sqrt(1 - ab) * GM.noised(ab).score(x[i:i + 1])[0], rtol=1e-10)


def _ddim(T, spacing, steps):
    ref = diffusers.DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                  clip_sample=False, set_alpha_to_one=True, timestep_spacing=spacing,
                                  prediction_type="epsilon")
    ref.set_timesteps(steps)
    return ref


@pytest.mark.parametrize("eta", [0.0, 1.0, 0.5])
def test_single_ddim_step_matches_diffusers(eta):
    ref = _ddim(1000, "leading", 50)
    abs_ = ref.alphas_cumprod.double().numpy()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, generator=g)
    e = torch.randn(16, 2, generator=g)
    z = torch.randn(16, 2, generator=g)
    for t in (980, 500, 20, 0):
        s = t - 1000 // 50
        ab_s = abs_[s] if s >= 0 else 1.0
        mean, sigma = SM.step_mean_std(x, e, float(abs_[t]), float(ab_s), eta)
        out = ref.step(e, t, x, eta=eta, variance_noise=z).prev_sample
        np.testing.assert_allclose((mean + sigma * z).numpy(), out.numpy(), rtol=1e-5, atol=1e-5)
        # The ε coefficient of the mean: mean = a·x + c·ε.
        c = SM.mean_eps_coefficient(float(abs_[t]), float(ab_s), eta)
        m0, _ = SM.step_mean_std(x, torch.zeros_like(e), float(abs_[t]), float(ab_s), eta)
        np.testing.assert_allclose((mean - m0).numpy(), (c * e).numpy(), rtol=1e-5, atol=1e-6)


def test_ancestral_step_matches_ddpm_scheduler():
    """η = 1 over consecutive timesteps is DDPM's ancestral step with σ² = β̃_t ("fixed_small")."""
    sched = S.linear(1000)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                                  variance_type="fixed_small")
    ref.set_timesteps(1000)
    ab = sched.alphas_cumprod
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 2, generator=g, dtype=torch.float64)
    e = torch.randn(16, 2, generator=g, dtype=torch.float64)
    for t in (999, 400, 1):
        mean, sigma = SM.step_mean_std(x, e, ab[t], ab[t - 1], 1.0)
        gen = torch.Generator().manual_seed(7)
        out = ref.step(e.float(), t, x.float(), generator=gen).prev_sample
        z = torch.randn(16, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float32)
        np.testing.assert_allclose((mean + sigma * z.double()).numpy(), out.double().numpy(), rtol=1e-4, atol=1e-5)
    mean, sigma = SM.step_mean_std(x, e, ab[0], 1.0, 1.0)
    assert sigma == 0.0
    np.testing.assert_allclose(mean.numpy(), ref.step(e.float(), 0, x.float()).prev_sample.double().numpy(),
                               rtol=1e-4, atol=1e-5)


def test_large_variance_step_matches_ddpm_fixed_large():
    """eta=LARGE over consecutive timesteps is DDPM's step with σ² = β_t ("fixed_large")."""
    sched = S.linear(1000)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                                  variance_type="fixed_large")
    ref.set_timesteps(1000)
    ab = sched.alphas_cumprod
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 2, generator=g, dtype=torch.float64)
    e = torch.randn(16, 2, generator=g, dtype=torch.float64)
    for t in (999, 400, 1):
        mean, sigma = SM.step_mean_std(x, e, ab[t], ab[t - 1], SM.LARGE)
        assert sigma == pytest.approx(np.sqrt(sched.betas[t]), rel=1e-9)
        out = ref.step(e.float(), t, x.float(), generator=torch.Generator().manual_seed(7)).prev_sample
        z = torch.randn(16, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float32)
        np.testing.assert_allclose((mean + sigma * z.double()).numpy(), out.double().numpy(), rtol=1e-4, atol=1e-5)
    assert SM.step_sigma(ab[0], 1.0, SM.LARGE) == 0.0
    assert SM.Chain.make(sched, 10, SM.LARGE).stochastic and not SM.Chain.make(sched, 10, 0.0).stochastic


def test_large_variance_keeps_a_gaussians_covariance():
    """With the exact ε of a Gaussian, 100 ancestral steps with σ² = β̃_t (η = 1) narrow the law by
    5–8 % per axis; σ² = β_t keeps it within 2 % (the reason Chapter 4's preset uses it)."""
    g = GaussianMixture.gaussian([0.0, 0.0], [[1.0, 0.3], [0.3, 0.5]])
    sched = S.linear(100, 1e-4, 0.1)
    var = {}
    for eta in (1.0, SM.LARGE):
        x = SM.sample(ExactEps(g, sched), sched, (40000, 2), eta=eta, seed=0, dtype=torch.float64).numpy()
        var[eta] = np.diag(np.cov(x.T)) / np.diag(g.covs[0])
    assert np.all(var[1.0] < 0.96)
    assert np.all(np.abs(var[SM.LARGE] - 1) < 0.02)


@pytest.mark.parametrize("spacing,steps", [("leading", 20), ("trailing", 25)])
def test_deterministic_chain_matches_diffusers_loop(linear1000, spacing, steps):
    sched, eps = linear1000
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = SM.sample(eps, sched, (64, 2), steps=steps, eta=0.0, x_T=x_T, spacing=spacing, dtype=torch.float64)
    ref = _ddim(1000, spacing, steps)
    x = x_T.clone()
    for t in ref.timesteps:
        x = ref.step(eps(x, int(t)), int(t), x, eta=0.0).prev_sample
    np.testing.assert_allclose(ours.numpy(), x.numpy(), rtol=1e-4, atol=1e-4)


def test_sample_reproducible_and_trajectory(linear1000):
    sched, eps = linear1000
    a = SM.sample(eps, sched, (8, 2), steps=10, eta=1.0, seed=5)
    b = SM.sample(eps, sched, (8, 2), steps=10, eta=1.0, seed=5)
    c = SM.sample(eps, sched, (8, 2), steps=10, eta=1.0, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    res = SM.sample(eps, sched, (8, 2), steps=10, eta=1.0, seed=5, return_trajectory=True)
    assert len(res.trajectory) == 11 and torch.equal(res.trajectory[-1], a)


def test_tweedie_inverts_forward_noising():
    x0 = torch.randn(10, 2, dtype=torch.float64)
    e = torch.randn(10, 2, dtype=torch.float64)
    ab = 0.3
    xt = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * e
    np.testing.assert_allclose(SM.tweedie_x0(xt, e, ab).numpy(), x0.numpy(), rtol=1e-12, atol=1e-12)


def test_bad_eta():
    with pytest.raises(ValueError, match="eta"):
        SM.Chain.make(S.linear(10), 5, eta=-0.1)
    with pytest.raises(ValueError, match="eta"):
        SM.Chain.make(S.linear(10), 5, eta="big")


@pytest.mark.parametrize("steps", [1, 7, 50])
def test_chain_steps_visit_every_step_with_its_alpha_bars(steps):
    """Chain.steps (the samplers' and rivals' one step loop): every step once, in order, ᾱ read from the schedule."""
    from cda_lite.schedules import linear

    sched = linear(50)
    chain = SM.Chain.make(sched, steps, 1.0)
    got = list(chain.steps())
    assert [s.k for s in got] == list(range(steps))
    ts = [s.t for s in got]
    assert ts[0] == 49 and all(a > b for a, b in zip(ts, ts[1:]))
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 50))
    for s, nxt in zip(got, ts[1:] + [None]):
        assert s.ab_t == pytest.approx(ab[s.t], rel=1e-12)
        assert s.ab_s == (1.0 if nxt is None else pytest.approx(ab[nxt], rel=1e-12))
