"""cda_lite.exact against independent truth: Monte-Carlo importance reweighting, direct numerical
integration on a grid, textbook closed forms, finite differences and brute-force geometry."""
import itertools
import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from cda_lite import exact as E
from cda_lite.gmm import GaussianMixture

# A multimodal base with unequal, correlated components.
W = [0.5, 0.3, 0.2]
MU = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 2.0]])
COV = np.array([np.eye(2), [[0.5, 0.2], [0.2, 0.4]], 0.3 * np.eye(2)])
LIN_W = np.array([1.0, 0.5])
QUAD_A = np.array([[1.0, 0.2], [0.2, 0.5]])
QUAD_C = np.array([1.0, 1.0])


def base():
    return GaussianMixture(W, MU, COV)


# Hand-written rewards (not the library's reward classes) for the independent checks.
def r_lin(x):
    return x @ LIN_W


def r_quad(x):
    d = x - QUAD_C
    return -np.einsum("ni,ij,nj->n", d, QUAD_A, d)


def lib_rewards():
    return [E.LinearReward(LIN_W), E.QuadraticReward(QUAD_A, QUAD_C)]


def base_log_pdf(x, w=W, mu=MU, cov=COV):
    return logsumexp([math.log(wk) + multivariate_normal(m, c).logpdf(x) for wk, m, c in zip(w, mu, cov)], axis=0)


_AX = np.linspace(-10, 10, 401)
_GX, _GY = np.meshgrid(_AX, _AX, indexing="ij")
GRID = np.stack([_GX.ravel(), _GY.ravel()], 1)
DA = (_AX[1] - _AX[0]) ** 2
LOGQ_GRID = base_log_pdf(GRID)
RV_GRID = np.stack([r_lin(GRID), r_quad(GRID)], 1)


def grid_tilt(lam):
    """Integrate q e^{λᵀr} on a fine grid (trapezoid; the integrand decays like a Gaussian, so the
    rule is exponentially accurate). Returns log Z, normalised cell weights, rewards at the nodes."""
    rv = RV_GRID
    logw = LOGQ_GRID + rv @ np.asarray(lam, float)
    log_z = logsumexp(logw) + math.log(DA)
    p = np.exp(logw - logsumexp(logw))
    return log_z, p, rv


# ------------------------------------------------------------------ tilts
def test_tilt_single_gaussian_linear_textbook():
    mu, cov = np.array([0.5, -1.0]), np.array([[1.0, 0.4], [0.4, 2.0]])
    w, lam = np.array([0.7, -0.3]), 1.3
    t = E.tilt(GaussianMixture.gaussian(mu, cov), [E.LinearReward(w)], [lam])
    np.testing.assert_allclose(t.means[0], mu + lam * cov @ w, rtol=1e-12)
    np.testing.assert_allclose(t.covs[0], cov, rtol=1e-12)
    # log Z = λwᵀμ + ½λ²wᵀΣw (moment generating function of a Gaussian).
    np.testing.assert_allclose(E.log_partition(GaussianMixture.gaussian(mu, cov), [E.LinearReward(w)], [lam]),
                               lam * w @ mu + 0.5 * lam**2 * w @ cov @ w, rtol=1e-12)


@pytest.mark.parametrize("lam", [[0.6, 0.0], [0.0, 0.8], [0.5, 0.4]], ids=["linear", "quadratic", "combined"])
def test_tilt_matches_importance_reweighting(lam):
    n = 400_000
    x = base().sample(n, seed=5)
    logw = np.stack([r_lin(x), r_quad(x)], 1) @ np.array(lam)
    w = np.exp(logw - logw.max())
    w /= w.sum()
    ess = 1 / np.sum(w**2)
    assert ess > 5_000  # the check below has power
    t = E.tilt(base(), lib_rewards(), lam)
    feats = np.column_stack([x, r_lin(x), r_quad(x)])
    est = w @ feats
    se = np.sqrt(w**2 @ (feats - est) ** 2)  # delta-method SE of the self-normalised estimate
    exact = np.concatenate([t.mean(), E.expected_rewards(t, lib_rewards())])
    assert np.all(np.abs(est - exact) < 4 * se + 1e-12), (est, exact, se)
    # log Z against the plain Monte-Carlo mean of e^{λᵀr}.
    m = np.exp(logw - logw.max())
    log_z_mc = math.log(m.mean()) + logw.max()
    se_log = m.std() / (m.mean() * math.sqrt(n))
    assert abs(E.log_partition(base(), lib_rewards(), lam) - log_z_mc) < 4 * se_log


