"""The primal-dual trainer (cda_lite.align): exact resume, atomic checkpoints, stopping on NaN, fixed
weights, several constraints, infeasibility, and the wiring between the primal loop and the dual."""
import math
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from cda_lite.align import AlignConfig, AlignedEps, finetune
from cda_lite.tilted_dsm import effective_sample_size, tilt_log_weights
from cda_lite.checkpoint import load
from cda_lite.constraints import Constraint, RewardNormalizer
from cda_lite.exact import InfeasibleConstraintError, LinearReward, QuadraticReward, align_dual
from cda_lite.gmm import GaussianMixture
from cda_lite.models import ExactEps, MLPEps
from cda_lite.paths import data_path
from cda_lite.pretrained import default_schedule
from cda_lite.exact.problems import load_problem
from cda_lite.sampling import Chain, sample
from gaussian_chain import chain_law

SCHEDULE = default_schedule()
PROBLEM = load_problem(data_path("problems", "single_gaussian.json"))
TINY = AlignConfig(steps=6, batch_size=32, lr=3e-3, dual_lr=0.5, sample_steps=5, seed=0)


TILTED = replace(TINY, primal="tilted_dsm", dsm_batch=64, dual_every=2, buffer=2)


def setup(constraints=None, config=TINY, seed=0, **kw):
    """The exact ε of the single-Gaussian base stands in for a pretrained network (no training needed)."""
    torch.manual_seed(seed)
    base = ExactEps(PROBLEM.base, SCHEDULE)
    if constraints is None:
        constraints = [Constraint("x+y", PROBLEM.rewards[0], 1.0, ">=", RewardNormalizer(0.0, 1.45))]
    correction = MLPEps(SCHEDULE.T, 2, hidden=16, layers=1)
    return finetune(base, constraints, SCHEDULE, config, (2,), correction=correction, **kw)


def trainable(trainer):
    return [p.detach().clone() for p in trainer.params]


@pytest.mark.parametrize("base", [TINY, TILTED], ids=["pathwise", "tilted_dsm"])
def test_resume_is_bit_identical(tmp_path, base):
    path_a, path_b = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    cfg = replace(base, checkpoint_every=3)
    full, _ = setup(config=replace(cfg, checkpoint_path=path_a))
    full.train()
    # an interrupted run: 3 steps (checkpoint written at step 3), then a fresh process resumes
    first, _ = setup(config=replace(cfg, checkpoint_path=path_b))
    for _ in first.run(steps=3):
        pass
    assert load(path_b)["step"] == 3
    resumed, _ = setup(config=replace(cfg, checkpoint_path=path_b), seed=123)  # different init: overwritten
    resumed.resume(path_b)
    assert resumed.step == 3
    resumed.train()
    assert resumed.step == full.step == 6
    assert np.array_equal(resumed.dual.lam, full.dual.lam)
    assert resumed.dual.history == full.dual.history
    assert resumed.log == full.log
    for a, b in zip(trainable(resumed), trainable(full)):
        assert torch.equal(a, b)
    # the λ trajectory did move: the test would notice a resume that replays nothing
    assert len({tuple(h["lam"]) for h in full.dual.history}) > 1


class NaNAfter:
    """A reward that turns NaN from its ``k``-th call on (one call per primal step)."""

    def __init__(self, reward, k):
        self.reward, self.k, self.calls = reward, k, 0

    def __call__(self, x):
        self.calls += 1
        r = self.reward(x)
        return r * float("nan") if self.calls > self.k else r


