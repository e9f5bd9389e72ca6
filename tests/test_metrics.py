"""Metrics against scipy's exact optimal transport, closed forms and hand-made cases."""
import math

import numpy as np
import pytest
from scipy.stats import wasserstein_distance_nd

from cda_lite import metrics as M
from cda_lite.gmm import GaussianMixture


def test_emd_equals_scipy_exact_ot():
    rng = np.random.default_rng(0)
    for shift in (0.0, 0.7):
        x = rng.normal(size=(60, 2))
        y = rng.normal(size=(60, 2)) * [1.0, 0.5] + shift
        assert M.emd(x, y) == pytest.approx(wasserstein_distance_nd(x, y), rel=1e-9, abs=1e-12)


def test_emd_hand_made():
    x = np.array([[0.0, 0.0], [1.0, 0.0]])
    y = np.array([[1.0, 1.0], [0.0, 1.0]])  # best plan moves each point up by 1
    assert M.emd(x, y) == pytest.approx(1.0)


@pytest.mark.parametrize("delta", [[1.5, 0.0], [0.8, -0.6]])
def test_sliced_wasserstein_of_shifted_sets(delta):
    # If y = x + δ, each projection θᵀy is θᵀx shifted by θᵀδ, so W₁ = |θᵀδ| exactly; averaged over
    # uniform unit θ in 2-D, E|cos φ| = 2/π, giving ‖δ‖·2/π. Only the projection sampling is random:
    # sd ‖δ‖·√(1/2 − 4/π²)/√K ≈ 0.0065 for K = 5000.
    x = np.random.default_rng(1).normal(size=(300, 2))
    want = np.linalg.norm(delta) * 2 / math.pi
    assert M.sliced_wasserstein(x, x + delta, n_projections=5000) == pytest.approx(want, abs=0.025)


def test_sliced_wasserstein_of_gaussian_samples():
    # Independent samples of N(0,I) and N(δ,I): the same value up to sampling noise (≈ 0.03 at n=2000).
    rng = np.random.default_rng(2)
    n, delta = 2000, np.array([1.5, 0.0])
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + delta
    assert M.sliced_wasserstein(x, y, n_projections=500) == pytest.approx(1.5 * 2 / math.pi, abs=0.07)
    assert M.sliced_wasserstein(x, rng.normal(size=(n, 2)), n_projections=200) < 0.06


def test_sliced_wasserstein_in_1d_is_w1():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(400, 1)), rng.exponential(size=(300, 1))
    # In 1-D every unit direction is ±1; W₁ of the sorted samples, written out via quantile functions.
    q = np.linspace(0, 1, 400 * 300 + 1)[:-1] + 0.5 / (400 * 300)
    w1 = np.abs(np.quantile(x[:, 0], q, method="inverted_cdf") - np.quantile(y[:, 0], q, method="inverted_cdf")).mean()
    assert M.sliced_wasserstein(x, y, n_projections=4) == pytest.approx(w1, rel=1e-9)


def test_histogram_kl_floor_and_sensitivity():
    gm = GaussianMixture([0.4, 0.6], [[-1.5, 0.0], [1.5, 0.5]], [0.3 * np.eye(2), 0.5 * np.eye(2)])
    n = 20_000
    floor = M.histogram_kl_floor(n)
    assert floor == pytest.approx((40 * 40 - 1) / (2 * n))
    exact = M.histogram_kl(gm.sample(n, seed=0), gm)
    assert 0.5 * floor < exact < 1.6 * floor
    shifted = M.histogram_kl(gm.sample(n, seed=0) + [1.0, 0.0], gm)
    assert shifted > 10 * floor
    wrong_weights = GaussianMixture([0.6, 0.4], gm.means, gm.covs)
    assert M.histogram_kl(wrong_weights.sample(n, seed=0), gm) > 2 * floor


def test_mode_masses_hand_made():
    centers = [[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]
    pts = np.array([[0.1, -0.2], [3.0, 0.5], [4.5, 0.1], [0.2, 3.1], [-0.4, 0.3], [1.9, 0.0]])
    np.testing.assert_allclose(M.mode_masses(pts, centers), [3 / 6, 2 / 6, 1 / 6])
    np.testing.assert_allclose(M.mode_masses(pts[:1], centers), [1.0, 0.0, 0.0])


def test_mean_distance():
    assert M.mean_distance([[0, 0], [2, 0]], [[1, 3], [1, 5]]) == pytest.approx(4.0)


def test_bad_inputs_name_the_argument():
    good = np.zeros((5, 2))
    with pytest.raises(ValueError, match="x"):
        M.sliced_wasserstein(np.full((5, 2), np.nan), good)
    with pytest.raises(ValueError, match="y"):
        M.emd(good, np.zeros(5))
    with pytest.raises(ValueError, match="dimension"):
        M.sliced_wasserstein(good, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="samples"):
        M.mode_masses([[np.inf, 0.0]], [[0.0, 0.0]])