@pytest.mark.parametrize("lam", [[0.6, 0.0], [0.0, 0.8], [0.5, 0.4], [1.5, 2.0]])
def test_tilt_and_log_partition_match_grid_integration(lam):
    log_z, p, rv = grid_tilt(lam)
    assert abs(E.log_partition(base(), lib_rewards(), lam) - log_z) < 1e-8
    t = E.tilt(base(), lib_rewards(), lam)
    np.testing.assert_allclose(t.mean(), p @ GRID, atol=1e-8)
    d = GRID - p @ GRID
    np.testing.assert_allclose(t.cov(), (p[:, None] * d).T @ d, atol=1e-8)
    np.testing.assert_allclose(E.expected_rewards(t, lib_rewards()), p @ rv, atol=1e-8)
    # The tilted density itself, point-wise.
    pts = GRID[:: 997]
    log_tilt = base_log_pdf(pts) + np.stack([r_lin(pts), r_quad(pts)], 1) @ np.array(lam) - log_z
    np.testing.assert_allclose(t.log_prob(pts), log_tilt, atol=1e-7)
    # KL(q_λ‖q) = E_{q_λ}[λᵀr] − log Z.
    assert abs(E.kl_tilt(base(), lib_rewards(), lam) - (p @ rv @ np.array(lam) - log_z)) < 1e-7


def test_tilt_rejects_non_normalisable_multiplier():
    with pytest.raises(ValueError, match="lam"):
        E.tilt(base(), [E.QuadraticReward(np.eye(2), [0, 0])], [-5.0])
    with pytest.raises(ValueError, match="lam"):
        E.tilt(base(), lib_rewards(), [1.0])


def test_dual_function_gradient_matches_finite_differences():
    b = np.array([1.2, -3.0])
    for lam in ([0.3, 0.2], [1.0, 0.05], [0.0, 0.7]):
        lam = np.array(lam)
        h = 1e-5
        fd = np.array([(E.dual_function(base(), lib_rewards(), b, lam + h * e)
                        - E.dual_function(base(), lib_rewards(), b, lam - h * e)) / (2 * h) for e in np.eye(2)])
        _, p, rv = grid_tilt(lam)
        np.testing.assert_allclose(fd, b - p @ rv, atol=1e-6)


# ------------------------------------------------------------------ UR-A
def test_align_dual_single_gaussian_closed_form():
    mu, cov, w = np.array([0.2, -0.4]), np.array([[0.8, 0.3], [0.3, 1.5]]), np.array([1.0, 2.0])
    for b in (1.0, 4.0):
        res = E.align_dual(GaussianMixture.gaussian(mu, cov), [E.LinearReward(w)], [b])
        lam_true = (b - w @ mu) / (w @ cov @ w)
        assert abs(res.lam[0] - lam_true) <= 1e-6 * lam_true
        # KL of a mean shift: ½ (Δμ)ᵀΣ⁻¹Δμ with Δμ = λΣw.
        assert abs(res.kl - 0.5 * lam_true**2 * w @ cov @ w) <= 1e-6 * res.kl
    # A level already met costs nothing.
    res = E.align_dual(GaussianMixture.gaussian(mu, cov), [E.LinearReward(w)], [w @ mu - 1])
    assert res.lam[0] == 0.0 and res.kl == pytest.approx(0.0, abs=1e-12)
    assert res.active.dtype == bool and res.active.tolist() == [False]  # λ* = 0 is not active


@pytest.mark.parametrize("b,active", [([1.5, -3.0], [True, True]), ([1.5, -20.0], [True, False]),
                                      ([-5.0, -1.0], [False, True])])
def test_align_dual_kkt(b, active):
    b = np.array(b)
    res = E.align_dual(base(), lib_rewards(), b)
    lam = res.lam
    assert np.all(lam >= 0)
    np.testing.assert_array_equal(lam > 0, active)
    # the reported active set (a constraint with λ* = 0 is inactive, whatever its slack)
    assert res.active.dtype == bool
    np.testing.assert_array_equal(res.active, active)
    # Expected rewards of the answer computed by direct integration, not by the library.
    _, p, rv = grid_tilt(lam)
    er = p @ rv
    act = np.array(active)
    np.testing.assert_allclose(er[act], b[act], atol=1e-8)
    assert np.all(lam[~act] == 0) and np.all(er[~act] - b[~act] >= 0)
    # Strong duality, with the dual D(λ) = λᵀb − log Z(λ) integrated on the grid: D(λ*) = KL*, and
    # no other λ ≥ 0 does better (weak duality).
    log_z, _, _ = grid_tilt(lam)
    assert lam @ b - log_z == pytest.approx(res.kl, abs=1e-8)
    assert res.kl == pytest.approx(lam @ er - log_z, abs=1e-8)
    rng = np.random.default_rng(0)
    for _ in range(12):
        cand = np.clip(lam + rng.normal(scale=0.1, size=2), 0, None)
        assert cand @ b - grid_tilt(cand)[0] <= res.kl + 1e-10


