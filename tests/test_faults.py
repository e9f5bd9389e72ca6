"""Fault injection for every Algorithm 1 trainer (2-D, digits-shaped images, tiny Stable Diffusion): a NaN
gradient with a finite loss on a checkpoint step, a corrupt or truncated checkpoint, a resume under
another configuration, SIGKILL during a save. Sizes are tiny; the claims are about what is on disk."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cda_lite import checkpoint as C
from cda_lite.align import AlignConfig, finetune
from cda_lite.constraints import Constraint, RewardNormalizer
from cda_lite.digits.experiment_setup import ConvCorrection
from cda_lite.models import ExactEps, MLPEps
from cda_lite.paths import data_path
from cda_lite.pretrained import default_schedule
from cda_lite.exact.problems import load_problem

ROOT = Path(__file__).resolve().parents[1]
SCHEDULE = default_schedule()
PROBLEM = load_problem(data_path("problems", "single_gaussian.json"))
TINY = AlignConfig(steps=6, batch_size=16, lr=3e-3, dual_lr=0.5, sample_steps=4, seed=0)


class _NaNGrad(torch.autograd.Function):
    """Identity forward (finite values), NaN backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.full_like(g, float("nan"))


class NaNGradAfter:
    """A reward whose value stays finite but whose gradient turns NaN from its (k+1)-th call on."""

    def __init__(self, reward, k):
        self.reward, self.k, self.calls = reward, k, 0

    def __call__(self, x, *args):
        self.calls += 1
        r = self.reward(x, *args)
        return _NaNGrad.apply(r) if self.calls > self.k else r


def mean_pixel(x):
    return x.flatten(1).mean(1)


def two_d(reward=None, config=TINY, level=1.0):
    torch.manual_seed(0)
    base = ExactEps(PROBLEM.base, SCHEDULE)
    c = Constraint("x+y", reward or PROBLEM.rewards[0], level, ">=", RewardNormalizer(0.0, 1.45))
    return finetune(base, [c], SCHEDULE, config, (2,), correction=MLPEps(SCHEDULE.T, 2, hidden=8, layers=1))[0]


def digits(reward=None, config=TINY, level=0.1):
    """The digits trainer's shape: (1, 8, 8) images, a ConvCorrection on a frozen conv ε-network."""
    torch.manual_seed(0)
    base = ConvCorrection(SCHEDULE.T, width=4)
    with torch.no_grad():
        for p in base.parameters():
            p.normal_(0, 0.05)
    c = Constraint("mean pixel", reward or mean_pixel, level, ">=")
    return finetune(base, [c], SCHEDULE, config, (1, 8, 8), correction=ConvCorrection(SCHEDULE.T, width=4))[0]


