"""Explorers of cda_lite.widgets: the plain callbacks against independent computations.

The views are checked against closed forms written out here (products of Gaussians, the tilt's
dual), Monte Carlo where that is the truth (DAS), and the ipywidgets wrappers by calling their
``.f`` callbacks as the sliders would.
"""
from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cda_lite.exact import LinearReward, QuadraticReward, align_dual, gaussian_kl  # noqa: E402
from cda_lite.gmm import GaussianMixture  # noqa: E402
from cda_lite.paths import data_path  # noqa: E402
from cda_lite.exact.problems import load_problem  # noqa: E402
from cda_lite import widgets as W  # noqa: E402

G = GaussianMixture.gaussian


@pytest.fixture(autouse=True)
def _close_figures():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-interactive.*")  # plt.show() under Agg
        yield
    plt.close("all")


@pytest.fixture(scope="module")
def fig1_experts():
    return load_problem(data_path("problems", "fig1_and.json")).experts


def _product_by_hand(experts, lam):
    """∏ N(μ_i, Σ_i)^{λ_i} = N(m, S) with S⁻¹ = Σ λ_i Σ_i⁻¹, m = S Σ λ_i Σ_i⁻¹ μ_i."""
    precs = [np.linalg.inv(e.covs[0]) for e in experts]
    P = sum(l * p for l, p in zip(lam, precs))
    S = np.linalg.inv(P)
    m = S @ sum(l * p @ e.means[0] for l, p, e in zip(lam, precs, experts))
    return m, S


# --------------------------------------------------------------------------- composition
def test_composition_view_matches_the_product_of_gaussians_by_hand():
    experts = [G([1.0, 0.0], [[0.3, 0.1], [0.1, 0.2]]), G([-1.0, 0.5], 0.5), G([0.0, -1.0], [[0.2, 0.0], [0.0, 0.6]])]
    lam = np.array([0.2, 0.5, 0.3])
    fig, (ax, kl_ax) = plt.subplots(1, 2)
    frame = W.composition_view(experts, 10 * lam, ax=ax, kl_ax=kl_ax)  # raw weights are normalised
    m, S = _product_by_hand(experts, lam)
    np.testing.assert_allclose(frame.lam, lam)
    np.testing.assert_allclose(frame.product.mean(), m, atol=1e-10)
    np.testing.assert_allclose(frame.product.cov(), S, atol=1e-10)
    kls = [gaussian_kl(m, S, e.means[0], e.covs[0]) for e in experts]
    np.testing.assert_allclose(frame.kls, kls, rtol=1e-10)
    assert frame.max_kl == pytest.approx(max(kls))
    assert len(kl_ax.patches) == 3  # one bar per expert


def test_composition_view_lam_star_is_the_min_max(fig1_experts):
    """At λ* (the paper's Fig. 1: (0.495, 0.2525, 0.2525)) the three KLs are equal, and no λ on the
    simplex has a smaller worst-case KL (checked on a grid of the simplex)."""
    star = W.composition_view(fig1_experts, [0.495, 0.2525, 0.2525], lam_star=[0.495, 0.2525, 0.2525])
    assert np.ptp(star.kls) < 0.05 * star.max_kl
    # KL(q^{λ*} ‖ q_i) from the product written out by hand, whatever λ the frame shows
    kls_hand = [gaussian_kl(*_product_by_hand(fig1_experts, [0.495, 0.2525, 0.2525]), e.means[0], e.covs[0])
                for e in fig1_experts]
    np.testing.assert_allclose(star.kls_star, kls_hand, rtol=1e-10)
    other = W.composition_view(fig1_experts, [0.2, 0.3, 0.5], lam_star=[0.495, 0.2525, 0.2525])
    np.testing.assert_allclose(other.kls_star, kls_hand, rtol=1e-10)
    worst = []
    for a in np.linspace(0.05, 0.9, 18):
        for b in np.linspace(0.05, 0.9, 18):
            if a + b < 0.95:
                worst.append(max(gaussian_kl(*_product_by_hand(fig1_experts, [a, b, 1 - a - b]), e.means[0], e.covs[0])
                                 for e in fig1_experts))
    assert star.max_kl <= min(worst) + 1e-6
    equal = W.composition_view(fig1_experts, [1, 1, 1])
    assert equal.max_kl > star.max_kl + 5  # 17.8 vs 10.2 (Chapter 5)


def test_composition_view_mixture_experts_all_weight_on_one():
    """Mixture experts (grid product): all weight on expert i gives back q_i, with KL(q_i‖q_i) ≈ 0."""
    experts = load_problem(data_path("problems", "fig2_or.json")).experts
    frame = W.composition_view(experts, [0.0, 1.0])
    assert frame.kls[1] < 1e-3 and frame.kls[0] > 1.0
    np.testing.assert_allclose(frame.product.mean(), experts[1].mean(), atol=0.02)
    half = W.composition_view(experts, [1.0, 1.0])
    assert np.all(half.kls > 0)