def test_align_sensitivity_equals_multiplier():
    b = np.array([1.5, -3.0])
    res = E.align_dual(base(), lib_rewards(), b)
    h = 1e-4
    for i in range(2):
        e = np.eye(2)[i] * h
        dkl = (E.align_dual(base(), lib_rewards(), b + e).kl - E.align_dual(base(), lib_rewards(), b - e).kl) / (2 * h)
        assert dkl == pytest.approx(res.lam[i], rel=1e-5)


def test_infeasible_quadratic_level_names_constraint():
    rewards = [E.LinearReward([1, 0]), E.QuadraticReward(np.eye(2), [0, 2])]
    with pytest.raises(E.InfeasibleConstraintError, match="constraint 1") as info:
        E.align_dual(base(), rewards, [0.5, 0.0])
    assert info.value.constraints == [1]
    assert isinstance(info.value, ValueError)


def test_infeasible_contradicting_linear_constraints():
    rewards = [E.LinearReward([1, 0]), E.LinearReward([-1, 0])]  # E x₁ ≥ 1 and E x₁ ≤ 0
    with pytest.raises(E.InfeasibleConstraintError, match=r"constraint [01]") as info:
        E.align_dual(base(), rewards, [1.0, 0.0])
    assert info.value.constraints and set(info.value.constraints) <= {0, 1}


def test_align_dual_bad_thresholds():
    with pytest.raises(ValueError, match="thresholds"):
        E.align_dual(base(), lib_rewards(), [1.0])
    with pytest.raises(ValueError, match="thresholds"):
        E.align_dual(base(), lib_rewards(), [1.0, np.nan])


# ------------------------------------------------------------------ AND
def _meb_center(points):
    """Minimum enclosing ball by brute force over the circles through 2 or 3 of the points."""
    best = (np.inf, None)
    for a, b in itertools.combinations(points, 2):
        c = (a + b) / 2
        best = min(best, (np.linalg.norm(a - c), tuple(c)), key=lambda t: t[0]) if np.all(
            np.linalg.norm(points - c, axis=1) <= np.linalg.norm(a - c) + 1e-12) else best
    for a, b, c3 in itertools.combinations(points, 3):
        M = 2 * np.array([b - a, c3 - a])
        if abs(np.linalg.det(M)) < 1e-12:
            continue
        c = np.linalg.solve(M, [b @ b - a @ a, c3 @ c3 - a @ a])
        r = np.linalg.norm(a - c)
        if np.all(np.linalg.norm(points - c, axis=1) <= r + 1e-12) and r < best[0]:
            best = (r, tuple(c))
    return np.array(best[1]), best[0]


def test_product_equal_variance_is_min_enclosing_ball_fig1():
    means = np.array([[1.0, 0.0], [-1.0, 0.2], [-1.0, -0.2]])
    var = 0.05
    res = E.product_dual([GaussianMixture.gaussian(m, var) for m in means])
    centre, radius = _meb_center(means)
    np.testing.assert_allclose(res.lam @ means, centre, atol=1e-7)
    np.testing.assert_allclose(res.target.means[0], centre, atol=1e-7)
    np.testing.assert_allclose(res.lam, [0.495, 0.2525, 0.2525], atol=1e-6)
    # KL(N(c,σ²I)‖N(μ_i,σ²I)) = ‖c−μ_i‖²/(2σ²), equal for the active experts.
    np.testing.assert_allclose(res.kls, radius**2 / (2 * var), rtol=1e-6)


def test_product_equal_variance_inactive_expert():
    means = np.array([[2.0, 0.0], [-1.0, 1.5], [-1.0, -1.5], [0.2, 0.1]])  # the last one lies inside
    var = 0.3
    res = E.product_dual([GaussianMixture.gaussian(m, var) for m in means])
    centre, radius = _meb_center(means)
    np.testing.assert_allclose(res.lam @ means, centre, atol=1e-6)
    assert res.lam[3] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(res.kls[:3], radius**2 / (2 * var), rtol=1e-6)
    assert res.kls[3] < res.kls[0]


def _gauss_kl(m0, S0, m1, S1):
    P1 = np.linalg.inv(S1)
    d = m1 - m0
    return 0.5 * (np.trace(P1 @ S0) + d @ P1 @ d - len(m0) + math.log(np.linalg.det(S1) / np.linalg.det(S0)))


