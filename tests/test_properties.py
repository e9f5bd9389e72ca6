"""Property-based tests (Hypothesis) over the public API, on inputs nobody chose: random valid mixtures,
rewards and levels give finite results that agree with closed forms written here independently (the
tilt of a mixture by a linear reward, the log-partition, Gaussian log-densities via SciPy, the KKT
conditions of the alignment dual); random invalid inputs raise the documented ValueError/TypeError and
never return NaN; random byte flips in a checkpoint are always detected. Bounded examples, no database."""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from cda_lite import checkpoint as C
from cda_lite.constraints import Constraint, DualAscent, RewardNormalizer, SimplexDual, project_simplex
from cda_lite.exact import LinearReward, QuadraticReward, align_dual, dual_function, log_partition, tilt
from cda_lite.gmm import GaussianMixture
from cda_lite.models import ExactEps
from cda_lite.pretrained import default_schedule
from cda_lite.rewards import brightness, saturation
from cda_lite.sampling import Chain, sample

FAST = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SCHEDULE = default_schedule()
BAD = [math.nan, math.inf, -math.inf]
finite = st.floats(-3, 3, allow_nan=False, allow_infinity=False)


@st.composite
def mixtures(draw, dim=2, max_k=3):
    """A random Gaussian mixture: 1–3 components, means in [−3, 3]², covariances L Lᵀ + 0.1 I."""
    k = draw(st.integers(1, max_k))
    w = np.array(draw(st.lists(st.floats(0.1, 1.0), min_size=k, max_size=k)))
    means = np.array(draw(st.lists(st.lists(finite, min_size=dim, max_size=dim), min_size=k, max_size=k)))
    Ls = np.array(draw(st.lists(st.lists(st.floats(-1, 1), min_size=dim * dim, max_size=dim * dim),
                                min_size=k, max_size=k))).reshape(k, dim, dim)
    covs = Ls @ Ls.transpose(0, 2, 1) + 0.1 * np.eye(dim)
    return GaussianMixture(w / w.sum(), means, covs)


vectors = st.lists(st.floats(-2, 2), min_size=2, max_size=2).map(np.array)


# --------------------------------------------------------------------------- valid inputs: closed forms
@FAST
@given(mixtures(), vectors, st.floats(0, 2))
def test_tilt_by_a_linear_reward_shifts_every_component(gm, w, lam):
    """q·e^{λ wᵀx}/Z: component k moves to μ_k + λ Σ_k w, keeps Σ_k, and is reweighted by
    π_k exp(λ wᵀμ_k + ½ λ² wᵀΣ_k w) (completing the square)."""
    out = tilt(gm, [LinearReward(w)], [lam])
    logw = np.log(gm.weights) + lam * gm.means @ w + 0.5 * lam**2 * np.einsum("i,kij,j->k", w, gm.covs, w)
    np.testing.assert_allclose(out.means, gm.means + lam * np.einsum("kij,j->ki", gm.covs, w), atol=1e-9)
    np.testing.assert_allclose(out.covs, gm.covs, atol=1e-9)
    np.testing.assert_allclose(out.weights, np.exp(logw - logsumexp(logw)), atol=1e-9)
    assert log_partition(gm, [LinearReward(w)], [lam]) == pytest.approx(logsumexp(logw), abs=1e-9)


@FAST
@given(mixtures(), st.lists(st.lists(st.floats(-5, 5), min_size=2, max_size=2), min_size=1, max_size=6))
def test_log_prob_equals_scipy(gm, pts):
    x = np.array(pts)
    ref = logsumexp([math.log(p) + multivariate_normal(m, c).logpdf(x).reshape(-1)
                     for p, m, c in zip(gm.weights, gm.means, gm.covs)], axis=0)
    out = gm.log_prob(x)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)


@st.composite
def alignment_problems(draw):
    """1–2 linear rewards with well-separated directions (so any levels are jointly reachable) and levels
    within ±1.5 standard deviations of the base's expected rewards."""
    gm = draw(mixtures())
    m = draw(st.integers(1, 2))
    ws = [draw(vectors) for _ in range(m)]
    for w in ws:
        assume(np.linalg.norm(w) > 0.3)
    if m == 2:
        assume(abs(ws[0][0] * ws[1][1] - ws[0][1] * ws[1][0]) > 0.3 * np.linalg.norm(ws[0]) * np.linalg.norm(ws[1]))
    rewards = [LinearReward(w) for w in ws]
    sd = [math.sqrt(w @ gm.cov() @ w) for w in ws]
    levels = [r.expectation(gm) + draw(st.floats(-1.5, 1.5)) * s for r, s in zip(rewards, sd)]
    return gm, rewards, np.array(levels)


