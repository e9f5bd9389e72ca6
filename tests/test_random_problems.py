"""Random problem families (issue 12): files load through the ordinary loader, the exact solvers
accept them, draws are deterministic per seed, and the family has the advertised properties checked
against independent computations (Monte Carlo moments, brute-force reweighting)."""
import json

import numpy as np
import pytest

from cda_lite.empirical import empirical_align_dual, refine_multipliers
from cda_lite.exact import InfeasibleConstraintError, align_dual, product_dual
from cda_lite.gmm import GaussianMixture
from cda_lite.exact.problems import (AlignmentProblem, CompositionProblem, load_problem, random_alignment,
                               random_composition, reward_moments, save_problem)

SEEDS = range(12)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_alignment_file_round_trip_and_exact(seed, tmp_path):
    p = random_alignment(seed)
    path = tmp_path / "p.json"
    save_problem(p, path)
    q = load_problem(str(path))
    assert isinstance(q, AlignmentProblem) and q.seed == seed
    assert 2 <= q.base.n_components <= 4
    assert [r.kind for r in q.rewards] == ["linear", "quadratic"]
    res = align_dual(q.base, q.rewards, q.thresholds)  # feasible by construction
    assert np.all(res.lam >= 0) and res.lam.max() > 0  # every level is above the base's mean: some λ* > 0
    assert np.all(res.expected >= q.thresholds - 1e-6 * np.maximum(1, np.abs(q.thresholds)))
    # levels 0.3–1.0 σ above the base's mean, checked with Monte Carlo moments (not reward_moments)
    x = q.base.sample(400_000, seed=seed + 100)
    for r, b in zip(q.rewards, q.thresholds):
        v = r(x)
        k = (b - v.mean()) / v.std()
        assert 0.3 - 0.02 <= k <= 1.0 + 0.02, k


def test_random_families_are_deterministic_and_vary():
    for fn in (random_alignment, random_composition):
        a, b = fn(5).to_dict(), fn(5).to_dict()
        assert json.dumps(a) == json.dumps(b)
        assert json.dumps(fn(5).to_dict()) != json.dumps(fn(6).to_dict())


def test_covariances_are_full_and_unequal():
    p = random_alignment(0)
    assert np.all(np.abs(p.base.covs[:, 0, 1]) > 1e-6)
    c = random_composition(0)
    covs = np.stack([e.covs[0] for e in c.experts])
    assert np.all(np.abs(covs[:, 0, 1]) > 1e-6)
    assert not np.allclose(covs[0], covs[1])


def test_random_composition_files_and_inactive_experts(tmp_path):
    inactive = 0
    for seed in range(10):
        c = random_composition(seed)
        path = tmp_path / f"c{seed}.json"
        save_problem(c, path)
        q = load_problem(path)
        assert isinstance(q, CompositionProblem) and 2 <= len(q.experts) <= 4
        assert all(e.n_components == 1 for e in q.experts)
        res = product_dual(q.experts)
        assert abs(res.lam.sum() - 1) < 1e-8
        active = res.lam > 1e-6
        np.testing.assert_allclose(res.kls[active], res.kls[active].max(), rtol=1e-5)
        assert np.all(res.kls[~active] <= res.kls[active].max() + 1e-6)  # KKT of the inactive ones
        inactive += int((~active).any())
    assert inactive >= 1  # the family includes draws with an expert inactive at λ*


def test_reward_moments_match_monte_carlo():
    p = random_alignment(3)
    x = p.base.sample(1_000_000, seed=1)
    for r in p.rewards:
        m, s = reward_moments(p.base, r)
        v = r(x)
        assert m == pytest.approx(v.mean(), abs=4 * v.std() / 1000)
        assert s == pytest.approx(v.std(), rel=0.01)


def test_bad_seeds_raise():
    for bad in (-1, 1.5, True, "0"):
        with pytest.raises(ValueError, match="seed"):
            random_alignment(bad)
        with pytest.raises(ValueError, match="seed"):
            random_composition(bad)


# ------------------------------------------------------------------ the empirical dual
def test_empirical_dual_gaussian_closed_form():
    """N(0, 1), r = x, E r ≥ b: the tilt is N(λ, 1), so λ* = b; on 200 k samples within 2 %."""
    x = np.random.default_rng(0).standard_normal(200_000)
    res = empirical_align_dual(x[None], [0.7])
    assert res.lam[0] == pytest.approx(0.7, rel=0.02)
    assert res.expected[0] == pytest.approx(0.7, abs=1e-6)
    assert res.kl == pytest.approx(0.7**2 / 2, rel=0.05)  # KL(N(b,1)‖N(0,1)) = b²/2