def test_composition_explorer_callback(fig1_experts):
    pytest.importorskip("ipywidgets")
    ui = W.composition_explorer(fig1_experts)
    assert [c.description for c in ui.children[:3]] == ["w1", "w2", "w3"]
    np.testing.assert_allclose(ui.result.lam, [1 / 3] * 3)  # built with equal weights
    np.testing.assert_allclose(ui.result.lam_star, [0.495, 0.2525, 0.2525], atol=1e-3)
    frame = ui.f(w1=0.5, w2=0.25, w3=0.25)
    np.testing.assert_allclose(frame.lam, [0.5, 0.25, 0.25])
    np.testing.assert_allclose(frame.kls, [10.0, 10.4, 10.4], atol=1e-6)  # by hand: see _product_by_hand
    assert ui.f(w1=0.0, w2=0.0, w3=0.0) is None


def test_composition_bad_input(fig1_experts):
    with pytest.raises(ValueError, match="lam"):
        W.composition_view(fig1_experts, [0.5, 0.5])
    with pytest.raises(ValueError, match="lam"):
        W.composition_view(fig1_experts, [0.5, -0.1, 0.6])
    with pytest.raises(ValueError, match="experts"):
        W.composition_view(fig1_experts[:1], [1.0])
    with pytest.raises(ValueError, match="experts"):
        W.composition_view([G(np.zeros(3), 1.0), G(np.ones(3), 1.0)], [0.5, 0.5])
    with pytest.raises(ValueError, match="labels"):
        W.composition_figure(fig1_experts, [[1, 1, 1]], labels=["a", "b"])


def test_composition_figure(fig1_experts):
    frames = W.composition_figure(fig1_experts, [[1, 1, 1], [0.495, 0.2525, 0.2525]], labels=["equal", "λ*"])
    assert len(frames) == 2 and frames[1].max_kl < frames[0].max_kl
    assert len(plt.gcf().axes) == 3


# --------------------------------------------------------------------------- DAS
@pytest.fixture(scope="module")
def circle():
    import torch

    torch.set_num_threads(1)
    return load_problem(data_path("problems", "das_circle.json"))


def _tilted_mean_reward_on_grid(base, reward, alpha, half=12.0, n=801):
    """E_{p*} r with p* ∝ q e^{r/α}, by integration on a grid (scipy's normal densities, not the library's)."""
    from scipy.stats import multivariate_normal

    ax = np.linspace(-half, half, n)
    gx, gy = np.meshgrid(ax, ax, indexing="ij")
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    q = sum(w * multivariate_normal(m, c).pdf(pts) for w, m, c in zip(base.weights, base.means, base.covs))
    rv = reward(pts)
    logw = np.log(np.maximum(q, 1e-300)) + rv / alpha
    p = np.exp(logw - logw.max())
    return float(p @ rv / p.sum())


def test_das_view_consistency_and_target(circle):
    """One particle per run is DAS's proposal alone (far from p*); 16 particles come near the Monte
    Carlo floor (Chapter 7 measures the same on this toy). The exact target's mean reward is the
    published −1.34 (DAS paper)."""
    r = circle.rewards[0]
    one = W.das_view(circle.base, r, 1, total=512)
    many = W.das_view(circle.base, r, 16, total=512, ax=plt.subplots()[1])
    assert one.runs == 512 and many.runs == 32 and many.x.shape == (512, 2)
    assert one.target_mean_reward == pytest.approx(-1.34, abs=0.005)
    assert one.distance > 0.5 and one.resamples == 0 and one.min_ess == 1.0
    assert many.distance < one.distance / 3 and many.distance < 4 * many.floor
    se = np.std(r(many.x)) / np.sqrt(len(many.x))
    assert abs(many.mean_reward - many.target_mean_reward) < 0.1 + 4 * se


def test_das_view_bad_input(circle):
    r = circle.rewards[0]
    with pytest.raises(ValueError, match="n_particles"):
        W.das_view(circle.base, r, 0)
    with pytest.raises(ValueError, match="total"):
        W.das_view(circle.base, r, 64, total=32)
    with pytest.raises(ValueError, match="alpha"):
        W.das_view(circle.base, r, 4, alpha=0.0)
    with pytest.raises(ValueError, match="base"):
        W.das_view(G(np.zeros(3), 1.0), r, 4)