def test_product_unequal_variances_methods_numbers():
    mus = [np.array([1.0, 0.0]), np.array([-1.0, 0.0])]
    covs = [0.025 * np.eye(2), 0.5 * np.eye(2)]
    res = E.product_dual([GaussianMixture.gaussian(m, c) for m, c in zip(mus, covs)])
    np.testing.assert_allclose(res.lam, [0.210, 0.790], atol=1e-3)
    assert res.max_kl == pytest.approx(3.638, abs=1e-3)
    # Independent solve: the weighted product in closed form, KLs by hand; scan λ₁ for the
    # min-max, then refine at the crossing KL₁ = KL₂ by bisection.
    def kls(l1):
        lam = np.array([l1, 1 - l1])
        P = sum(l * np.linalg.inv(c) for l, c in zip(lam, covs))
        S = np.linalg.inv(P)
        m = S @ sum(l * np.linalg.inv(c) @ mu for l, mu, c in zip(lam, mus, covs))
        return np.array([_gauss_kl(m, S, mu, c) for mu, c in zip(mus, covs)])

    scan = np.linspace(0, 1, 401)
    i = int(np.argmin([kls(l).max() for l in scan]))
    l1 = brentq(lambda l: kls(l)[0] - kls(l)[1], scan[max(i - 1, 0)], scan[min(i + 1, 400)], xtol=1e-14)
    assert res.lam[0] == pytest.approx(l1, abs=1e-7)
    assert res.max_kl == pytest.approx(kls(l1).max(), abs=1e-6)
    np.testing.assert_allclose(res.kls, kls(l1), atol=1e-6)


def test_gaussian_kl_matches_monte_carlo():
    m0, S0 = np.array([0.3, -0.2]), np.array([[0.6, 0.2], [0.2, 0.9]])
    m1, S1 = np.array([-0.5, 0.4]), np.array([[1.2, -0.3], [-0.3, 0.7]])
    x = np.random.default_rng(2).multivariate_normal(m0, S0, size=200_000)
    lr = multivariate_normal(m0, S0).logpdf(x) - multivariate_normal(m1, S1).logpdf(x)
    assert abs(E.gaussian_kl(m0, S0, m1, S1) - lr.mean()) < 4 * lr.std() / math.sqrt(len(x))
    assert E.gaussian_kl(m0, S0, m0, S0) == pytest.approx(0.0, abs=1e-12)


MIX_EXPERTS = [
    GaussianMixture([0.5, 0.5], [[1.0, 1.0], [1.5, -1.0]], [0.2 * np.eye(2), 0.3 * np.eye(2)]),
    GaussianMixture([0.7, 0.3], [[-1.0, 0.0], [-0.5, 1.5]], [[[0.4, 0.1], [0.1, 0.3]], 0.2 * np.eye(2)]),
    GaussianMixture.gaussian([0.0, -1.5], 0.5),
]


_PRODUCT_GRIDS = {}


def _own_product_grid(lam, n=401, lo=-6.0, hi=6.0):
    if n not in _PRODUCT_GRIDS:
        ax = np.linspace(lo, hi, n)
        X, Y = np.meshgrid(ax, ax, indexing="ij")
        pts = np.stack([X.ravel(), Y.ravel()], 1)
        logq = np.stack([base_log_pdf(pts, e.weights, e.means, e.covs) for e in MIX_EXPERTS])
        _PRODUCT_GRIDS[n] = ((ax[1] - ax[0]) ** 2, logq)
    da, logq = _PRODUCT_GRIDS[n]
    lp = np.asarray(lam) @ logq
    log_z = logsumexp(lp) + math.log(da)
    p = np.exp(lp - log_z) * da
    kls = np.array([p @ (lp - log_z - lq) for lq in logq])
    return log_z, kls


def test_product_of_mixtures_on_grid_brute_force():
    res = E.product_dual(MIX_EXPERTS)
    assert res.exact == "grid"
    assert np.all(res.lam >= 0) and res.lam.sum() == pytest.approx(1.0, abs=1e-10)
    log_z_star, kls = _own_product_grid(res.lam)
    np.testing.assert_allclose(res.kls, kls, atol=2e-3)
    act = res.lam > 1e-6
    assert act.sum() >= 2
    assert np.ptp(kls[act]) < 2e-3
    assert np.all(kls[~act] <= kls[act].max() + 2e-3)
    rng = np.random.default_rng(0)
    lz_star, k_star = _own_product_grid(res.lam, n=201)
    for lam in rng.dirichlet(np.ones(3), size=60):
        lz, k = _own_product_grid(lam, n=201)
        assert lz >= lz_star - 1e-6  # λ* minimises log Z_AND (maximises the dual)
        assert k.max() >= k_star.max() - 1e-3  # and the worst-case KL


