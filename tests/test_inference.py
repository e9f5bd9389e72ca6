"""Inference-time rivals (Chapter 7) against independent truth: the SMC identities, exact tilts of
Gaussian and mixture bases, and the algebra that makes MSDDA and DB-MPA coincide."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cda_lite import schedules
from cda_lite.exact import LinearReward, QuadraticReward, tilt
from cda_lite.gmm import GaussianMixture
from cda_lite.inference import (
    das, db_kla_eps, db_mpa_eps, ess, exponential_tempering, msdda_combine,
    polynomial_tempering, sample_blend_corrected, sample_db_kla, sample_db_mpa, sample_db_mpa_ls,
    sample_guided, sample_msdda, systematic_resample,
)
from cda_lite.models import ExactEps
from cda_lite.sampling import sample

torch.set_num_threads(1)
SCHED = schedules.cosine(100)


# --------------------------------------------------------------------------- SMC pieces
def test_systematic_resampling_is_unbiased_and_stratified():
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(7) * 0.7)
    N, reps = 7, 20000
    counts = np.zeros((reps, N))
    for k in range(reps):
        counts[k] = np.bincount(systematic_resample(w, rng), minlength=N)
    # E[count_j] = N w_j; the standard error of the average is below 0.5/sqrt(reps)
    np.testing.assert_allclose(counts.mean(0), N * w, atol=4 * 0.5 / np.sqrt(reps))
    # systematic resampling copies particle j either floor(N w_j) or ceil(N w_j) times
    assert np.all(counts >= np.floor(N * w) - 1e-9) and np.all(counts <= np.ceil(N * w) + 1e-9)
    # row-wise for (G, N) weights
    idx = systematic_resample(np.stack([w, np.eye(N)[3]]), rng)
    assert idx.shape == (2, N) and np.all(idx[1] == 3)


def test_ess_formula():
    w = np.array([0.5, 0.2, 0.2, 0.1]) * 3.0  # unnormalised
    assert ess(np.log(w)) == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-12)
    assert ess(np.zeros(10)) == pytest.approx(10.0)
    assert ess(np.array([0.0, -np.inf, -np.inf])) == pytest.approx(1.0)
    np.testing.assert_allclose(ess(np.log(np.stack([w, np.ones(4)]))), [w.sum() ** 2 / (w**2).sum(), 4.0])


def test_tempering_schedules():
    lam = exponential_tempering(100)
    assert lam[0] == 0 and lam[-1] == 1 and np.all(np.diff(lam) >= 0)
    # the paper's γ = 0.008 for 100 steps: λ_1 = γ, and λ reaches 1 at step 87 = 0.87·100 ((1+γ)^87 = 2)
    assert lam[1] == pytest.approx(0.008, abs=5e-5)
    assert lam[86] < 1 and lam[87] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(lam[:87], (1 + lam[1]) ** np.arange(87) - 1, rtol=1e-12)
    np.testing.assert_allclose(exponential_tempering(10, 0.1)[:4], [0, 0.1, 0.21, 0.331])
    np.testing.assert_allclose(polynomial_tempering(4, 2), [0, 1 / 16, 1 / 4, 9 / 16, 1])


# --------------------------------------------------------------------------- DAS
def _gaussian_chain_law(m, S, steps, eta=1.0):
    """Exact law N(m_θ, S_θ) of x₀ from the DDIM(η) chain with the exact ε of q = N(m, S): every
    step is affine-Gaussian, ε(x, t) = √(1−ᾱ) C⁻¹(x − √ᾱ m), C = ᾱS + (1−ᾱ)I (written out here,
    independently of the library's step)."""
    ts = schedules.timesteps(SCHED, steps)
    ab = SCHED.alphas_cumprod
    d = len(m)
    mu, V = np.zeros(d), np.eye(d)
    for i, t in enumerate(ts):
        a, b = ab[t], (ab[ts[i + 1]] if i + 1 < len(ts) else 1.0)
        sig2 = eta**2 * (1 - b) / (1 - a) * (1 - a / b) if b < 1 else 0.0
        Ke = np.sqrt(1 - a) * np.linalg.inv(a * S + (1 - a) * np.eye(d))  # ε = Ke (x − √a m)
        # x_s = √b (x − √(1−a) ε)/√a + √(1−b−σ²) ε + σ z = A x + c + σ z
        E = -np.sqrt(b) * np.sqrt(1 - a) / np.sqrt(a) + np.sqrt(max(1 - b - sig2, 0.0))
        A = np.sqrt(b / a) * np.eye(d) + E * Ke
        c = -E * Ke @ (np.sqrt(a) * m)
        mu, V = A @ mu + c, A @ V @ A.T + sig2 * np.eye(d)
    return mu, V


def test_das_gaussian_base_linear_reward():
    """q = N(m, S), r = wᵀx. DAS samples p_θ·e^{r/α} with p_θ the law of the pretrained *sampler*:
    here exactly N(m_θ + S_θ w/α, S_θ) (linear-Gaussian chain), a few % short of the exact tilt
    N(m + S w/α, S) because 50 ancestral steps shrink the variance. Checked with and without the
    gradient proposal (without it the importance weights alone must do the work)."""
    m, S = np.array([0.5, -1.0]), np.array([[1.0, 0.3], [0.3, 0.5]])
    q = GaussianMixture.gaussian(m, S)
    r, alpha = LinearReward([1.0, 2.0]), 0.5
    np.testing.assert_allclose(tilt(q, [r], [1 / alpha]).mean(), m + S @ r.w / alpha)
    m_th, S_th = _gaussian_chain_law(m, S, steps=50)
    assert np.linalg.norm(m_th + S_th @ r.w / alpha - (m + S @ r.w / alpha)) > 0.2  # the sampler's own bias
    model = ExactEps(q, SCHED)
    # the weights-only run gets the milder tilt: reweighting the pretrained chain towards a target
    # 4 standard deviations away is hopeless with 256 particles (that is what the gradient is for)
    # Tolerances are the estimator's error measured over seeds 1–8 (32 groups of 256 particles): weights
    # only, ‖mean error‖ ≤ 0.13 and covariance entries within 0.10 (the entries are 0.28–0.91); with the
    # gradient proposal the mean is off by 0.07–0.21 (a finite-N SMC bias of ≈ 0.15 at N = 256) and
    # the covariance by ≤ 0.19. With 8 groups a single collapsed group moved the covariance by 0.8.
    for grad, a, tol_mean, tol_cov in ((True, alpha, 0.25, 0.22), (False, 2 * alpha, 0.16, 0.12)):
        chain_target = m_th + S_th @ r.w / a
        res = das(model, r, SCHED, 256, alpha=a, steps=50, groups=32, use_gradient=grad, seed=1)
        x = res.x.numpy()
        assert x.shape == (32 * 256, 2)
        assert np.linalg.norm(x.mean(0) - chain_target) < tol_mean, (grad, x.mean(0), chain_target)
        np.testing.assert_allclose(np.cov(x.T), S_th, rtol=0, atol=tol_cov)
        assert res.lambdas[-1].tolist() == [1.0] * 32 and res.ess.shape == (51, 32)
        # the output is resampled, equally weighted: many distinct particles survive
        assert len(np.unique(x[:, 0])) > 2000


def test_das_is_consistent_as_particles_grow():
    """DAS toy 2 (8 modes on a circle, r = −x² − (y−1)²/10, α = 1, target E r = −1.34): the law of one
    output particle approaches the target as N grows (pooled over runs of N particles)."""
    ang = np.arange(8) * 2 * np.pi / 8
    q = GaussianMixture(np.ones(8) / 8, 4 * np.c_[np.cos(ang), np.sin(ang)], [0.3 * np.eye(2)] * 8)
    r = QuadraticReward(np.diag([1.0, 0.1]), [0, 1])
    target = r.expectation(tilt(q, [r], [1.0]))
    assert target == pytest.approx(-1.34, abs=0.005)
    model = ExactEps(q, SCHED)
    err = {N: abs(r(das(model, r, SCHED, N, steps=50, groups=1024 // N, seed=2).x.numpy()).mean() - target)
           for N in (1, 64)}
    assert err[1] > 0.2 and err[64] < 0.08, err


def test_das_rejects_bad_input():
    model = ExactEps(GaussianMixture.gaussian([0.0, 0.0], 1.0), SCHED)
    r = LinearReward([1.0, 0.0])
    with pytest.raises(ValueError, match="alpha"):
        das(model, r, SCHED, 8, alpha=0.0)
    with pytest.raises(ValueError, match="tempering"):
        das(model, r, SCHED, 8, tempering="linear")


# --------------------------------------------------------------------------- Diffusion Blend
def _gaussian_blend_case():
    q = GaussianMixture.gaussian([0.0, 1.0], [[1.0, 0.4], [0.4, 0.6]])
    rewards, alpha, w = [LinearReward([1.0, 0.0]), LinearReward([-0.5, 1.0])], 0.5, np.array([0.3, 0.7])
    singles = [ExactEps(tilt(q, [r], [1 / alpha]), SCHED) for r in rewards]
    return q, rewards, alpha, w, singles


def test_db_mpa_is_exact_for_gaussian_base_and_linear_rewards():
    """No Jensen gap: every noised tilt is a Gaussian with the same covariance, so Σ w_i ε_i is the
    exact ε of the target at every (x, t), and DB-MPA samples the target."""
    q, rewards, alpha, w, singles = _gaussian_blend_case()
    target = tilt(q, rewards, w / alpha)
    exact_eps, blend = ExactEps(target, SCHED), db_mpa_eps(singles, w)
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    for t in (0, 10, 50, 99):
        torch.testing.assert_close(blend(x, t), exact_eps(x, t), rtol=0, atol=1e-10)
    xs = sample_db_mpa(singles, w, SCHED, 4000, steps=100, seed=0).numpy()
    np.testing.assert_allclose(xs.mean(0), target.mean(), atol=0.06)
    np.testing.assert_allclose(np.cov(xs.T), target.cov(), atol=0.08)


def _diamond():
    """Chapter 7's Jensen-gap case: modes at (±4, 0), (0, ±4), rewards x and y, α = 0.25, w = (0.3, 0.7)."""
    q = GaussianMixture(np.ones(4) / 4, [[4, 0], [0, 4], [-4, 0], [0, -4]], [0.3 * np.eye(2)] * 4)
    rewards, alpha, w = [LinearReward([1.0, 0.0]), LinearReward([0.0, 1.0])], 0.25, np.array([0.3, 0.7])
    return q, rewards, alpha, w, [ExactEps(tilt(q, [r], [1 / alpha]), SCHED) for r in rewards]


def test_correction_removes_the_blend_bias_on_a_mixture():
    q, rewards, alpha, w, singles = _diamond()
    target = tilt(q, rewards, w / alpha).mean()
    np.testing.assert_allclose(target, [0.367, 4.833], atol=1e-3)
    plain = sample_db_mpa(singles, w, SCHED, 2000, steps=50, seed=3).numpy().mean(0)
    fixed = sample_blend_corrected(singles, w, SCHED, 500, steps=50, groups=4, seed=3).x.numpy().mean(0)
    assert np.linalg.norm(plain - target) > 0.3
    assert np.linalg.norm(fixed - target) < 0.08, (fixed, target)


def test_corrected_blend_moves_like_db_mpa_without_resampling():
    q, rewards, alpha, w, singles = _diamond()
    a = sample_db_mpa(singles, w, SCHED, 50, steps=20, seed=4)
    b = sample_blend_corrected(singles, w, SCHED, 50, steps=20, resample_threshold=0.0, seed=4)
    # same trajectories; only the final resampling reorders (and duplicates) them
    rows = a.numpy()[:, None, :] - b.x.numpy()[None, :, :]
    assert np.all(np.abs(rows).sum(-1).min(0) < 1e-12)


def test_db_kla_endpoints_reproduce_the_two_models():
    q, rewards, alpha, w, singles = _gaussian_blend_case()
    pre, ft = ExactEps(q, SCHED), singles[0]
    for lam, ref in ((0.0, pre), (1.0, ft)):
        a = sample_db_kla(pre, ft, lam, SCHED, 300, steps=30, seed=5)
        b = sample(ref, SCHED, (300, 2), steps=30, seed=5, dtype=torch.float64)
        assert torch.equal(a, b)
    # λ = 2 extrapolates: nominal target q·e^{2 r/α}, exact here (Gaussian base, linear reward)
    x = sample_db_kla(pre, ft, 2.0, SCHED, 4000, steps=100, seed=6).numpy()
    np.testing.assert_allclose(x.mean(0), tilt(q, [rewards[0]], [2 / alpha]).mean(), atol=0.07)


def test_db_mpa_ls_follows_one_model_per_step():
    q, rewards, alpha, w, singles = _gaussian_blend_case()
    # identical models: LS is the same sampler whatever it draws
    same = sample_db_mpa_ls([singles[0], singles[0]], w, SCHED, 100, steps=10, seed=7)
    torch.testing.assert_close(same, sample(singles[0], SCHED, (100, 2), steps=10, seed=7, dtype=torch.float64))
    # Gaussian base, linear rewards: every ε_i is affine in x and each step is affine in ε, so the mean
    # of a step averaged over the random choice is DB-MPA's step: LS has the target's exact mean (the
    # target is exact for DB-MPA here). 3000 samples: standard error ≤ √(1.0/3000) = 0.018 per
    # coordinate; 4 of them as tolerance.
    x = sample_db_mpa_ls(singles, w, SCHED, 3000, steps=50, seed=8).numpy()
    np.testing.assert_allclose(x.mean(0), tilt(q, rewards, w / alpha).mean(), rtol=0, atol=0.075)
    # and it is not DB-MPA itself: the same seed gives other trajectories
    y = sample_db_mpa(singles, w, SCHED, 3000, steps=50, seed=8).numpy()
    assert np.abs(x - y).max() > 0.1


class _Const(torch.nn.Module):
    """An ε-model that answers the constant ``c`` everywhere (to count which model LS draws)."""

    def __init__(self, c):
        super().__init__()
        self.c = float(c)

    def forward(self, x, t):
        return torch.full_like(x, self.c)


@pytest.mark.parametrize("w", [[0.1, 0.6, 0.3], [0.85, 0.15]])
def test_db_mpa_ls_draws_each_model_with_its_weight(w):
    """Each row follows model i with probability w_i, independently per call: the count of rows that
    got model i in n draws is Binomial(n, w_i); 5 standard deviations is a 6e-7 false alarm rate."""
    from cda_lite.inference.blend import RandomChoiceEps
    eps = RandomChoiceEps([_Const(i) for i in range(len(w))], w, seed=11)
    n, calls = 4000, 5
    x = torch.zeros(n, 2, dtype=torch.float64)
    draws = np.concatenate([eps(x, 10)[:, 0].numpy() for _ in range(calls)])
    assert set(np.unique(draws)) <= set(range(len(w)))
    # both coordinates of a row come from the same model
    out = eps(x, 10).numpy()
    assert np.array_equal(out[:, 0], out[:, 1])
    N = n * calls
    counts = np.bincount(draws.astype(int), minlength=len(w))
    sd = np.sqrt(N * np.array(w) * (1 - np.array(w)))
    assert np.all(np.abs(counts - N * np.array(w)) < 5 * sd), (counts, N * np.array(w))
    # uniform drawing would be off by many standard deviations for these weights
    assert np.any(np.abs(N / len(w) - N * np.array(w)) > 20 * sd)
    # per-row time indices are passed through to the chosen rows
    t = torch.arange(n) % 7
    assert eps(x, t).shape == x.shape


def test_bad_blend_weights_raise():
    q, rewards, alpha, w, singles = _gaussian_blend_case()
    with pytest.raises(ValueError, match="sum to 1"):
        db_mpa_eps(singles, [0.5, 0.6])
    with pytest.raises(ValueError, match="non-negative"):
        db_mpa_eps(singles, [1.5, -0.5])
    with pytest.raises(ValueError, match="2 weights"):
        sample_db_mpa(singles, [1.0], SCHED, 10)
    with pytest.raises(ValueError, match="lam"):
        db_kla_eps(singles[0], singles[1], 2.5)
    with pytest.raises(ValueError, match="weights"):
        sample_msdda(singles, [0.0, 0.0], SCHED, 10)


# --------------------------------------------------------------------------- MSDDA
def test_msdda_equals_db_mpa_with_shared_variances_only():
    q, rewards, alpha, w, singles = _diamond()
    a = sample_db_mpa(singles, w, SCHED, 500, steps=40, seed=9)
    b = sample_msdda(singles, w, SCHED, 500, steps=40, etas=1.0, seed=9)
    assert torch.max(torch.abs(a - b)) < 1e-10
    c = sample_msdda(singles, w, SCHED, 500, steps=40, etas=[1.0, 0.5], seed=9)
    assert torch.max(torch.abs(a - c)) > 0.1
    # the product formula itself: precision-weighted means
    mu = [torch.tensor([[0.0]]), torch.tensor([[3.0]])]
    m, s = msdda_combine(mu, [1.0, 2.0], [0.5, 0.5])
    assert s == pytest.approx((0.5 / 1 + 0.5 / 4) ** -0.5) and float(m) == pytest.approx(s**2 * 0.5 * 3 / 4)


# --------------------------------------------------------------------------- guidance and the CLI
def test_scaled_guidance_is_close_and_unscaled_guidance_overshoots():
    q = GaussianMixture.gaussian([0.0, 0.0], 1.0)
    r, alpha = LinearReward([1.0, 0.0]), 1.0
    model = ExactEps(q, SCHED)
    x = sample_guided(model, r, SCHED, 3000, alpha=alpha, steps=100, seed=10).numpy()
    assert abs(x[:, 0].mean() - 1.0) < 0.15  # exact target N((1, 0), I)
    xu = sample_guided(model, r, SCHED, 3000, alpha=alpha, steps=100, scaling="none", seed=10).numpy()
    assert xu[:, 0].mean() > 10  # ~ one unit per step


def test_rivals2d_cli(tmp_path, capsys):
    from cda_lite.bench.__main__ import main

    prob = {"base": {"weights": [0.5, 0.5], "means": [[-2, 0], [2, 0]], "covs": [np.eye(2).tolist()] * 2},
            "rewards": [{"type": "linear", "w": [1, 0]}, {"type": "quadratic", "A": [[1, 0], [0, 1]], "c": [0, 1]}],
            "thresholds": [0, 0]}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(prob))
    assert main(["rivals2d", str(path), "--alpha", "1", "--weights", "0.5", "0.5", "--particles", "300",
                 "--steps", "20", "--json", "--methods", "das", "db_mpa", "msdda"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"das", "db_mpa", "msdda", "target", "seconds"} <= set(out)
    assert out["db_mpa"]["mean"] == out["msdda"]["mean"] and out["das"]["nfe"] == 39
    assert abs(out["das"]["mean_reward"] - out["target"]["mean_reward"]) < 0.3
    assert main(["rivals2d", str(path), "--weights", "0.5", "0.6", "--json"]) == 2


# --------------------------------------------------------------------------- found by mutation testing
def test_smc_bad_input_is_named():
    from cda_lite.inference.smc import normalize_log_weights

    for bad, msg in ((np.array([0.0, np.nan]), "log_w: contains NaN"), (np.array([0.0, np.inf]), r"log_w: contains NaN or \+inf"),
                     (np.zeros((1, 2, 3)), r"log_w: expected shape")):
        with pytest.raises(ValueError, match="^" + msg):
            normalize_log_weights(bad)
    with pytest.raises((ValueError, TypeError), match="^log_w"):
        normalize_log_weights(["a", "b"])
    rng = np.random.default_rng(0)
    with pytest.raises((ValueError, TypeError), match="^weights"):
        systematic_resample(["a", "b"], rng)
    for bad, msg in ((np.ones((1, 2, 3)), r"weights: expected shape"), (np.ones((2, 0)), r"weights: expected shape"),
                     (np.array([1.0, np.nan]), "weights: must be finite"), (np.array([1.0, np.inf]), "weights: must be finite"),
                     (np.array([1.0, -0.5]), "weights: must be finite and non-negative"),
                     (np.array([[1.0, 1.0], [0.0, 0.0]]), "weights: every row needs a positive total")):
        with pytest.raises(ValueError, match="^" + msg):
            systematic_resample(bad, rng)


class _FixedU:
    def __init__(self, u):
        self.u = u

    def random(self, shape):
        return np.full(shape, self.u)


def test_systematic_resampling_boundaries_and_unnormalised_weights():
    # u = 0 puts the points k/N on the interval ends; [a, b) intervals send each to the next particle
    np.testing.assert_array_equal(systematic_resample(np.ones(4), _FixedU(0.0)), [0, 1, 2, 3])
    w = np.array([1.0, 3.0, 0.0, 4.0])  # total 8: normalised to (1/8, 3/8, 0, 1/2)
    # points (0.2 + k)/4 = 0.05, 0.3, 0.55, 0.8 against the cumulative weights 0.125, 0.5, 0.5, 1
    np.testing.assert_array_equal(systematic_resample(w, _FixedU(0.2)), [0, 1, 3, 3])
    np.testing.assert_array_equal(systematic_resample(3 * w, _FixedU(0.2)), [0, 1, 3, 3])
    assert isinstance(ess(np.zeros(3)), float) and ess(np.zeros((2, 3))).shape == (2,)


class _TimeEps(torch.nn.Module):
    """ε = t (per row) in every coordinate: shows which t each row was called with."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x, t):
        return (torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1) + self.c).expand(x.shape[0], x.shape[1]).clone()


def test_db_mpa_ls_is_reproducible_and_passes_each_row_its_own_t():
    from cda_lite.inference.blend import RandomChoiceEps, check_blend_weights

    models = [_TimeEps(0.0), _TimeEps(1000.0)]
    x = torch.zeros(50, 2, dtype=torch.float64)
    t = torch.arange(50)
    a = RandomChoiceEps(models, [0.5, 0.5])(x, t)  # default seed 0
    b = RandomChoiceEps(models, [0.5, 0.5], seed=0)(x, t)
    c = RandomChoiceEps(models, [0.5, 0.5], seed=1)(x, t)
    assert torch.equal(a, b) and not torch.equal(a, c)
    np.testing.assert_array_equal(a[:, 0].numpy() % 1000, t.numpy())  # row i got t_i
    with pytest.raises(ValueError, match="^weights"):
        check_blend_weights([0.5, 0.6], 2)
    with pytest.raises(ValueError, match="^weights"):
        check_blend_weights([[0.5, 0.5]], 2)
    with pytest.raises(ValueError, match="^weights"):
        check_blend_weights([0.5, np.nan], 2)
