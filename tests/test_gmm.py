"""GaussianMixture against independent truth: finite differences, scipy densities, Monte Carlo."""
import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from cda_lite.gmm import GaussianMixture, noised_score

W = [0.3, 0.5, 0.2]
MU = [[0.0, 0.0], [2.0, -1.0], [-1.5, 1.5]]
COV = [[[1.0, 0.3], [0.3, 0.5]], [[0.4, -0.1], [-0.1, 0.8]], [[0.2, 0.0], [0.0, 0.3]]]


@pytest.fixture
def gm():
    return GaussianMixture(W, MU, COV)


def _points(n=25, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 2)) * 1.5 + [0.3, 0.1]


def test_log_prob_matches_scipy(gm):
    x = _points()
    dens = sum(w * multivariate_normal(m, c).pdf(x) for w, m, c in zip(W, MU, COV))
    np.testing.assert_allclose(gm.log_prob(x), np.log(dens), rtol=1e-10, atol=1e-12)
    xt = torch.tensor(x)
    out = gm.log_prob(xt)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), np.log(dens), rtol=1e-10)


def test_score_numpy_matches_finite_differences(gm):
    x = _points()
    h = 1e-5
    fd = np.stack([(gm.log_prob(x + h * e) - gm.log_prob(x - h * e)) / (2 * h) for e in np.eye(2)], axis=1)
    s = gm.score(x)
    assert isinstance(s, np.ndarray) and s.shape == x.shape
    np.testing.assert_allclose(s, fd, rtol=1e-6, atol=1e-7)


