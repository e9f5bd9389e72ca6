"""The primal-dual core (cda_lite.constraints): dual updates checked step by step against hand
computations, the simplex projection against a generic QP solver, normalisation against the exact tilt."""
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from cda_lite.constraints import (Constraint, DualAscent, RewardNormalizer, SimplexDual, lagrangian,
                                  project_simplex, weighted_objective)
from cda_lite.exact import InfeasibleConstraintError, LinearReward, QuadraticReward, tilt
from cda_lite.gmm import GaussianMixture
from cda_lite.grid import Grid


# ----------------------------------------------------------------------------- DualAscent
def test_projected_ascent_by_hand():
    d = DualAscent(1, lr=0.5, init=1.0)
    # λ ← [λ − η · slack]₊ : 1 + 0.5·0.4 = 1.2; 1.2 − 0.5·1 = 0.7; [0.7 − 0.5·3]₊ = 0; stays 0 while met
    for slack, expected in [(-0.4, 1.2), (1.0, 0.7), (3.0, 0.0), (0.2, 0.0), (-0.1, 0.05)]:
        lam = d.update([slack])
        assert lam == pytest.approx([expected], abs=1e-15)
    assert d.step == 5
    assert np.allclose(d.lam_history[:, 0], [1.2, 0.7, 0.0, 0.0, 0.05])
    assert [h["slacks"] for h in d.history] == [[-0.4], [1.0], [3.0], [0.2], [-0.1]]


def test_default_init_is_one_over_m():
    assert np.allclose(DualAscent(4).lam, 0.25)
    assert np.allclose(DualAscent(2, init=[0.0, 3.0]).lam, [0.0, 3.0])


def test_nupi_with_zero_kappa_p_is_plain_ascent():
    rng = np.random.default_rng(0)
    slacks = rng.normal(size=(30, 3))
    plain = DualAscent(3, lr=0.3, init=[0.5, 0.1, 2.0])
    nupi = DualAscent(3, lr=0.3, kappa_p=0.0, nu=0.7, init=[0.5, 0.1, 2.0])
    for s in slacks:
        assert np.array_equal(plain.update(s), nupi.update(s))


def test_nupi_proportional_term_by_hand():
    # e = −slack; ξ_k = ν ξ_{k−1} + (1−ν) e_k (ξ_0 = 0); λ ← [λ + κ_i e_k + κ_p (ξ_k − ξ_{k−1})]₊
    ki, kp, nu = 0.5, 2.0, 0.5
    d = DualAscent(1, lr=ki, kappa_p=kp, nu=nu, init=1.0)
    slacks = [-0.4, -0.2, 0.6, 0.1]
    lam, xi = 1.0, 0.0
    by_hand = []
    for s in slacks:
        e = -s
        xi_new = nu * xi + (1 - nu) * e
        lam = max(lam + ki * e + kp * (xi_new - xi), 0.0)
        xi = xi_new
        by_hand.append(lam)
    # written out: ξ = 0.2, 0.2, −0.2, −0.15 → λ = 1.6, 1.7, 0.6, 0.65
    assert np.allclose(by_hand, [1.6, 1.7, 0.6, 0.65])
    got = [d.update([s])[0] for s in slacks]
    assert np.allclose(got, by_hand, atol=1e-14)
    # the proportional term reacts to changes of the violation: it differs from plain ascent
    plain = DualAscent(1, lr=ki, init=1.0)
    assert not np.allclose([plain.update([s])[0] for s in slacks], got)