def test_product_dual_rejects_bad_experts():
    with pytest.raises(ValueError, match="experts"):
        E.product_dual([GaussianMixture.gaussian([0, 0], 1.0)])
    with pytest.raises(ValueError, match=r"experts\[1\]"):
        E.product_dual([GaussianMixture.gaussian([0, 0], 1.0), GaussianMixture.gaussian([0, 0, 0], 1.0)])


# ------------------------------------------------------------------ OR
def _fig2_experts():
    q1 = GaussianMixture.gaussian([0.75, 0.0], 0.025)
    q2 = GaussianMixture([0.5, 0.5], [[-0.75, 0.75], [-0.75, -0.75]], [0.025 * np.eye(2)] * 2)
    return [q1, q2]


def _gauss_entropy(cov):
    cov = np.atleast_2d(cov)
    return 0.5 * math.log(np.linalg.det(2 * math.pi * math.e * cov))


def test_mixture_dual_fig2():
    res = E.mixture_dual(_fig2_experts())
    np.testing.assert_allclose(res.lam, [1 / 3, 2 / 3], atol=1e-4)
    # Three equal, well separated modes with weight 1/3: H = log 3 + H(N(0, 0.025 I)).
    assert res.entropy == pytest.approx(math.log(3) + _gauss_entropy(0.025 * np.eye(2)), abs=1e-4)
    assert np.ptp(res.cross_entropies) < 1e-6


def test_mixture_dual_separated_experts_entropy_weights():
    covs = [0.1 * np.eye(2), 0.4 * np.eye(2), np.array([[0.3, 0.1], [0.1, 0.2]])]
    means = [[-5.0, 0.0], [5.0, 0.0], [0.0, 6.0]]
    res = E.mixture_dual([GaussianMixture.gaussian(m, c) for m, c in zip(means, covs)])
    h = np.array([_gauss_entropy(c) for c in covs])
    np.testing.assert_allclose(res.lam, np.exp(h) / np.exp(h).sum(), atol=2e-4)


def _own_expert_densities(experts, n=301, lo=-2.0, hi=2.0):
    ax = np.linspace(lo, hi, n)
    X, Y = np.meshgrid(ax, ax, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel()], 1)
    return (ax[1] - ax[0]) ** 2, [np.exp(base_log_pdf(pts, e.weights, e.means, e.covs)) for e in experts]


def _own_mixture_entropy(grid, lam):
    da, qs = grid
    dens = sum(l * q for l, q in zip(lam, qs))
    m = dens > 0
    return -np.sum(dens[m] * np.log(dens[m])) * da


def test_mixture_dual_maximises_entropy():
    experts = _fig2_experts()
    res = E.mixture_dual(experts)
    grid = _own_expert_densities(experts)
    h_star = _own_mixture_entropy(grid, res.lam)
    assert h_star == pytest.approx(res.entropy, abs=1e-3)
    for l1 in np.random.default_rng(1).uniform(size=40):
        assert _own_mixture_entropy(grid, [l1, 1 - l1]) <= h_star + 1e-9


# ------------------------------------------------------------------ found by mutation testing
def test_align_result_carries_its_inputs_and_outputs():
    b = np.array([1.5, -3.0])
    res = E.align_dual(base(), lib_rewards(), b)
    np.testing.assert_array_equal(res.thresholds, b)
    _, p, rv = grid_tilt(res.lam)
    np.testing.assert_allclose(res.expected, p @ rv, atol=1e-8)  # E_target r, integrated on the grid
    np.testing.assert_allclose(res.target.mean(), p @ GRID, atol=1e-8)


def test_infeasible_messages_say_why():
    rewards = [E.LinearReward([1, 0]), E.QuadraticReward(np.eye(2), [0, 2])]
    # a level at the reward's supremum (0 for −‖x − c‖²) is reached only by a point mass: rejected up front
    with pytest.raises(E.InfeasibleConstraintError,
                       match=r"^infeasible constraint level\(s\): constraint 1 \(quadratic\) asks E r ≥ 0 but r ≤ 0 everywhere$"):
        E.align_dual(base(), rewards, [0.5, 0.0])
    with pytest.raises(ValueError, match="^thresholds"):
        E.align_dual(base(), rewards, [[0.5, -1.0]])
    with pytest.raises(ValueError, match="^thresholds"):
        E.align_dual(base(), rewards, [0.5, np.nan])