def test_nan_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    path = str(tmp_path / "run.pt")
    c = Constraint("x+y", NaNAfter(PROBLEM.rewards[0], 5), 1.0)
    trainer, _ = setup([c], replace(TINY, steps=10, checkpoint_every=2, checkpoint_path=path))
    with pytest.raises(FloatingPointError, match="after step 5"):
        trainer.train()
    state = load(path)
    assert state["step"] == 4
    assert all(torch.isfinite(p).all() for p in state["params"])
    assert all(torch.isfinite(p).all() for p in trainer.params)  # no step was taken on the NaN loss
    assert sorted(os.listdir(tmp_path)) == ["run.1.pt", "run.pt"]  # the last two; no temporary files
    # the run continues from the checkpoint once the cause is fixed
    again, _ = setup([Constraint("x+y", PROBLEM.rewards[0], 1.0)], replace(TINY, steps=10))
    again.resume(path)
    again.train()
    assert again.step == 10


def test_checkpoints_are_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "run.pt")
    trainer, _ = setup()
    for _ in trainer.run(steps=2):
        pass
    trainer.save(path)
    good = trainer.dual.lam.copy()
    for _ in trainer.run(steps=2):
        pass

    def crash(obj, f, *args, **kwargs):  # a write that dies half-way
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        trainer.save(path)
    monkeypatch.undo()
    state = load(path)
    assert state["step"] == 2 and np.array_equal(state["dual"]["lam"], good)
    assert os.listdir(tmp_path) == ["run.pt"]


def test_fixed_weights_keep_lambda_frozen():
    trainer, _ = setup(config=replace(TINY, fixed_weights=[0.7]))
    before = trainable(trainer)
    lams = [state.lam.copy() for state in trainer.run()]
    assert all(np.array_equal(l, [0.7]) for l in lams)
    assert trainer.dual.history == [] and np.array_equal(trainer.lam, [0.7])
    assert any(not torch.equal(a, b) for a, b in zip(before, trainable(trainer)))  # the model did train


def test_dual_step_uses_the_batch_slacks():
    """Two constraints, one of each direction: every dual step is λ ← [λ − η · slack]₊ with the slacks
    s_i(Ê r_i − b_i) of that primal step's batch, and λ starts at 1/m."""
    cons = [Constraint("right", LinearReward([1.0, 0.0]), 0.3, ">="),
            Constraint("low", LinearReward([0.0, 1.0]), -0.2, "<=")]
    trainer, _ = setup(cons, replace(TINY, steps=5, dual_lr=0.4))
    lam = np.array([0.5, 0.5])
    for state in trainer.run():
        assert np.allclose(state.slacks, [state.expected[0] - 0.3, -(state.expected[1] + 0.2)])
        lam = np.maximum(lam - 0.4 * state.slacks, 0.0)
        assert np.allclose(state.lam, lam, atol=1e-12)
    assert trainer.dual.lam_history.shape == (5, 2)


def test_dual_every():
    trainer, _ = setup(config=replace(TINY, steps=6, dual_every=3))
    trainer.train()
    assert [h["step"] for h in trainer.dual.history] == [1, 2]
    assert len(trainer.log) == 6


def test_dual_step_uses_the_window_mean_slack():
    """With dual_every = 3 each dual step uses the mean slack of the window's three primal batches."""
    trainer, _ = setup(config=replace(TINY, steps=6, dual_every=3, dual_lr=0.4))
    slacks = [state.slacks for state in trainer.run()]
    lam = np.array([1.0])
    for k, h in enumerate(trainer.dual.history):
        lam = np.maximum(lam - 0.4 * np.mean(slacks[3 * k:3 * k + 3], axis=0), 0.0)
        assert np.allclose(h["lam"], lam, atol=1e-12)


def test_polish_freezes_lambda_at_its_average():
    """polish = 0.5 over 8 steps: 4 dual steps, then 4 primal steps at λ = the average of the last half
    of the dual iterates, which is also the λ reported."""
    trainer, _ = setup(config=replace(TINY, steps=8, polish=0.5, lam_average=0.5))
    lams = [state.lam.copy() for state in trainer.run()]
    hist = trainer.dual.lam_history
    assert len(hist) == 4
    avg = hist[-2:].mean(0)
    assert all(np.allclose(l, avg) for l in lams[4:])
    assert np.allclose(trainer.lam, avg)