@pytest.mark.parametrize("seed", [0, 2, 7])
def test_empirical_dual_converges_to_exact_on_exact_samples(seed):
    """On exact samples of the base mixture λ*(q̂_n) → λ*(q) (align_dual, closed form)."""
    p = random_alignment(seed)
    star = align_dual(p.base, p.rewards, p.thresholds)
    x = p.base.sample(400_000, seed=seed + 1)
    res = empirical_align_dual(np.stack([r(x) for r in p.rewards]), p.thresholds)
    assert np.linalg.norm(res.lam - star.lam) <= 0.05 * np.linalg.norm(star.lam) + 0.01


def test_empirical_dual_inactive_constraint_and_infeasible():
    x = np.random.default_rng(1).standard_normal(50_000)
    res = empirical_align_dual(np.stack([x, -x]), [0.5, -10.0])  # second level already met: λ_2 = 0
    assert res.lam[1] == 0.0 and res.lam[0] == pytest.approx(0.5, rel=0.05)
    with pytest.raises(InfeasibleConstraintError, match="constraint 0"):
        empirical_align_dual(x[None], [x.max() + 1])
    with pytest.raises(ValueError, match="values"):
        empirical_align_dual(np.array([[np.nan, 1.0]]), [0.0])
    with pytest.raises(ValueError, match="thresholds"):
        empirical_align_dual(x[None], [0.1, 0.2])


def test_newton_dual_step_is_exact_for_gaussian_linear():
    """Algorithm 1's preconditioned dual step (dual_precondition): for q = N(μ, Σ) and linear rewards
    r = x, E_λ r = μ + Σλ, so one full Newton step from any λ₀ lands on align_dual's λ*."""
    from cda_lite.align import newton_slacks
    from cda_lite.exact import LinearReward

    cov = np.array([[1.0, 0.8], [0.8, 0.9]])  # ill-conditioned: plain ascent crawls along one direction
    mu = np.array([0.2, -0.1])
    q = GaussianMixture.gaussian(mu, cov)
    rewards = [LinearReward([1.0, 0.0]), LinearReward([0.0, 1.0])]
    b = np.array([0.9, 0.5])
    star = align_dual(q, rewards, b).lam
    assert np.all(star > 0)
    lam0 = np.array([0.3, 0.3])
    slack = (mu + cov @ lam0) - b
    lam1 = np.maximum(lam0 - newton_slacks(slack, cov, lam0, ridge=0.0), 0)
    np.testing.assert_allclose(lam1, star, rtol=1e-6)
    # plain ascent with the same step size is far off after one step
    assert np.linalg.norm(np.maximum(lam0 - slack, 0) - star) > 0.2
    # an inactive constraint (λ = 0, slack > 0) is left to plain ascent
    out = newton_slacks(np.array([-0.1, 0.4]), cov, np.array([0.5, 0.0]), ridge=0.0)
    assert out[1] == 0.4 and out[0] == pytest.approx(-0.1 / cov[0, 0])


@pytest.mark.parametrize("seed", range(40))
def test_newton_dual_step_with_bounds_solves_the_bounded_quadratic_model(seed):
    """With the dual step size, the preconditioned step keeps λ ≥ 0 the Newton way: against the
    minimiser of the step's quadratic model slackᵀd + ½dᵀ(Cov/η)d over λ + d ≥ 0 (on the active set),
    found here by L-BFGS-B, it is that minimiser (seed 35 needs a stopped coordinate freed again), and
    never worse than clipping the unbounded step. Random collinear-ish covariances, λ with zeros, slacks
    of both signs; the first 40 seeds."""
    from scipy.optimize import minimize

    from cda_lite.align import newton_slacks

    rng = np.random.default_rng(seed)
    m, eta = 3, 0.5
    A = rng.normal(size=(m, m)) + 2.0 * np.ones((m, m)) * (seed % 2)  # odd seeds: nearly collinear rewards
    cov = A @ A.T + 0.05 * np.eye(m)
    lam = np.where(rng.random(m) < 0.4, 0.0, rng.uniform(0.05, 0.5, m))
    slack = rng.normal(scale=0.5, size=m)
    active = (lam > 0) | (slack < 0)
    new = np.maximum(lam - eta * newton_slacks(slack, cov, lam, ridge=0.0, lr=eta), 0.0)
    idx = np.flatnonzero(active)
    f = lambda dA: slack[idx] @ dA + 0.5 * dA @ (cov[np.ix_(idx, idx)] / eta) @ dA  # noqa: E731
    grad = lambda dA: slack[idx] + (cov[np.ix_(idx, idx)] / eta) @ dA  # noqa: E731
    res = minimize(f, np.zeros(len(idx)), jac=grad, bounds=[(-lam[i], None) for i in idx], method="L-BFGS-B",
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 1000})
    truth = lam.copy()
    truth[idx] += res.x
    plain = np.maximum(lam - eta * newton_slacks(slack, cov, lam, ridge=0.0), 0.0)
    assert np.all(new >= 0) and f(new[idx] - lam[idx]) <= f(plain[idx] - lam[idx]) + 1e-12  # never worse than clipping
    if not np.any(lam[idx] + res.x < 1e-9):  # no bound binds: the same step as without the step size
        np.testing.assert_allclose(new, plain, atol=1e-9)
    np.testing.assert_allclose(new, truth, atol=1e-6)  # the model's minimiser


