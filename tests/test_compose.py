"""Composition (Chapters 5–6): Lemma 2 against closed-form KLs, the surrogate product score against
the exact noised product, annealed Langevin against exact product moments, Algorithm 3 and the OR
dual against the exact λ* of cda_lite.exact, and input validation."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import qmc

from cda_lite.compose import (ComposeConfig, and_dual_only, and_primal_dual, elbo_loss, or_dual_exact, product_kls,
                              product_of_experts, run_rounds, sample_product_mcmc, surrogate_chain_gaussian,
                              surrogate_eps, surrogate_fixed_point, surrogate_gaussian, surrogate_score)
from cda_lite.exact import gaussian_kl, mixture_dual, product_dual
from cda_lite.gmm import GaussianMixture
from cda_lite.kl import pointwise_kl
from cda_lite.langevin import annealed_langevin, langevin_levels, mean_curvature
from cda_lite.models import ExactEps
from cda_lite.paths import data_path
from cda_lite.pretrained import default_schedule
from cda_lite.exact.problems import load_problem
from cda_lite.sampling import sample
from cda_lite.schedules import linear

G = GaussianMixture.gaussian


def _experts(name):
    return load_problem(data_path("problems", f"{name}.json")).experts


UNEQUAL = [G([1.0, 0.0], 0.025), G([-1.0, 0.0], 0.5)]


def test_lemma2_matches_closed_form_gaussian_kl_and_unweighted_does_not():
    sched = linear(1000, 1e-4, 0.02)
    p = G([0.5, -0.2], [[0.3, 0.1], [0.1, 0.2]])
    q = G([-0.4, 0.3], [[0.5, 0.0], [0.0, 0.8]])
    # QMC samples of p (scrambled Sobol): the estimate then spreads by ≈ 0.2 % over seeds instead of ≈ 1.5 %
    # with i.i.d. samples; Lemma 2's O(1/T) bias at T = 1000 is −0.7 % here (5 seeds), hence 2 %.
    x0 = torch.from_numpy(qmc.MultivariateNormalQMC(p.means[0], p.covs[0], seed=1).random(512))
    est = pointwise_kl(ExactEps(p, sched), ExactEps(q, sched), sched, x0, weighted=True)
    exact = gaussian_kl(p.means[0], p.covs[0], q.means[0], q.covs[0])
    assert abs(est - exact) < 0.02 * exact, (est, exact)
    unweighted = pointwise_kl(ExactEps(p, sched), ExactEps(q, sched), sched, x0, weighted=False)
    assert unweighted > 10 * exact  # a sum of ε-MSEs over 1000 steps is not a KL


def test_surrogate_score_exact_at_t0_and_for_equal_covariances_only():
    lam = np.array([0.3, 0.7])
    equal = [G([1.0, 0.0], 0.05), G([-1.0, 0.5], 0.05)]
    # Closed forms written out: equal covariances σ²I and Σλ = 1 give the product N(Σ λ_i μ_i, σ²I),
    # noised N(√ᾱ Σ λ_i μ_i, (ᾱσ² + 1 − ᾱ) I); the surrogate (product of the noised experts) is the same.
    mbar = 0.3 * np.array([1.0, 0.0]) + 0.7 * np.array([-1.0, 0.5])
    for ab in (1.0, 0.7, 0.2):
        s, ex = surrogate_gaussian(equal, lam, ab), product_of_experts(equal, lam).noised(ab)
        for g in (s, ex):
            np.testing.assert_allclose(g.means[0], np.sqrt(ab) * mbar, rtol=0, atol=1e-12)
            np.testing.assert_allclose(g.covs[0], (ab * 0.05 + 1 - ab) * np.eye(2), rtol=0, atol=1e-12)
    # Unequal σ_1² = 0.025, σ_2² = 0.5, λ = (0.3, 0.7), at ᾱ = 1: precision 0.3/0.025 + 0.7/0.5 = 13.4,
    # mean (12·(1, 0) + 1.4·(−1, 0)) / 13.4 = (10.6/13.4, 0).
    for g in (surrogate_gaussian(UNEQUAL, lam, 1.0), product_of_experts(UNEQUAL, lam)):
        np.testing.assert_allclose(g.covs[0], np.eye(2) / 13.4, rtol=1e-12)
        np.testing.assert_allclose(g.means[0], [10.6 / 13.4, 0.0], rtol=1e-12, atol=1e-15)
    s, ex = surrogate_gaussian(UNEQUAL, lam, 0.5), product_of_experts(UNEQUAL, lam).noised(0.5)
    assert np.abs(s.means - ex.means).max() > 0.05 and np.abs(s.covs - ex.covs).max() > 0.05
    # the library path (Σ λ_i of the ε-models' scores) is the surrogate Gaussian's score
    sched = default_schedule()
    t = 40
    x = torch.randn(50, 2, dtype=torch.float64)
    score = surrogate_score([ExactEps(e, sched) for e in UNEQUAL], lam, sched)(x, t)
    ref = surrogate_gaussian(UNEQUAL, lam, sched.alphas_cumprod[t]).score(x)
    assert torch.allclose(score, ref, atol=1e-8)


def test_annealed_langevin_matches_exact_product_moments():
    sched = default_schedule()
    lam = np.array([0.21, 0.79])
    score = surrogate_score([ExactEps(e, sched) for e in UNEQUAL], lam, sched)
    x = annealed_langevin(score, sched, (4000, 2), levels=10, steps_per_level=20, step_scale=0.05, seed=3)
    x = x.double().numpy()
    target = product_of_experts(UNEQUAL, lam)
    assert np.abs(x.mean(0) - target.means[0]).max() < 0.02, (x.mean(0), target.means[0])
    assert np.allclose(np.cov(x.T), target.covs[0], atol=0.1 * target.covs[0][0, 0]), np.cov(x.T)
    # curvature estimate = mean precision for a Gaussian
    g = G([0.0, 0.0], [[0.2, 0.0], [0.0, 0.05]])
    kappa = mean_curvature(lambda z, t: g.score(z), torch.randn(256, 2, dtype=torch.float64), 0)
    assert abs(kappa - (5 + 20) / 2) < 1e-4
    levels = langevin_levels(sched, 10)
    assert levels[0] == sched.T - 1 and levels[-1] == 0 and np.all(np.diff(levels) < 0)


def test_preconditioned_langevin_relaxes_an_elongated_gaussian_in_every_direction():
    """N(m, diag(0.01, 1)) (condition number 100) from N(0, I), two levels of 240 steps at the same
    scale: the plain step, set by the mean curvature, has moved the wide coordinate's mean only a
    fifth of the way (its relaxation rate is h·1, 100× slower than the narrow one's); preconditioned by
    the particles' covariance, both coordinates reach the target's mean and variance. Closed form:
    the plain chain's mean after n steps is m(1 − (1 − hP)^n), here n = 480."""
    sched = default_schedule()
    P = torch.tensor([100.0, 1.0], dtype=torch.float64)
    m = torch.tensor([1.0, 2.0], dtype=torch.float64)
    score = lambda x, t: -(x - m) * P  # noqa: E731
    x0 = torch.randn(8000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # two levels (the score ignores t): the second level's preconditioner is the covariance the first left
    plain = annealed_langevin(score, sched, x0, levels=[1, 0], steps_per_level=240, step_scale=0.025, seed=1,
                              dtype=torch.float64)
    h = 0.025 / float(P.mean())  # the "curvature" step
    expected = float(m[1]) * (1 - (1 - h * float(P[1])) ** 480)
    assert abs(float(plain[:, 1].mean()) - expected) < 0.05 and expected < 0.5 * float(m[1])
    pre = annealed_langevin(score, sched, x0, levels=[1, 0], steps_per_level=240, step_scale=0.025, seed=1,
                            dtype=torch.float64, precondition=True)
    torch.testing.assert_close(pre.mean(0), m, atol=0.05, rtol=0)
    torch.testing.assert_close(pre.var(0), 1 / P, atol=0, rtol=0.06)
    with pytest.raises(ValueError, match="precondition"):
        annealed_langevin(score, sched, torch.zeros(4, 1, 2), levels=[0], precondition=True)


@pytest.mark.parametrize("seed", range(10))
def test_preconditioned_langevin_samples_random_gaussians(seed):
    """The first 10 seeds of random 2-D Gaussians (condition numbers up to ~100, random orientation
    and mean), from N(0, I): two preconditioned levels reach the target's mean and covariance (the
    unadjusted step's own bias is ~h/2 = 1.25 % of the variance)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(2, 2)))
    cov = Q @ np.diag(10.0 ** rng.uniform(-2, 0, 2)) @ Q.T
    m = rng.normal(size=2)
    P = torch.as_tensor(np.linalg.inv(cov))
    mt = torch.as_tensor(m)
    score = lambda x, t: -(x - mt) @ P  # noqa: E731
    x0 = torch.randn(8000, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = annealed_langevin(score, default_schedule(), x0, levels=[1, 0], steps_per_level=240, step_scale=0.025,
                          seed=seed, dtype=torch.float64, precondition=True).numpy()
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(x.mean(0) - m) < 0.06 * sd), (x.mean(0), m)
    # covariance in the target's own units: whitened, it should be the identity
    W = np.linalg.cholesky(np.linalg.inv(cov))
    np.testing.assert_allclose(W.T @ np.cov(x.T) @ W, np.eye(2), atol=0.06)


def test_product_snapshots_after_ddpm_steps_have_the_law_of_the_plain_sampler():
    """Snapshots with a last Langevin level above t = 0: every snapshot is carried to t = 0 by the
    same DDPM steps (one batch of k·n) and comes out with the law of the sampler without snapshots
    (the reference; with t_min = 2 both sit ~0.04 from the exact product's mean on this unequal pair,
    the surrogate's own bias, so the product is not the truth here). The earliest snapshot, 60 of 240
    steps into the last level, lags by ~0.015 (measured)."""
    sched = default_schedule()
    lam = np.array([0.21, 0.79])
    models = [ExactEps(e, sched) for e in UNEQUAL]
    cfg = ComposeConfig(langevin_t_min=2)
    x = sample_product_mcmc(models, lam, sched, (3000, 2), cfg, seed=4, snapshots=3)
    assert x.shape == (3, 3000, 2) and torch.isfinite(x).all()
    ref = sample_product_mcmc(models, lam, sched, (6000, 2), cfg, seed=11).double().numpy()
    for snap in x.double().numpy():
        assert np.abs(snap.mean(0) - ref.mean(0)).max() < 0.03, (snap.mean(0), ref.mean(0))
        np.testing.assert_allclose(np.cov(snap.T), np.cov(ref.T), atol=0.15 * np.cov(ref.T).max())


def test_langevin_snapshots_are_the_chain_at_evenly_spaced_final_steps():
    sched = default_schedule()
    score = lambda x, t: -x  # noqa: E731
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    kept = annealed_langevin(score, sched, x0, levels=[5, 0], steps_per_level=3, final_steps=12, seed=2, snapshots=3)
    assert kept.shape == (3, 50, 2)
    for k, n in enumerate((6, 9, 12)):  # every 12 // 4 = 3 steps, the last one final
        alone = annealed_langevin(score, sched, x0, levels=[5, 0], steps_per_level=3, final_steps=n, seed=2)
        # the chain is the same up to step n (same generator), so the snapshot equals a chain stopped there
        torch.testing.assert_close(kept[k], alone)
    with pytest.raises(ValueError, match="snapshots"):
        annealed_langevin(score, sched, x0, levels=[0], steps_per_level=2, snapshots=3)
    with pytest.raises(ValueError, match="snapshots"):
        annealed_langevin(score, sched, x0, levels=[0], snapshots=0)


def test_algorithm3_reaches_lambda_star_for_equal_covariances():
    experts = _experts("fig1_and")
    sched = default_schedule()
    cfg = ComposeConfig(rounds=5, n_samples=400, kl_timesteps=5, average_last=2)
    res = run_rounds(and_dual_only([ExactEps(e, sched) for e in experts], sched, cfg), cfg.average_last)
    lam_star = product_dual(experts).lam
    assert np.allclose(lam_star, [0.495, 0.2525, 0.2525], atol=1e-3)
    assert np.abs(res.lam - lam_star).max() < 0.01, res.lam_history


def test_algorithm2_with_exact_experts_reaches_lambda_star():
    experts = _experts("fig1_and")
    sched = default_schedule()
    cfg = ComposeConfig(rounds=3, n_samples=300, dsm_steps_first=150, dsm_steps=50, kl_samples=300, average_last=2,
                        langevin_levels=6, langevin_steps=5, langevin_final_steps=30)
    res = run_rounds(and_primal_dual([ExactEps(e, sched) for e in experts], sched, cfg), cfg.average_last)
    assert np.abs(res.lam - product_dual(experts).lam).max() < 0.02, res.lam_history


def test_algorithm2_newton_dual_with_fewer_early_particles_reaches_lambda_star():
    """The bench's dual (Newton, curvature from the particles' denoising losses) and particle schedule:
    rounds whose λ is not averaged use n_samples_early particles."""
    experts = _experts("fig1_and")
    sched = default_schedule()
    cfg = ComposeConfig(rounds=4, n_samples=400, n_samples_early=100, dsm_steps_first=100, dsm_steps=20,
                        kl_samples=200, average_last=2, langevin_levels=6, langevin_steps=5, langevin_final_steps=60,
                        dual_normalized=True, dual_newton=True)
    rounds = list(and_primal_dual([ExactEps(e, sched) for e in experts], sched, cfg))
    assert [len(r.samples) for r in rounds] == [100, 100, 400, 400]
    res = run_rounds(iter(rounds), cfg.average_last)
    assert np.abs(res.lam - product_dual(experts).lam).max() < 0.02, res.lam_history


def test_mcmc_stopping_at_t1_then_ddpm_steps_matches_product():
    sched = default_schedule()
    equal = [G([1.0, 0.0], 0.05), G([-1.0, 0.5], 0.05)]
    lam = np.array([0.3, 0.7])
    x = sample_product_mcmc([ExactEps(e, sched) for e in equal], lam, sched, (3000, 2),
                            ComposeConfig(langevin_t_min=1), seed=4).double().numpy()
    target = product_of_experts(equal, lam)
    assert np.abs(x.mean(0) - target.means[0]).max() < 0.02
    assert np.allclose(np.cov(x.T), target.covs[0], atol=0.006)


def test_surrogate_chain_law_and_its_fixed_point_for_unequal_covariances():
    sched = default_schedule()
    lam = np.array([0.4, 0.6])
    out = surrogate_chain_gaussian(UNEQUAL, lam, sched)
    # Monte-Carlo of the same DDPM chain against the closed-form propagation
    x = sample(surrogate_eps([ExactEps(e, sched) for e in UNEQUAL], lam), sched, (20000, 2), seed=2).double().numpy()
    assert np.abs(x.mean(0) - out.means[0]).max() < 0.01
    assert np.allclose(np.cov(x.T), out.covs[0], atol=0.004)
    assert out.means[0][0] > 0
    lam_fp, kls_fp = surrogate_fixed_point(UNEQUAL, sched)
    star = product_dual(UNEQUAL)
    assert np.allclose(star.lam, [0.2096, 0.7904], atol=1e-3) and abs(star.max_kl - 3.638) < 1e-3
    assert abs(lam_fp[0] - 0.5) < 0.03  # not λ*
    assert abs(kls_fp[0] - kls_fp[1]) < 1e-6 and kls_fp.max() > star.max_kl
    # KL of isotropic Gaussians in d = 2, written out: (s²/σ² − 1 − log(s²/σ²)) + ‖m − μ‖²/(2σ²), with the
    # product's s² = 1/Σ λ_i/σ_i² and m = s² Σ λ_i μ_i/σ_i².
    var = np.array([0.025, 0.5])
    mus = np.array([[1.0, 0.0], [-1.0, 0.0]])
    s2 = 1.0 / np.sum(star.lam / var)
    m = s2 * (star.lam / var) @ mus
    by_hand = (s2 / var - 1 - np.log(s2 / var)) + ((m - mus) ** 2).sum(1) / (2 * var)
    np.testing.assert_allclose(product_kls(UNEQUAL, star.lam), by_hand, rtol=1e-10)
    np.testing.assert_allclose(star.kls, by_hand, rtol=1e-10)


def test_elbo_loss_differences_are_cross_entropy_differences():
    sched = default_schedule()
    p = G([0.2, 0.0], 0.3)
    q1, q2 = G([0.0, 0.0], 0.1), G([0.5, 0.3], 0.4)
    model = ExactEps(p, sched)
    l1 = elbo_loss(model, q1.sample(4000, seed=0), sched)
    l2 = elbo_loss(model, q2.sample(4000, seed=0), sched)

    def ce(q):  # −E_q log p = KL(q‖p) + H(q)
        h = 0.5 * math.log(np.linalg.det(2 * math.pi * math.e * q.covs[0]))
        return gaussian_kl(q.means[0], q.covs[0], p.means[0], p.covs[0]) + h

    assert abs((l1 - l2) - (ce(q1) - ce(q2))) < 0.1, (l1 - l2, ce(q1) - ce(q2))


def test_or_dual_reaches_mixture_dual():
    experts = _experts("fig2_or")
    sched = default_schedule()
    cfg = ComposeConfig(rounds=6, n_samples=1000, average_last=2)
    res = run_rounds(or_dual_exact(experts, sched, cfg), cfg.average_last)
    star = mixture_dual(experts).lam
    assert np.allclose(star, [1 / 3, 2 / 3], atol=1e-3)
    assert np.abs(res.lam - star).max() < 0.02, res.lam_history


def test_bad_inputs_raise_value_error():
    sched = default_schedule()
    m = [ExactEps(e, sched) for e in UNEQUAL]
    with pytest.raises(ValueError, match="lam"):
        surrogate_score(m, [0.7, 0.7], sched)
    with pytest.raises(ValueError, match="lam"):
        product_of_experts(UNEQUAL, [1.0])
    with pytest.raises(ValueError, match="experts"):
        next(and_dual_only(m[:1], sched))
    with pytest.raises(ValueError, match="experts"):
        product_kls([UNEQUAL[0]], [1.0])
    with pytest.raises(ValueError, match="rounds"):
        ComposeConfig(rounds=0)
    with pytest.raises(ValueError, match="kl_source"):
        ComposeConfig(kl_source="both")
    with pytest.raises(ValueError, match="dual_newton"):
        ComposeConfig(dual_newton=True)  # Newton steps are capped: they need dual_normalized
    with pytest.raises(ValueError, match="n_samples_early"):
        ComposeConfig(n_samples_early=1)
    with pytest.raises(ValueError, match="dual_newton"):
        ComposeConfig(dual_normalized=True, dual_newton=True, weighted=False)
    with pytest.raises(ValueError, match="kl_quadrature"):
        ComposeConfig(kl_quadrature="simpson")
    with pytest.raises(ValueError, match="levels"):
        annealed_langevin(lambda x, t: -x, sched, (10, 2), levels=[0, 5])
    with pytest.raises(ValueError, match="step"):
        annealed_langevin(lambda x, t: -x, sched, (10, 2), step="huge")
    with pytest.raises(ValueError, match="x0"):
        elbo_loss(m[0], np.zeros(5), sched)
    with pytest.raises(ValueError, match="expert_data"):
        from cda_lite.compose import or_primal_dual
        next(or_primal_dual([np.zeros((10, 2))], sched))


@pytest.mark.parametrize("dual,normalized,newton", [("newton", True, True), ("normalised", True, False),
                                                     ("paper", False, False)])
def test_bench_compose2d_dual_option_reaches_the_config(dual, normalized, newton, monkeypatch, capsys):
    """`bench compose2d --dual` picks Algorithm 2's dual step: the config the experiment receives says so."""
    import json

    import cda_lite.bench.compose2d as CO
    from cda_lite.bench.__main__ import main
    from cda_lite.paths import data_path

    seen = {}

    def fake(gms, config=None, **kw):
        seen["config"] = config
        return {"mode": "and", "lam_learned": [1.0]}

    monkeypatch.setattr(CO, "and_experiment", fake)
    main(["compose2d", str(data_path("problems", "fig1_and.json")), "--dual", dual, "--json", "--no-progress"])
    cfg = seen["config"]
    assert (cfg.dual_normalized, cfg.dual_newton) == (normalized, newton)
    assert json.loads(capsys.readouterr().out)["dual"] == dual