@FAST
@given(alignment_problems())
def test_align_dual_satisfies_kkt_and_strong_duality(problem):
    gm, rewards, b = problem
    res = align_dual(gm, rewards, b)
    lam = res.lam
    expected = np.array([r.expectation(res.target) for r in rewards])  # recomputed from the target
    scale = np.maximum(1.0, np.abs(b))
    assert np.all(np.isfinite(lam)) and np.all(lam >= 0)
    assert np.all(expected >= b - 1e-6 * scale)  # primal feasibility
    assert np.all(np.abs(lam * (expected - b)) <= 1e-5 * scale * np.maximum(1, lam))  # complementary slackness
    assert res.kl >= -1e-9
    # strong duality: KL(q_λ* ‖ q) = D(λ*), and D(λ*) ≥ D(λ) for other λ ≥ 0
    assert dual_function(gm, rewards, b, lam) == pytest.approx(res.kl, abs=1e-6)
    for other in (np.zeros_like(lam), lam + 0.1, np.maximum(lam - 0.1, 0)):
        assert dual_function(gm, rewards, b, other) <= res.kl + 1e-7


@FAST
@given(st.integers(1, 4), st.lists(st.floats(-5, 5), min_size=4, max_size=4), st.floats(0.01, 2))
def test_dual_ascent_stays_finite_and_nonnegative(n, slacks, lr):
    dual = DualAscent(n, lr=lr, on_infeasible="ignore")
    for _ in range(3):
        lam = dual.update(np.array(slacks[:n]))
        assert np.all(np.isfinite(lam)) and np.all(lam >= 0)
    expected = np.maximum(1.0 / n - lr * np.array(slacks[:n]), 0)  # the first step of projected ascent
    np.testing.assert_allclose(dual.history[0]["lam"], expected)


@FAST
@given(st.lists(st.floats(-10, 10), min_size=1, max_size=6),
       st.lists(st.floats(0, 1), min_size=6, max_size=6))
def test_simplex_projection_is_on_the_simplex_and_closest(v, other):
    v = np.array(v)
    p = project_simplex(v)
    assert np.all(p >= 0) and p.sum() == pytest.approx(1.0)
    q = np.array(other[: len(v)]) + 1e-3
    q /= q.sum()
    assert np.linalg.norm(v - p) <= np.linalg.norm(v - q) + 1e-9


@settings(max_examples=10, deadline=None, database=None)
@given(mixtures(max_k=2), st.floats(0, 1.5), st.integers(0, 1000))
def test_sampler_is_finite_on_finite_input(gm, eta, seed):
    x = sample(ExactEps(gm, SCHEDULE), SCHEDULE, (16, 2), steps=10, eta=eta, seed=seed)
    assert x.shape == (16, 2) and bool(torch.isfinite(x).all())


# --------------------------------------------------------------------------- invalid inputs: documented errors
bad_floats = st.sampled_from(BAD)


@FAST
@given(mixtures(), st.integers(0, 5), bad_floats)
def test_nonfinite_points_raise_naming_x(gm, i, bad):
    x = np.zeros((6, 2))
    x.flat[i] = bad
    for f in (gm.log_prob, gm.score, gm.responsibilities):
        with pytest.raises(ValueError, match="x"):
            f(x)


@FAST
@given(mixtures(), st.integers(1, 5).filter(lambda d: d != 2))
def test_points_of_another_dimension_raise_naming_the_shape(gm, d):
    with pytest.raises(ValueError, match=r"x: expected points of shape \(n, 2\)"):
        gm.log_prob(np.zeros((3, d)))
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        ExactEps(gm, SCHEDULE)(torch.zeros(3, d), 10)


@FAST
@given(mixtures(), vectors, bad_floats, st.booleans())
def test_nonfinite_levels_and_multipliers_raise(gm, w, bad, in_level):
    r = [LinearReward(w)]
    b, lam = ([bad], [0.5]) if in_level else ([0.0], [bad])
    with pytest.raises(ValueError, match="thresholds" if in_level else "lam"):
        dual_function(gm, r, b, lam)
    if in_level:
        with pytest.raises(ValueError, match="thresholds"):
            align_dual(gm, r, b)