def test_nupi_with_warmup_by_hand():
    # The ramp ρ_k = min(1, (k+1)/warmup) scales the whole step, proportional term included:
    # λ ← [λ + ρ_k (κ_i e_k + κ_p (ξ_k − ξ_{k−1}))]₊.  κ_i = 0.5, κ_p = 2, ν = 0.5, warmup = 4, λ_0 = 1:
    #   k=0: e=0.4, ξ=0.2,   ρ=1/4: λ = 1 + 0.25·(0.2 + 0.4)         = 1.15
    #   k=1: e=0.2, ξ=0.2,   ρ=2/4: λ = 1.15 + 0.5·(0.1 + 0)         = 1.2
    #   k=2: e=−0.6, ξ=−0.2, ρ=3/4: λ = 1.2 + 0.75·(−0.3 − 0.8)      = 0.375
    #   k=3: e=−0.1, ξ=−0.15, ρ=1:  λ = 0.375 + (−0.05 + 0.1)        = 0.425
    d = DualAscent(1, lr=0.5, kappa_p=2.0, nu=0.5, warmup=4, init=1.0)
    got = [d.update([s])[0] for s in [-0.4, -0.2, 0.6, 0.1]]
    assert np.allclose(got, [1.15, 1.2, 0.375, 0.425], rtol=0, atol=1e-14)
    # without the ramp on the proportional term the first step would be 1 + 0.1 + 0.4 = 1.5
    np.testing.assert_allclose(d.history[0]["lam"], [1.15], atol=1e-14)


def test_warmup_ramps_the_first_steps():
    d = DualAscent(1, lr=1.0, warmup=4, init=0.0)
    lams = [d.update([-1.0])[0] for _ in range(6)]
    # steps scaled by 1/4, 2/4, 3/4, 1, 1, 1
    assert np.allclose(np.diff([0.0] + lams), [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_infeasibility_is_reported_after_patience_steps():
    d = DualAscent(2, lr=0.1, patience=3, names=["height", "near c"])
    d.update([0.5, -1.0])
    d.update([0.5, -1.0])
    with pytest.raises(InfeasibleConstraintError, match="near c") as err:
        d.update([0.5, -1.0])
    assert err.value.constraints == [1]
    assert "height" not in str(err.value)


def test_a_met_step_resets_the_violation_count():
    d = DualAscent(1, lr=0.1, patience=3)
    for s in [-1, -1, 0.1, -1, -1, 0.2, -1, -1]:
        d.update([s])  # never three violations in a row
    with pytest.raises(InfeasibleConstraintError, match="constraint 0"):
        d.update([-1])


def test_infeasibility_warn_and_ignore():
    d = DualAscent(1, lr=0.1, patience=2, on_infeasible="warn", names=["reach"])
    d.update([-1.0])
    with pytest.warns(RuntimeWarning, match="reach"):
        d.update([-1.0])
    quiet = DualAscent(1, lr=0.1, patience=2, on_infeasible="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(5):
            quiet.update([-1.0])
    assert quiet.lam[0] == pytest.approx(1.0 + 0.5)


def test_averaged_is_the_mean_of_the_last_iterates():
    d = DualAscent(1, lr=1.0, init=0.0)
    for _ in range(8):
        d.update([-1.0])  # λ = 1, 2, ..., 8
    assert d.averaged(0.25) == pytest.approx([7.5])
    assert d.averaged(1.0) == pytest.approx([4.5])
    assert np.allclose(DualAscent(1, init=0.3).averaged(), [0.3])


def test_dual_state_dict_round_trip():
    rng = np.random.default_rng(1)
    a = DualAscent(2, lr=0.2, kappa_p=0.5, nu=0.3, warmup=5, patience=10)
    for s in rng.normal(size=(4, 2)):
        a.update(s, kl=0.1)
    state = json.loads(json.dumps(a.state_dict()))  # plain data
    b = DualAscent(2, lr=0.2, kappa_p=0.5, nu=0.3, warmup=5, patience=10)
    b.load_state_dict(state)
    for s in rng.normal(size=(6, 2)):
        assert np.array_equal(a.update(s), b.update(s))
    assert a.history == b.history and a.step == b.step == 10
    assert np.array_equal(a.xi, b.xi)


def test_dual_ascent_bad_inputs():
    with pytest.raises(ValueError):
        DualAscent(0)
    with pytest.raises(ValueError, match="lr"):
        DualAscent(1, lr=0.0)
    with pytest.raises(ValueError, match="on_infeasible"):
        DualAscent(1, on_infeasible="shout")
    with pytest.raises(ValueError, match="λ"):
        DualAscent(2, init=[-0.1, 1.0])
    d = DualAscent(2)
    with pytest.raises(ValueError, match="slacks"):
        d.update([0.1])
    with pytest.raises(FloatingPointError):
        d.update([0.1, float("nan")])


# ----------------------------------------------------------------------------- simplex
def _qp_projection(v):
    n = len(v)
    res = minimize(lambda x: np.sum((x - v) ** 2), np.full(n, 1.0 / n), jac=lambda x: 2 * (x - v),
                   method="SLSQP", bounds=[(0, None)] * n,
                   constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1, "jac": lambda x: np.ones(n)}],
                   options=dict(ftol=1e-14, maxiter=500))
    return res.x


def test_project_simplex_matches_a_qp_solver():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 8):
        for scale in (0.3, 1.0, 5.0):
            v = rng.normal(size=n) * scale
            p = project_simplex(v)
            assert p.min() >= 0 and p.sum() == pytest.approx(1.0, abs=1e-12)
            assert np.allclose(p, _qp_projection(v), atol=1e-6)
    inside = np.array([0.2, 0.3, 0.5])
    assert np.allclose(project_simplex(inside), inside)