def test_score_torch_matches_finite_differences_and_autograd(gm):
    x = torch.tensor(_points(), requires_grad=True)
    s = gm.score(x)
    assert isinstance(s, torch.Tensor)
    (g,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
    np.testing.assert_allclose(s.detach().numpy(), g.numpy(), rtol=1e-9, atol=1e-10)
    xd = x.detach().numpy()
    h = 1e-5
    fd = np.stack([(gm.log_prob(xd + h * e) - gm.log_prob(xd - h * e)) / (2 * h) for e in np.eye(2)], axis=1)
    np.testing.assert_allclose(s.detach().numpy(), fd, rtol=1e-6, atol=1e-7)


def test_noised_score_matches_fd_of_noised_log_prob(gm):
    x = _points(10)
    ab = 0.37
    nz = gm.noised(ab)
    h = 1e-5
    fd = np.stack([(nz.log_prob(x + h * e) - nz.log_prob(x - h * e)) / (2 * h) for e in np.eye(2)], axis=1)
    got = noised_score(gm, torch.tensor(x), torch.full((10,), ab, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-7)


def _mc_tol(samples, k=5.0):
    return k * samples.std(0) / np.sqrt(len(samples))


def test_sample_moments_match_mean_cov(gm):
    n = 200_000
    x = gm.sample(n, seed=3)
    assert x.shape == (n, 2)
    # Independent closed form of the mixture moments.
    w, mu, cov = np.array(W), np.array(MU), np.array(COV)
    m_true = w @ mu
    c_true = sum(wk * (ck + np.outer(mk - m_true, mk - m_true)) for wk, mk, ck in zip(w, mu, cov))
    np.testing.assert_allclose(gm.mean(), m_true, rtol=1e-12)
    np.testing.assert_allclose(gm.cov(), c_true, rtol=1e-12, atol=1e-12)
    assert np.all(np.abs(x.mean(0) - m_true) < _mc_tol(x))
    # SE of a (co)variance entry: sd of the product of centred coordinates / √n.
    d = x - x.mean(0)
    prods = np.einsum("ni,nj->nij", d, d)
    se = prods.std(0) / np.sqrt(n)
    assert np.all(np.abs(prods.mean(0) - c_true) < 5 * se)


def test_component_frequencies_and_responsibilities(gm):
    # Responsibilities sum to 1 and average (over samples) to the weights.
    x = gm.sample(100_000, seed=4)
    r = gm.responsibilities(x)
    np.testing.assert_allclose(r.sum(1), 1.0, rtol=1e-12)
    se = np.sqrt(np.array(W) * (1 - np.array(W)) / len(x))
    assert np.all(np.abs(r.mean(0) - W) < 5 * se)


@pytest.mark.parametrize("ab", [0.05, 0.5, 0.95])
def test_noised_moments_match_forward_process(gm, ab):
    n = 200_000
    rng = np.random.default_rng(7)
    x0 = gm.sample(n, seed=8)
    xt = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * rng.standard_normal(x0.shape)
    nz = gm.noised(ab)
    assert np.all(np.abs(xt.mean(0) - nz.mean()) < _mc_tol(xt))
    d = xt - xt.mean(0)
    prods = np.einsum("ni,nj->nij", d, d)
    assert np.all(np.abs(prods.mean(0) - nz.cov()) < 5 * prods.std(0) / np.sqrt(n))
    # And the density itself, against a histogram of the forward process in 1-D marginal x₁.
    edges = np.linspace(-3, 3, 13)
    counts, _ = np.histogram(xt[:, 0], bins=edges)
    from scipy.stats import norm
    mass = sum(w * (norm.cdf(edges[1:], np.sqrt(ab) * m[0], np.sqrt(ab * c[0][0] + 1 - ab))
                    - norm.cdf(edges[:-1], np.sqrt(ab) * m[0], np.sqrt(ab * c[0][0] + 1 - ab)))
               for w, m, c in zip(W, MU, COV))
    assert np.all(np.abs(counts / n - mass) < 5 * np.sqrt(mass * (1 - mass) / n) + 1e-4)


def test_sample_reproducible(gm):
    np.testing.assert_array_equal(gm.sample(50, seed=11), gm.sample(50, seed=11))
    assert not np.array_equal(gm.sample(50, seed=11), gm.sample(50, seed=12))


def test_gaussian_constructor_and_mixture_of():
    g = GaussianMixture.gaussian([1.0, -2.0], 0.3)
    np.testing.assert_allclose(g.covs[0], 0.3 * np.eye(2))
    a, b = GaussianMixture.gaussian([0, 0], 1.0), GaussianMixture(W, MU, COV)
    m = GaussianMixture.mixture_of([a, b], [0.25, 0.75])
    x = _points(7)
    np.testing.assert_allclose(np.exp(m.log_prob(x)), 0.25 * np.exp(a.log_prob(x)) + 0.75 * np.exp(b.log_prob(x)),
                               rtol=1e-12)
    rt = GaussianMixture.from_dict(b.to_dict())
    np.testing.assert_allclose(rt.log_prob(x), b.log_prob(x), rtol=1e-14)


BAD = [
    (dict(weights=[0.5, 0.5], means=[[0, 0]], covs=[np.eye(2)]), "weights"),
    (dict(weights=[1.0], means=[[0, 0]], covs=[np.eye(3)]), "covs"),
    (dict(weights=[1.0], means=[[0, 0]], covs=[[[1.0, 0.5], [0.4, 1.0]]]), "covs"),  # not symmetric
    (dict(weights=[1.0], means=[[0, 0]], covs=[[[1.0, 2.0], [2.0, 1.0]]]), "covs"),  # not PSD
    (dict(weights=[1.0], means=[[0, 0]], covs=[[[0.0, 0.0], [0.0, 1.0]]]), "covs"),  # singular
    (dict(weights=[1.2, -0.2], means=[[0, 0], [1, 1]], covs=[np.eye(2)] * 2), "weights"),
    (dict(weights=[0.5, 0.6], means=[[0, 0], [1, 1]], covs=[np.eye(2)] * 2), "weights"),
    (dict(weights=[1.0], means=[[np.nan, 0]], covs=[np.eye(2)]), "means"),
    (dict(weights=[1.0], means=[[0, 0]], covs=[[[np.inf, 0], [0, 1]]]), "covs"),
    (dict(weights=[np.nan], means=[[0, 0]], covs=[np.eye(2)]), "weights"),
    (dict(weights=[1.0], means=[0, 0], covs=[np.eye(2)]), "means"),
]


@pytest.mark.parametrize("kw,name", BAD)
def test_bad_inputs_raise_value_error_naming_argument(kw, name):
    with pytest.raises(ValueError, match=name):
        GaussianMixture(**kw)


def test_bad_noise_level_and_point_shape(gm):
    with pytest.raises(ValueError, match="alpha_bar"):
        gm.noised(0.0)
    with pytest.raises(ValueError, match="alpha_bar"):
        gm.noised(1.5)
    with pytest.raises(ValueError, match="x"):
        gm.log_prob(np.zeros((2, 2, 2)))