def test_das_explorer_callback(circle):
    pytest.importorskip("ipywidgets")
    r = circle.rewards[0]
    ui = W.das_explorer(circle.base, r, particles=(1, 4, 16), n_particles=4, total=256)
    assert ui.result.n == 4 and ui.result.runs == 64
    frame = ui.f(N=16, alpha=0.3)
    assert frame.n == 16 and frame.runs == 16 and frame.alpha == 0.3
    # the callback's numbers are those of its own particles and of the exact tilt at the chosen α
    assert frame.mean_reward == pytest.approx(float(np.mean(r(frame.x))), rel=1e-12)
    assert frame.target_mean_reward == pytest.approx(_tilted_mean_reward_on_grid(circle.base, r, 0.3), abs=1e-6)
    with pytest.raises(ValueError, match="n_particles"):
        W.das_explorer(circle.base, circle.rewards[0], particles=(1, 4), n_particles=16)
    with pytest.raises(ValueError, match="alpha"):
        W.das_explorer(circle.base, circle.rewards[0], alphas=(1.0,), alpha=0.5)


def test_das_figure(circle):
    r = circle.rewards[0]
    frames = W.das_figure(circle.base, r, particles=(1, 8), show=(1,), total=256)
    assert [f.n for f in frames] == [1, 8]
    assert len(plt.gcf().axes) == 2
    # N = 1 is the proposal alone; 8 particles per run come much closer to p* (Chapter 7's claim)
    assert frames[1].distance < frames[0].distance / 2
    target = _tilted_mean_reward_on_grid(circle.base, r, 1.0)
    assert all(f.target_mean_reward == pytest.approx(target, abs=1e-6) for f in frames)
    # the right panel plots the distance against N: its line carries the frames' distances
    xs, ys = plt.gcf().axes[-1].lines[0].get_data()
    np.testing.assert_allclose(ys, [f.distance for f in frames])


# --------------------------------------------------------------------------- alignment (chapter 3)
def test_alignment_view_is_the_exact_solution():
    q = GaussianMixture([0.5, 0.5], [[-1.5, 0.0], [1.5, 0.0]], [0.3 * np.eye(2)] * 2)
    rewards = [LinearReward([0.0, 1.0]), QuadraticReward(np.eye(2), [1.5, 1.0])]
    res = W.alignment_view(q, rewards, [0.5, -1.5], ax=plt.subplots()[1])
    # KKT checked by integrating q e^{λᵀr} on a grid (scipy densities, hand-written rewards): each
    # constraint holds, with equality where λ_i > 0, and λ is a maximiser of the dual λᵀb − log Z(λ).
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    ax1 = np.linspace(-8, 8, 641)
    gx, gy = np.meshgrid(ax1, ax1, indexing="ij")
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    logq = np.log(sum(0.5 * multivariate_normal(m, 0.3 * np.eye(2)).pdf(pts) for m in ([-1.5, 0], [1.5, 0])) + 1e-300)
    rv = np.stack([pts[:, 1], -((pts - [1.5, 1.0]) ** 2).sum(1)], 1)
    b = np.array([0.5, -1.5])

    def dual(lam):
        return lam @ b - (logsumexp(logq + rv @ lam) + np.log((ax1[1] - ax1[0]) ** 2))

    lw = logq + rv @ res.lam
    er = np.exp(lw - logsumexp(lw)) @ rv
    assert np.all(er >= b - 1e-6)
    np.testing.assert_allclose(er[res.lam > 0], b[res.lam > 0], atol=1e-6)
    assert (res.lam > 0).any()
    rng = np.random.default_rng(0)
    for _ in range(8):
        assert dual(np.clip(res.lam + rng.normal(scale=0.05, size=2), 0, None)) <= dual(res.lam) + 1e-9
    # an active linear constraint puts the tilted mean exactly on its line: E[x₂] = 0.5
    assert res.target.mean()[1] == pytest.approx(0.5, abs=1e-6)


def test_alignment_view_infeasible_returns_none():
    q = G([0.0, 0.0], 1.0)
    clash = [LinearReward([1.0, 0.0]), LinearReward([-1.0, 0.0])]
    ax = plt.subplots()[1]
    assert W.alignment_view(q, clash, [1.0, 1.0], ax=ax) is None
    assert "infeasible" in ax.get_title()


def test_alignment_explorer_callback_and_ranges():
    pytest.importorskip("ipywidgets")
    q = G([0.0, 0.0], 1.0)
    rewards = [LinearReward([1.0, 0.0])]
    ui = W.alignment_explorer(q, rewards, ranges=[(-1.0, 2.0, 0.1)], thresholds=[1.0])
    res = ui.f(b1=1.0)
    assert res.lam[0] == pytest.approx(1.0, abs=1e-6)  # N(0, I) tilted by λx has mean λ
    with pytest.raises(ValueError, match="ranges"):
        W.alignment_explorer(q, rewards, ranges=[(2.0, 1.0)])
    with pytest.raises(ValueError, match="thresholds"):
        W.alignment_explorer(q, rewards, ranges=[(0.0, 1.0)], thresholds=[0.1, 0.2])