def test_project_simplex_bad_inputs():
    for bad in ([], [[0.5, 0.5]], [0.5, np.nan]):
        with pytest.raises(ValueError):
            project_simplex(bad)


def test_simplex_dual_decay_by_hand():
    d = SimplexDual(2, lr=1.0, decay=0.5)
    # η_k = 1, 0.5, 0.25; g = (0.2, 0): (0.7, 0.5)→(0.6, 0.4); (0.7, 0.4)→(0.65, 0.35); (0.7, 0.35)→(0.675, 0.325)
    for expected in ([0.6, 0.4], [0.65, 0.35], [0.675, 0.325]):
        assert np.allclose(d.update([0.2, 0.0]), expected, atol=1e-14)
    assert d.step == 3 and d.lam_history.shape == (3, 2)
    assert np.allclose(d.averaged(2), [0.6625, 0.3375])
    e = SimplexDual(2, lr=1.0, decay=0.5)
    e.load_state_dict(json.loads(json.dumps(d.state_dict())))
    assert np.array_equal(e.update([0.0, 0.1]), d.update([0.0, 0.1]))


def test_simplex_dual_moves_weight_to_the_worst_expert():
    d = SimplexDual(3, lr=0.1)
    for _ in range(20):
        lam = d.update([1.0, 0.0, 0.0])
    assert lam[0] > 0.9 and lam.sum() == pytest.approx(1.0)


def test_simplex_dual_bad_inputs():
    with pytest.raises(ValueError):
        SimplexDual(1)
    with pytest.raises(ValueError, match="simplex"):
        SimplexDual(2, init=[0.7, 0.7])
    with pytest.raises(ValueError, match="values"):
        SimplexDual(2).update([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="values"):
        SimplexDual(2).update([1.0, np.inf])


# ----------------------------------------------------------------------------- normalisation
def test_reward_normalizer_fit():
    rng = np.random.default_rng(0)
    v = rng.normal(3.0, 2.0, size=1000)
    n = RewardNormalizer.fit(v)
    assert n.mean == pytest.approx(v.mean(), rel=1e-12)
    assert n.std == pytest.approx(v.std(ddof=1), rel=1e-12)
    z = n(torch.as_tensor(v))
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-12) and float(z.std()) == pytest.approx(1.0, rel=1e-12)
    assert n.to_raw_level(0.5) == pytest.approx(v.mean() + 0.5 * v.std(ddof=1))