@pytest.mark.parametrize("lam_bar,level", [(0.5, 1.2), (0.5, 0.2), (0.0, 0.7)])
def test_refine_multipliers_gaussian_closed_form(lam_bar, level):
    """Samples of the exact tilt N(λ̄, 1) of q = N(0, 1) by r = x: the multiplier that meets E r ≥ b is
    λ* = max(b, 0) (closed form), whether it lies above λ̄ (δ > 0) or below it (δ < 0, allowed down to −λ̄)."""
    x = np.random.default_rng(3).standard_normal(200_000) + lam_bar
    res = refine_multipliers(x[None], [level], [lam_bar])
    assert res.lam[0] == pytest.approx(level, abs=0.01)
    with pytest.raises(ValueError, match="lam"):
        refine_multipliers(x[None], [level], [-1.0])


def test_refine_multipliers_stops_at_zero():
    """A level the base already meets: λ* = 0, even when the tilted samples were drawn at λ̄ = 0.8."""
    x = np.random.default_rng(4).standard_normal(100_000) + 0.8
    res = refine_multipliers(x[None], [-0.5], [0.8])
    assert res.lam[0] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_and_dual_fed_exact_kls_reaches_product_dual(seed):
    """Algorithm 2's dual fed exact KLs converges to the closed-form λ* of product_dual (many rounds,
    slow decay), and the fast profile's 8 rounds already land within 0.01 (the dual schedule's share)."""
    from cda_lite.compose import ComposeConfig, and_dual_exact_kls, run_rounds

    p = random_composition(seed)
    star = product_dual(p.experts).lam
    long = run_rounds(and_dual_exact_kls(p.experts, ComposeConfig(rounds=60, dual_decay=0.97, average_last=10)), 10).lam
    assert np.abs(long - star).max() < 2e-3
    fast = run_rounds(and_dual_exact_kls(p.experts, ComposeConfig()), 3).lam
    assert np.abs(fast - star).max() < 0.01


def test_newton_and_dual_fed_exact_kls_and_curvature_converges_on_the_first_problems():
    """Algorithm 2's Newton dual (capped steps, the bench's settings) fed exact KLs and the exact
    curvature Cov(log q_i, log q_j) lands on product_dual's λ* for each of the first 30 problems of the
    family (inactive experts included); normalised gradient steps of the same lengths do not."""
    from cda_lite.compose import ComposeConfig, and_dual_exact_kls, run_rounds

    newton, plain = [], []
    for seed in range(30):
        p = random_composition(seed)
        star = product_dual(p.experts).lam
        cfg = ComposeConfig(dual_normalized=True, dual_newton=True)
        newton.append(np.abs(run_rounds(and_dual_exact_kls(p.experts, cfg), 3).lam - star).max())
        cfg = ComposeConfig(dual_normalized=True)
        plain.append(np.abs(run_rounds(and_dual_exact_kls(p.experts, cfg), 3).lam - star).max())
    assert max(newton) < 1e-3, np.round(newton, 4)
    assert max(plain) > 0.01 and np.median(plain) > 100 * np.median(newton)


@pytest.mark.parametrize("seed", range(3))
def test_product_log_density_cov_closed_form_grid_and_monte_carlo(seed):
    """Cov_p(log q_i, log q_j) under the product: closed form (Gaussians) = grid sums = Monte Carlo
    of the experts' exact log-densities on exact samples of the product."""
    from cda_lite.compose import product_log_density_cov
    from cda_lite.exact.product import GaussianProduct, GridProduct

    experts = random_composition(seed).experts
    lam = np.random.default_rng(seed).dirichlet(np.ones(len(experts)))
    closed = product_log_density_cov(experts, lam)
    np.testing.assert_allclose(GridProduct(experts, 400).log_density_cov(lam), closed, atol=1e-6 * np.abs(closed).max())
    m, S = GaussianProduct(experts).gaussian(lam)
    x = np.random.default_rng(seed + 1).multivariate_normal(m, S, 200_000)
    mc = np.cov(np.stack([e.log_prob(x) for e in experts]))
    np.testing.assert_allclose(mc, closed, atol=0.02 * np.abs(closed).max())