def test_infeasible_level_is_reported():
    """−‖x‖² ≤ 0 everywhere: asking for E ≥ 0.5 can never be met."""
    c = Constraint("origin", QuadraticReward(np.eye(2), [0.0, 0.0]), 0.5)
    trainer, _ = setup([c], replace(TINY, steps=50, patience=4))
    with pytest.raises(InfeasibleConstraintError, match="origin") as err:
        trainer.train()
    assert err.value.constraints == [0]
    assert trainer.step == 4


def test_aligned_model_uses_the_reference_on_the_tail():
    trainer, aligned = setup()
    with torch.no_grad():
        for p in trainer.params:
            p.add_(0.1)
    x = torch.randn(5, 2)
    t_tail = aligned.t_tail
    assert t_tail == int(trainer.chain.ts[-1])
    assert torch.equal(aligned(x, t_tail), trainer.reference(x, t_tail))
    assert not torch.allclose(aligned(x, t_tail + 1), trainer.reference(x, t_tail + 1))
    t_vec = torch.tensor([t_tail, t_tail + 1, t_tail, 50, 99])
    expect = torch.stack([aligned(x[i:i + 1], int(t))[0] for i, t in enumerate(t_vec)])
    assert torch.allclose(aligned(x, t_vec), expect, atol=1e-6)


def test_trainer_bad_inputs():
    with pytest.raises(ValueError, match="constraints"):
        setup([])
    with pytest.raises(ValueError, match="optimizer"):
        setup(config=replace(TINY, optimizer="lbfgs"))
    with pytest.raises(ValueError, match="config.primal"):
        setup(config=replace(TINY, primal="reinforce"))
    with pytest.raises(ValueError, match="config.buffer"):
        setup(config=replace(TILTED, buffer=0))
    with pytest.raises(ValueError, match="config.dsm_batch"):
        setup(config=replace(TILTED, dsm_batch=-1))


def test_tilt_resampling_reproduces_the_gaussian_tilt():
    """Resampling N(0, I) ∝ exp(λ s r) with r = wᵀx (normalised by 2, direction ≤ so s = −1) gives the
    exponential tilt N(λ s Σw/2, Σ) in closed form; Kish's effective size is N·exp(−λ²‖w‖²/4)."""
    n, lam, w = 200_000, 0.8, np.array([1.0, -0.5])
    gen = torch.Generator().manual_seed(0)
    bank = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    c = Constraint("w.x", LinearReward(w), 0.0, "<=", RewardNormalizer(0.0, 2.0))
    logw = tilt_log_weights(c.value(bank)[None], [c], [lam])
    idx = torch.multinomial(torch.softmax(logw, 0), 100_000, replacement=True, generator=gen)
    mean = bank[idx].mean(0).numpy()
    assert np.allclose(mean, -lam * w / 2, atol=0.02)
    assert effective_sample_size(logw) / n == pytest.approx(math.exp(-lam**2 * (w @ w) / 4), rel=0.03)
    assert effective_sample_size(torch.zeros(50)) == pytest.approx(50)
    # kl_weight w divides the exponent: the tilt at λ with weight 2 is the tilt at λ/2
    assert torch.allclose(tilt_log_weights(c.value(bank)[None], [c], [lam], kl_weight=2.0),
                          tilt_log_weights(c.value(bank)[None], [c], [lam / 2]))


class Counting:
    """A reward that counts the samples it has been evaluated on."""

    def __init__(self, reward):
        self.reward, self.samples = reward, 0

    def __call__(self, x):
        self.samples += x.shape[0]
        return self.reward(x)


def test_tilted_dsm_evaluates_each_sample_reward_once():
    """In the tilted mode the pool and the dual share one evaluation: an expensive reward (an image
    model's) runs once per drawn sample, and the dual still sees exactly those values."""
    reward = Counting(PROBLEM.rewards[0])
    c = Constraint("x+y", reward, 1.0, ">=", RewardNormalizer(0.0, 1.45))
    trainer, _ = setup([c], config=TILTED)
    drawn = []
    original = trainer.sample_batch

    def spy(gen, n=None):
        out = original(gen, n)
        drawn.append(out[0].shape[0])
        return out

    trainer.sample_batch = spy
    trainer.train()
    assert len(drawn) >= 2 and reward.samples == sum(drawn)