@FAST
@given(st.one_of(bad_floats, st.floats(-5, 0)))
def test_bad_dual_settings_raise(bad):
    with pytest.raises(ValueError, match="lr"):
        DualAscent(2, lr=bad)
    with pytest.raises(ValueError, match="lr"):
        SimplexDual(2, lr=bad)


@FAST
@given(st.one_of(bad_floats, st.floats(-5, -1e-6), st.just("fast")))
def test_bad_eta_raises(eta):
    with pytest.raises(ValueError, match="eta"):
        Chain.make(SCHEDULE, 5, eta)


@FAST
@given(st.integers(0, 2 * 4 * 4 * 3 - 1), bad_floats)
def test_nonfinite_images_raise_in_the_rewards(i, bad):
    img = torch.rand(2, 3, 4, 4)
    img.view(-1)[i] = bad
    for f in (saturation, brightness):
        with pytest.raises(ValueError, match="images"):
            f(img)


@FAST
@given(st.integers(-5, 0))
def test_counts_below_one_raise(n):
    gm = GaussianMixture.gaussian([0, 0], np.eye(2))
    with pytest.raises(ValueError, match="n"):
        gm.sample(n)
    with pytest.raises(ValueError, match="n"):
        DualAscent(n)


@FAST
@given(mixtures(), bad_floats)
def test_nonfinite_initial_noise_raises(gm, bad):
    x_T = torch.zeros(4, 2)
    x_T[1, 0] = bad
    with pytest.raises(ValueError, match="x_T"):
        sample(ExactEps(gm, SCHEDULE), SCHEDULE, (4, 2), steps=5, x_T=x_T)


def test_plain_function_where_a_reward_object_is_needed_says_what_is_needed():
    gm = GaussianMixture.gaussian([0, 0], np.eye(2))
    with pytest.raises(TypeError, match="reward object with quadratic_form"):
        align_dual(gm, [lambda x: x[:, 0]], [0.5])


@FAST
@given(mixtures(), st.floats(-3, 3))
def test_a_constant_reward_at_its_supremum_is_feasible(gm, c):
    """E r ≥ b with r ≡ 0 and b = 0 holds for every model: λ* = 0, KL 0 (not "infeasible")."""
    zero = QuadraticReward(np.zeros((2, 2)), [c, -c])
    res = align_dual(gm, [zero], [0.0])
    assert res.lam.tolist() == [0.0] and abs(res.kl) < 1e-12
    assert align_dual(gm, [LinearReward([0.0, 0.0])], [0.0]).lam.tolist() == [0.0]


@FAST
@given(bad_floats)
def test_constraint_and_normalizer_reject_nonfinite(bad):
    with pytest.raises(ValueError, match="level"):
        Constraint("c", lambda x: x, bad)
    with pytest.raises(ValueError):
        RewardNormalizer(bad, 1.0)


# --------------------------------------------------------------------------- checkpoints
@settings(max_examples=40, deadline=None, database=None)
@given(st.data())
def test_any_flipped_byte_in_a_checkpoint_is_detected(tmp_path_factory, data):
    path = str(tmp_path_factory.mktemp("ck") / "run.pt")
    state = {"step": 3, "params": [torch.arange(6.0)], "lam": [0.25, 0.5]}
    C.save_checkpoint(state, path, config={"align": {"seed": 0, "lr": 0.001}, "constraints": [{"level": 1.0}]})
    raw = bytearray(open(path, "rb").read())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    open(path, "wb").write(bytes(raw))
    with pytest.raises(C.CorruptCheckpointError, match="run.pt"):
        C.load(path)


@settings(max_examples=20, deadline=None, database=None)
@given(st.dictionaries(st.text("abcdef", min_size=1, max_size=4),
                       st.one_of(st.floats(-1e6, 1e6), st.integers(), st.lists(st.floats(-10, 10), max_size=5)),
                       max_size=5))
def test_checkpoint_round_trip_and_config_diff(tmp_path_factory, config):
    path = str(tmp_path_factory.mktemp("ck") / "run.pt")
    state = {"step": 1, "x": torch.tensor([1.0, 2.0]), "cfg": config}
    C.save_checkpoint(state, path, config=config)
    loaded, header, used = C.load_checkpoint(path)
    assert used == path and loaded["cfg"] == config and torch.equal(loaded["x"], state["x"])
    assert C.config_diff(header["config"], config) == []
    for key in config:
        changed = dict(config, **{key: "something else"})
        assert C.config_diff(header["config"], changed) == [key]