BUILDERS = {"2d": (two_d, PROBLEM.rewards[0]), "digits": (digits, mean_pixel)}


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_nan_gradient_on_a_checkpoint_step_is_never_saved(kind, tmp_path):
    build, reward = BUILDERS[kind]
    path = str(tmp_path / "run.pt")
    # checkpoints every 2 steps; the gradient of step 6 (a checkpoint step) is NaN, its loss finite
    tr = build(NaNGradAfter(reward, 5), replace(TINY, steps=8, checkpoint_every=2, checkpoint_path=path))
    with pytest.raises(C.NonFiniteError, match="gradient") as e:
        tr.train()
    assert e.value.checkpoint == path and path in str(e.value)
    assert tr.step == 5
    assert all(torch.isfinite(p).all() for p in tr.params)  # the NaN step was not taken
    for p in (path, C.previous(path, 1)):
        state = C.load(p)
        assert all(torch.isfinite(t).all() for t in state["params"])
    assert C.load(path)["step"] == 4
    assert sorted(os.listdir(tmp_path)) == ["run.1.pt", "run.pt"]  # the last two, no temporary file
    again = build(reward, replace(TINY, steps=8, checkpoint_every=2, checkpoint_path=path))
    again.resume(e.value.checkpoint)  # the path in the message resumes
    again.train()
    assert again.step == 8 and all(torch.isfinite(p).all() for p in again.params)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_corrupt_checkpoint_is_named_and_the_previous_one_used(kind, tmp_path):
    build, _ = BUILDERS[kind]
    path = str(tmp_path / "run.pt")
    tr = build(config=replace(TINY, checkpoint_every=2, checkpoint_path=path))
    for _ in tr.run(steps=4):
        pass
    data = bytearray(Path(path).read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in the payload
    Path(path).write_bytes(bytes(data))
    fresh = build(config=replace(TINY, checkpoint_every=2, checkpoint_path=path))
    with pytest.warns(RuntimeWarning, match=r"run\.pt is corrupt \(checksum mismatch\).*run\.1\.pt \(step 2\)"):
        fresh.resume(path)
    assert fresh.step == 2 and fresh.last_checkpoint == C.previous(path, 1)
    with pytest.raises(C.CorruptCheckpointError, match=r"run\.pt is corrupt"):
        C.load(path)
    Path(C.previous(path, 1)).write_bytes(Path(C.previous(path, 1)).read_bytes()[:-1000])  # truncated
    with pytest.raises(C.CorruptCheckpointError, match=r"run\.1\.pt is truncated") as e:
        build(config=TINY).resume(path)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_resume_under_another_configuration_is_refused(kind, tmp_path):
    build, reward = BUILDERS[kind]
    path = str(tmp_path / "run.pt")
    tr = build(config=replace(TINY, checkpoint_path=path))
    for _ in tr.run(steps=2):
        pass
    tr.save(path)
    cases = {"align.seed": dict(config=replace(TINY, seed=1)),
             "align.fixed_weights": dict(config=replace(TINY, fixed_weights=[0.5])),
             "constraints": dict(level=0.7)}
    for field, kw in cases.items():
        with pytest.raises(C.ConfigMismatchError, match="--fresh") as e:
            build(**kw).resume(path)
        assert any(f.startswith(field) for f in e.value.fields), (field, e.value.fields)
    with pytest.warns(RuntimeWarning, match="another configuration"):
        assert build(config=replace(TINY, seed=1)).resume(path, force=True).step == 2
    # what does not change the trajectory is allowed: more steps, another checkpoint interval
    assert build(config=replace(TINY, steps=9, checkpoint_every=3)).resume(path).step == 2


def test_sigkill_during_saves_leaves_a_loadable_checkpoint(tmp_path):
    """A child process saves checkpoints in a loop and is killed with SIGKILL at several moments; after
    each kill the newest intact checkpoint loads (atomic write + rotation), and no half file is used."""
    path = tmp_path / "run.pt"
    script = textwrap.dedent(f"""
        import torch, sys
        from cda_lite.checkpoint import save_checkpoint
        i = 0
        while True:
            i += 1
            save_checkpoint({{"step": i, "x": torch.full((400_000,), float(i))}}, {str(path)!r}, config={{"i": 0}})
            if i == 1:
                print("ready", flush=True)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for delay in (0.05, 0.13, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the newest file must be intact, not a fallback
            state, _, used = C.load_checkpoint(str(path))
        assert used == str(path)
        assert state["step"] >= 1 and bool((state["x"] == state["step"]).all())  # payload = its own step
    leftovers = [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    for f in leftovers:  # a kill between mkstemp and replace leaves a temp file, never read
        assert not f.endswith("run.pt")


def test_nonfinite_state_is_refused(tmp_path):
    with pytest.raises(C.NonFiniteError, match="refusing"):
        C.save_checkpoint({"step": 1, "params": [torch.tensor([1.0, float("nan")])]}, str(tmp_path / "a.pt"))
    assert os.listdir(tmp_path) == []


def test_not_a_checkpoint_is_one_line_naming_the_file(tmp_path):
    p = tmp_path / "junk.pt"
    p.write_bytes(b"hello, not a pickle")
    with pytest.raises(C.CorruptCheckpointError, match="junk.pt") as e:
        C.load_checkpoint(str(p))
    assert "\n" not in str(e.value)
    with pytest.raises(C.CheckpointError, match="no checkpoint"):
        C.load_checkpoint(str(tmp_path / "none.pt"))


# --------------------------------------------------------------------------- Stable Diffusion (tiny)
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")


def _sd_small(**kw):
    from cda_lite.sd import presets as P
    base = dict(images_per_step=1, micro_batch=1, height=16, width=16, sample_steps=3, grad_steps=2,
                random_truncation=False, checkpoint_every=1, steps=3,
                constraints=[P.ConstraintSpec("brightness", ">=", 0.5)])
    base.update(kw)
    return replace(P.get_preset("fig3", tiny=True), **base)


def test_sd_nan_gradient_stops_with_the_last_finite_checkpoint(tmp_path):
    from cda_lite.sd import train as T
    from cda_lite.sd.tiny import tiny_pipeline
    out = str(tmp_path / "run")
    p = _sd_small()

    def inject(trainer):  # the gradient of step 2 (a checkpoint step) turns NaN, the loss stays finite
        c = trainer.constraints[0]
        c.reward = NaNGradAfter(c.reward, 1)

    with pytest.raises(C.NonFiniteError) as e:
        T.run(tiny_pipeline(), p, out, progress=False, setup=inject)
    ckpt = os.path.join(out, "checkpoint.pt")
    assert e.value.checkpoint == ckpt and ckpt in str(e.value) and "None" not in str(e.value)
    assert C.load(ckpt)["step"] == 1
    summary = T.json.load(open(os.path.join(out, "summary.json")))
    assert summary["last_checkpoint"] == ckpt
    s = T.run(tiny_pipeline(), p, out, progress=False)  # resumes from it and finishes
    assert s["trainer"].step == 3 and all(torch.isfinite(q).all() for q in s["trainer"].params)
    # another seed / baseline / preset is refused before any pipeline is built ...
    for q, field in ((replace(p, seed=1), "preset.seed"), (replace(p, fixed_weights=True), "preset.fixed_weights"),
                     (replace(p, name="table2"), "preset.name")):
        with pytest.raises(C.ConfigMismatchError) as e:
            T.check_resume(out, q)
        assert field in e.value.fields
    T.check_resume(out, replace(p, steps=10))  # a longer run of the same configuration is fine
    with pytest.raises(C.ConfigMismatchError, match="preset.seed"):  # ... and by the run itself
        T.run(tiny_pipeline(), replace(p, seed=1), out, progress=False)


@pytest.mark.parametrize("field,value", [("steps", -3), ("steps", 0), ("batch_size", 0), ("sample_steps", -1),
                                         ("lr", float("nan")), ("dual_lr", float("inf")), ("dual_lr", 0.0),
                                         ("kl_weight", -1.0), ("grad_accum", 0)])
def test_bad_trainer_settings_are_refused_before_any_step(field, value):
    with pytest.raises(ValueError, match=f"config.{field}"):
        two_d(config=replace(TINY, **{field: value}))