def test_tilted_dsm_primal_reaches_the_tilt_at_fixed_lambda():
    """With λ frozen, the tilted-DSM primal's fine-tuned chain has the reward mean of the exact tilt of
    its reference sampler's law (Gaussian, propagated in closed form through the 100-step chain):
    E r = wᵀm̂ + λ wᵀŜw / s (raw units, normaliser s)."""
    r = PROBLEM.rewards[0]
    chain = Chain.make(SCHEDULE, 100, "large")
    q_hat = chain_law(PROBLEM.base, chain)
    s2 = float(r.w @ q_hat.covs[0] @ r.w)
    sd, lam = math.sqrt(s2), 0.8
    c = Constraint("x+y", r, 0.0, ">=", RewardNormalizer(0.0, sd))
    cfg = AlignConfig(steps=300, batch_size=64, lr=3e-3, lr_cosine=True, sample_steps=100, eta="large",
                      fixed_weights=[lam], primal="tilted_dsm", dual_every=10, buffer=4, dsm_batch=512, seed=0)
    torch.manual_seed(0)
    trainer, model = finetune(ExactEps(PROBLEM.base, SCHEDULE), [c], SCHEDULE, cfg, (2,),
                              correction=MLPEps(SCHEDULE.T, 2, hidden=32, layers=2))
    trainer.train()
    with torch.no_grad():
        x = sample(model, SCHEDULE, (20_000, 2), steps=100, eta="large", seed=1).double()
    tilted = float(r.w @ q_hat.means[0]) + lam * s2 / sd
    moved = tilted - float(r.w @ q_hat.means[0])
    assert moved > 0.5 * sd  # the tilt is far from the reference: a primal that did not move would fail
    assert float(r(x).mean()) == pytest.approx(tilted, abs=0.05 * sd)


def test_learned_lambda_matches_the_exact_lambda_of_the_reference_sampler():
    """Algorithm 1 on single_gaussian.json with the exact ε as the pretrained model. The KL is measured
    against the reference *sampler* (10 DDPM-like steps), whose law q̂ is Gaussian with a smaller
    spread than q, so the learned λ must match λ*(q̂) = (b − wᵀm̂)/(wᵀŜw), not λ*(q) = 1/2.1."""
    cfg = AlignConfig(steps=200, batch_size=128, lr=3e-3, lr_cosine=True, dual_lr=0.1, dual_every=1,
                      sample_steps=10, lam_average=0.3, seed=0)
    r, b = PROBLEM.rewards[0], PROBLEM.thresholds[0]
    q_hat = chain_law(PROBLEM.base, Chain.make(SCHEDULE, 10, 1.0))
    lam_hat = align_dual(q_hat, [r], [b]).lam[0]
    lam_q = align_dual(PROBLEM.base, [r], [b]).lam[0]
    assert lam_hat > 1.4 * lam_q  # the reference sampler is far from q: comparing with λ*(q) would be wrong
    sd = math.sqrt(r.w @ q_hat.covs[0] @ r.w)
    c = Constraint("x+y", r, b / sd, ">=", RewardNormalizer(0.0, sd))
    torch.manual_seed(0)
    trainer, model = finetune(ExactEps(PROBLEM.base, SCHEDULE), [c], SCHEDULE, cfg, (2,),
                              correction=MLPEps(SCHEDULE.T, 2, hidden=32, layers=2))
    trainer.train()
    assert trainer.lam_raw()[0] == pytest.approx(lam_hat, rel=0.15)
    with torch.no_grad():
        x = sample(model, SCHEDULE, (8000, 2), steps=10, eta=1.0, seed=1).double()
    assert float(r(x).mean()) > b - 0.1 * sd  # the constraint is met (to 0.1σ)