def test_reward_normalizer_bad_inputs():
    with pytest.raises(ValueError, match="std"):
        RewardNormalizer(0.0, 0.0)
    with pytest.raises(ValueError, match="mean"):
        RewardNormalizer(float("nan"), 1.0)
    with pytest.raises(ValueError):
        RewardNormalizer.fit([1.0])
    with pytest.raises(ValueError, match="spread"):
        RewardNormalizer.fit([2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        RewardNormalizer.fit([1.0, np.nan, 2.0])


def test_raw_multiplier_gives_the_same_tilt():
    """λ_σ on (r − m)/s tilts q exactly as λ_raw = λ_σ/s on r (the constant −λ_σ m/s cancels in Z)."""
    gm = GaussianMixture([0.4, 0.6], [[-1.0, 0.0], [1.0, 0.5]], [np.eye(2) * 0.3, [[0.5, 0.1], [0.1, 0.2]]])
    lam_sigma = 0.8
    grid = Grid((-7.0, -7.0), (7.0, 7.0), 300)
    pts = grid.points
    for r in (LinearReward([1.0, -0.5]), QuadraticReward(np.eye(2), [1.0, 1.0])):
        norm = RewardNormalizer.fit(r(gm.sample(20_000, seed=0)))
        c = Constraint("r", r, 0.5, normalizer=norm)
        lam_raw = c.to_raw_multiplier(lam_sigma)
        assert lam_raw == pytest.approx(lam_sigma / norm.std)
        # the σ-unit tilt, normalised numerically on a grid, with the constant m kept in
        log_u = gm.log_prob(pts) + lam_sigma * (r(pts) - norm.mean) / norm.std
        log_u -= log_u.max()
        log_p = log_u - np.log(np.exp(log_u).sum() * grid.cell_area)
        exact = tilt(gm, [r], [lam_raw]).log_prob(pts)
        mass = exact > -15
        assert np.abs(log_p - exact)[mass].max() < 1e-6
        assert c.raw_level() == pytest.approx(norm.mean + 0.5 * norm.std)
    assert Constraint("r", LinearReward([1.0, 0.0]), 0.5).to_raw_multiplier(0.8) == 0.8  # no normaliser


def test_constraint_value_slack_and_direction():
    r = LinearReward([1.0, 0.0])
    x = torch.tensor([[1.0, 5.0], [3.0, -1.0]], dtype=torch.float64)
    ge = Constraint("a", r, 1.5, ">=", RewardNormalizer(1.0, 2.0))
    assert torch.allclose(ge.value(x), torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert ge.slack(2.0) == pytest.approx(0.5) and ge.sign == 1.0
    le = Constraint("b", r, 1.5, "<=")
    assert le.slack(2.0) == pytest.approx(-0.5) and le.sign == -1.0
    assert ge.describe()["units"] == "sigma" and le.describe()["units"] == "raw"
    with pytest.raises(ValueError, match="direction"):
        Constraint("c", r, 1.0, "=>")
    with pytest.raises(ValueError, match="level"):
        Constraint("c", r, float("inf"))


def test_lagrangian_and_weighted_objective_by_hand():
    cons = [Constraint("a", None, 0.5, ">="), Constraint("b", None, 1.0, "<=")]
    rewards = torch.tensor([[1.0, 2.0], [0.0, 4.0]], dtype=torch.float64)  # means 1.5 and 2.0
    kl = torch.tensor(0.3, dtype=torch.float64)
    # L = KL − λ₁ (1.5 − 0.5) − λ₂ · (−1) · (2.0 − 1.0) = 0.3 − 2·1 + 0.5·1
    assert float(lagrangian(kl, rewards, cons, [2.0, 0.5])) == pytest.approx(-1.2)
    # weighted baseline: KL − Σ w_i s_i mean r_i = 0.3 − 2·1.5 + 0.5·2
    assert float(weighted_objective(kl, rewards, [2.0, 0.5], signs=[1.0, -1.0])) == pytest.approx(-1.7)
    assert float(weighted_objective(kl, rewards, [2.0, 0.5])) == pytest.approx(0.3 - 3.0 - 1.0)


# ----------------------------------------------------------------------------- found by mutation testing
# (make mutation): behaviour the tests above left unpinned.
def test_dual_messages_history_and_dtypes():
    with pytest.raises(ValueError, match=r"n \(constraints\): must be ≥ 1"):
        DualAscent(0)
    with pytest.raises(ValueError, match="'raise', 'warn' or 'ignore'"):
        DualAscent(1, on_infeasible="shout")
    with pytest.raises(FloatingPointError, match=r"non-finite constraint slacks \[nan\] at dual step 0"):
        DualAscent(1).update([np.nan])
    d = DualAscent(2, init=1)  # an integer initial λ is stored as floats
    assert d.lam.dtype == np.float64
    d.update([1, -2], kl=0.25, extra_info="x")
    h = d.history[0]
    assert h == {"step": 1, "lam": [0.5, 2.0], "slacks": [1.0, -2.0], "kl": 0.25, "extra_info": "x"}
    assert all(isinstance(v, float) for v in h["slacks"])
    d.update([0.0, 0.0])
    assert d.history[1]["kl"] is None and d.history[1]["step"] == 2


def test_a_zero_slack_is_met_not_violated():
    d = DualAscent(1, lr=0.1, patience=2)
    for _ in range(5):
        d.update([0.0])  # E r = b exactly: met (an active constraint at the optimum), never reported


def test_infeasibility_message_names_every_stuck_constraint_and_counts_steps():
    d = DualAscent(3, lr=0.1, patience=2, names=["a", "b", "c"])
    d.update([-1.0, 0.5, -2.0])
    with pytest.raises(InfeasibleConstraintError) as err:
        d.update([-1.0, 0.5, -2.0])
    msg = str(err.value)
    assert msg.startswith("likely infeasible constraint level(s): a violated for 2 dual steps (slack -1, ")
    assert "; c violated for 2 dual steps (slack -2, " in msg
    assert msg.endswith(". Lower the level or check the reward.")
    assert err.value.constraints == [0, 2]


def test_warning_points_at_the_caller_and_the_count_restarts():
    d = DualAscent(1, lr=0.1, patience=3, on_infeasible="warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(9):
            d.update([-1.0])
    assert len(caught) == 3  # after steps 3, 6, 9: the run restarts from 0 after each report
    # stacklevel: the warning points at the user's update() call, not into constraints.py (under mutation
    # testing every library function runs inside a trampoline, which adds frames: only the latter holds)
    import cda_lite.constraints as lib

    assert all(Path(w.filename).resolve() != Path(lib.__file__).resolve() for w in caught)
    if "mutmut" not in sys.modules:
        assert all(w.filename == __file__ for w in caught)


def test_averaged_defaults():
    d = DualAscent(1, lr=1.0, init=0.0)
    d.update([-1.0])
    d.update([-1.0])  # λ = 1, 2: a quarter of 2 iterates rounds to 0, so the last one alone
    assert d.averaged() == pytest.approx([2.0])
    for _ in range(6):
        d.update([-1.0])  # λ = 1..8: the last quarter is 7, 8
    assert d.averaged() == pytest.approx([7.5])
    s = SimplexDual(2, lr=0.1)
    assert np.array_equal(s.averaged(), [0.5, 0.5])  # no history yet: the current λ
    for _ in range(7):
        s.update([1.0, 0.0])
    assert np.allclose(s.averaged(), s.lam_history[-5:].mean(0))
    assert not np.allclose(s.averaged(), s.lam_history[-6:].mean(0))


def test_violation_count_survives_a_checkpoint():
    a = DualAscent(1, lr=0.1, patience=5)
    for _ in range(3):
        a.update([-1.0])
    state = json.loads(json.dumps(a.state_dict()))
    assert state["violated_run"] == [3]
    b = DualAscent(1, lr=0.1, patience=5)
    b.load_state_dict(state)
    b.update([-1.0])
    with pytest.raises(InfeasibleConstraintError):
        b.update([-1.0])  # the 5th violated step in a row, counting those before the checkpoint


def test_simplex_dual_init_checks_and_history():
    with pytest.raises(ValueError, match="at least two experts"):
        SimplexDual(1)
    s = SimplexDual(3, init=[0, 1, 0])  # a vertex is on the simplex; stored as floats
    assert s.lam.dtype == np.float64 and s.lam.tolist() == [0.0, 1.0, 0.0]
    assert SimplexDual(3, init=[0.2, 0.3, 0.5]).lam.tolist() == [0.2, 0.3, 0.5]
    with pytest.raises(ValueError, match="simplex"):
        SimplexDual(3, init=[0.5, 0.5])  # wrong length, entries ≥ 0 summing to 1
    with pytest.raises(ValueError, match="simplex"):
        SimplexDual(2, init=[1.5, -0.5])  # sums to 1, one entry negative
    s.update([0.0, 0.0, 3.0], note=1)
    assert s.history[0] == {"step": 1, "lam": s.lam.tolist(), "values": [0.0, 0.0, 3.0], "note": 1}


def test_constraint_value_passes_arguments_and_describe():
    c = Constraint("r", lambda x, prompts: x.sum(1) + len(prompts), 0.5)
    x = torch.ones(2, 3)
    assert c.value(x, ["a", "b"]).tolist() == [5.0, 5.0]  # raw reward: no normaliser
    assert c.describe() == {"name": "r", "direction": ">=", "level": 0.5, "units": "raw"}
    n = Constraint("r", lambda x: x.sum(1), 1.0, "<=", RewardNormalizer(1.0, 2.0))
    assert n.describe() == {"name": "r", "direction": "<=", "level": 1.0, "units": "sigma"}


def test_lagrangian_keeps_the_rewards_dtype():
    cons = [Constraint("a", None, 0.5), Constraint("b", None, 1.0, "<=")]
    r32 = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float32)
    kl = torch.tensor(0.1, dtype=torch.float32)
    assert lagrangian(kl, r32, cons, [0.3, 0.7]).dtype == torch.float32
    assert weighted_objective(kl, r32, [0.3, 0.7]).dtype == torch.float32


def test_lagrangian_with_non_unit_slacks_in_float64():
    # slacks 2.9 and −(0.25 − 0.1) = −0.15 (not ±1, so a division could not pass for a product), levels
    # like 0.1 kept in float64: L = 0.2 − 0.7·2.9 − 1.3·(−1)·(0.25 − 0.1)
    cons = [Constraint("a", None, 0.1, ">="), Constraint("b", None, 0.1, "<=")]
    rewards = torch.tensor([[3.0, 3.0], [0.5, 0.0]], dtype=torch.float64)
    got = float(lagrangian(torch.tensor(0.2, dtype=torch.float64), rewards, cons, [0.7, 1.3]))
    assert got == pytest.approx(0.2 - 0.7 * 2.9 + 1.3 * (0.25 - 0.1), rel=0, abs=1e-14)


def test_reward_normalizer_edges():
    assert RewardNormalizer(0.0, 0.5).std == 0.5  # a spread below 1 is fine
    n = RewardNormalizer.fit([2.0, 3.0])  # two values are enough
    assert n.mean == 2.5 and n.std == pytest.approx(np.sqrt(0.5))
    small = RewardNormalizer.fit([0.1, 0.2, 0.3])
    assert small.std == pytest.approx(0.1)
    big = RewardNormalizer.fit([1e8, 1e8 + 2])  # kept in float64 (float32 would round both to 1e8)
    assert big.std == pytest.approx(np.sqrt(2.0))
    with pytest.raises(ValueError, match="finite"):
        RewardNormalizer.fit([1.0, np.nan, 2.0])
    assert Constraint("r", None, 0.7).raw_level() == 0.7
    with pytest.raises(ValueError, match="^project_simplex"):
        project_simplex([np.nan, 1.0])


def test_simplex_dual_normalized_steps_have_the_set_length_along_the_centred_values():
    d = SimplexDual(3, lr=0.1, decay=0.5, normalized=True)
    g = np.array([2.0, 1.0, 0.0])
    lam1 = d.update(g)
    step = lam1 - 1.0 / 3
    # interior step: length lr, direction g − mean(g) = (1, 0, −1)/√2 after normalisation
    np.testing.assert_allclose(step, 0.1 * np.array([1.0, 0.0, -1.0]) / np.sqrt(2), atol=1e-12)
    lam2 = d.update(g + 100.0)  # a common shift changes nothing; the length decays to lr · decay
    np.testing.assert_allclose(np.linalg.norm(lam2 - lam1), 0.05, atol=1e-12)
    assert d.update(np.full(3, 7.0)).tolist() == lam2.tolist()  # equal values: λ stays


def _simplex_max_by_scipy(c, H):
    """max cᵀλ − ½λᵀHλ on the simplex by SLSQP (independent of the KKT code under test)."""
    from scipy.optimize import minimize

    n = len(c)
    res = minimize(lambda l: -(c @ l - 0.5 * l @ H @ l), np.full(n, 1.0 / n), jac=lambda l: -(c - H @ l),
                   bounds=[(0, 1)] * n, constraints=[{"type": "eq", "fun": lambda l: l.sum() - 1}],
                   method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
    return res.x


@pytest.mark.parametrize("seed", range(6))
def test_simplex_newton_step_solves_a_quadratic_dual_in_one_step_or_a_few(seed):
    """On D(λ) = cᵀλ − ½λᵀHλ (gradient g = c − Hλ, curvature H) Newton's step from the centre lands on
    the constrained maximiser when it is interior; with a face active a few capped steps reach it."""
    from cda_lite.constraints import simplex_newton_direction

    rng = np.random.default_rng(seed)
    n = 3 + seed % 2
    A = rng.normal(size=(n, n))
    H = A @ A.T + 0.5 * np.eye(n)
    c = rng.normal(size=n) * (3.0 if seed >= 3 else 0.3)  # large c: the maximiser sits on a face
    truth = _simplex_max_by_scipy(c, H)
    lam = np.full(n, 1.0 / n)
    if truth.min() > 1e-6:  # interior: one full Newton step is exact for a quadratic
        np.testing.assert_allclose(lam + simplex_newton_direction(c - H @ lam, H, lam, ridge=0.0), truth, atol=1e-6)
    dual = SimplexDual(n, lr=0.5, decay=0.9, normalized=True)
    for _ in range(30):
        dual.update(c - H @ dual.lam, hessian=H)
    np.testing.assert_allclose(dual.lam, truth, atol=1e-5)
    assert (seed < 3) or truth.min() < 1e-6  # the family covers both cases


def test_simplex_newton_direction_stays_on_the_simplex_and_checks_input():
    from cda_lite.constraints import simplex_newton_direction

    H = np.diag([1.0, 2.0, 4.0])
    d = simplex_newton_direction([0.0, 0.0, 5.0], H, np.array([0.0, 0.5, 0.5]))
    assert abs(d.sum()) < 1e-12 and d[0] == 0.0  # an expert at 0 with a low value stays out
    d = simplex_newton_direction([9.0, 0.0, 0.0], H, np.array([0.0, 0.5, 0.5]))
    assert d[0] > 0  # … one with the highest value enters
    d = simplex_newton_direction([0.0, -50.0, 50.0], H, np.array([0.0, 0.1, 0.9]))
    assert d[1] == pytest.approx(-0.1) and abs(d.sum()) < 1e-12  # stops at λ_1 = 0, the rest re-solved
    with pytest.raises(ValueError, match="hessian"):
        simplex_newton_direction([1.0, 2.0], np.eye(3), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="^g"):
        simplex_newton_direction([np.nan, 2.0], np.eye(2), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="hessian"):
        simplex_newton_direction([1.0, 2.0], np.full((2, 2), np.nan), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="^lam"):
        simplex_newton_direction([1.0, 2.0], np.eye(2), np.array([0.5]))
    with pytest.raises(ValueError, match="hessian"):
        SimplexDual(2, normalized=True).update([1.0, 2.0], hessian=np.full((2, 2), np.inf))
    from cda_lite.constraints import bounded_newton_step
    with pytest.raises(ValueError, match="^b"):
        bounded_newton_step([np.nan, 1.0], np.eye(2), np.array([0.5, 0.5]), [True, True])
    with pytest.raises(ValueError, match="shapes"):
        bounded_newton_step([1.0, 1.0], np.eye(3), np.array([0.5, 0.5]), [True, True])
    with pytest.raises(ValueError, match="hessian"):
        SimplexDual(2).update([1.0, 2.0], hessian=np.eye(2))  # Newton steps need normalized=True
