"""The Stable Diffusion user paths, run the way users run them (tiny random pipeline on CPU):
``python -m cda_lite.sd train`` in a subprocess (constrained, ``--baseline``, ``--reward``), and the
trained adapters loaded back from their folders (``attach_adapters``, ``sample --adapters DIR ...``)
giving the ε the trainer ended with."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from cda_lite.sd import lora as L  # noqa: E402
from cda_lite.sd import presets as P  # noqa: E402
from cda_lite.sd import sampling as S  # noqa: E402
from cda_lite.sd.tiny import tiny_pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRAIN_STEPS = 2
RUNS = {
    "constrained": ["train", "--preset", "fig3", "--tiny", "--steps", str(TRAIN_STEPS)],
    "baseline": ["train", "--preset", "fig3", "--tiny", "--steps", str(TRAIN_STEPS), "--baseline"],
    "brightness": ["train", "--preset", "table2", "--tiny", "--steps", "1", "--reward", "brightness"],
    "colourfulness": ["train", "--preset", "table2", "--tiny", "--steps", "1", "--reward", "colourfulness"],
}


def _cli(args, out):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "cda_lite.sd", *args, "--out", str(out)], env=env, cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each run is its own Python process, as a user's would be (two at a time: two cores)."""
    d = tmp_path_factory.mktemp("sd-user")
    out = {}
    names = list(RUNS)
    for pair in (names[:2], names[2:]):
        procs = {n: _cli(RUNS[n], d / n) for n in pair}
        for n, p in procs.items():
            stdout, stderr = p.communicate(timeout=600)
            assert p.returncode == 0, f"{n}: {stderr[-2000:]}"
            out[n] = d / n
    return out


def _log(folder):
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]


def test_train_writes_a_finished_run_with_moving_multipliers(runs):
    s = json.loads((runs["constrained"] / "summary.json").read_text())
    p = P.get_preset("fig3", tiny=True)
    assert s["status"] == "done" and s["step"] == TRAIN_STEPS and s["preset"] == "fig3"
    assert [c["name"] for c in s["constraints"]] == [c.reward for c in p.constraints]
    log = _log(runs["constrained"])
    assert [r["step"] for r in log] == list(range(1, TRAIN_STEPS + 1))
    lam = np.array([[r[f"lam[{c.reward}]"] for c in p.constraints] for r in log])
    assert np.all(lam >= 0) and not np.allclose(lam[0], p.lam_init)  # the dual step moved λ
    np.testing.assert_allclose(lam[-1], s["lam"])
    assert (runs["constrained"] / "lora" / L.WEIGHT_NAME).exists()


def test_baseline_keeps_the_weights_fixed(runs):
    p = P.get_preset("fig3", tiny=True)
    log = _log(runs["baseline"])
    s = json.loads((runs["baseline"] / "summary.json").read_text())
    for r in log:
        assert [r[f"lam[{c.reward}]"] for c in p.constraints] == pytest.approx([p.lam_init] * len(p.constraints))
    assert s["lam"] == pytest.approx([p.lam_init] * len(p.constraints))
    # same seed, same first batch: the first step's rewards agree with the constrained run; the
    # multipliers (and so the second step) do not
    first = _log(runs["constrained"])[0]
    for c in p.constraints:
        assert log[0][f"E[{c.reward}]"] == pytest.approx(first[f"E[{c.reward}]"], rel=1e-5)


def test_reward_flag_replaces_the_constraint_reward(runs):
    level = P.get_preset("table2", tiny=True).constraints[0]
    for name in ("brightness", "colourfulness"):
        s = json.loads((runs[name] / "summary.json").read_text())
        assert [c["name"] for c in s["constraints"]] == [name]
        assert s["constraints"][0]["level"] == level.level and s["constraints"][0]["direction"] == level.direction
        assert f"E[{name}]" in _log(runs[name])[0]


def _eps(pipe, prompts, x, t):
    with torch.no_grad():
        return S.SDEps(pipe.unet, 5.0).set_prompts(pipe, prompts)(x, t)


def test_adapters_loaded_from_their_folders_reproduce_the_trained_eps(tmp_path):
    """Train in this process (the trainer's own pipeline holds the trained adapter), then load the saved
    folder into a fresh pipeline as a user would: the ε agree to float32 round-off, and differ from the
    pipeline without the adapter."""
    from cda_lite.sd.train import run

    p = P.get_preset("fig3", tiny=True)
    from dataclasses import replace
    p = replace(p, steps=1)
    pipe = tiny_pipeline(0)
    summary = run(pipe, p, str(tmp_path / "run"), progress=False)
    assert summary["step"] == 1
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    prompts = ["a photo of a cat", "a photo of a dog"]
    trained = _eps(pipe, prompts, x, 500)

    fresh = tiny_pipeline(0)
    base = _eps(fresh, prompts, x, 500)
    names = L.attach_adapters(fresh, ["trained"], [str(tmp_path / "run" / "lora")])
    L.set_active(fresh.unet, names[0])
    loaded = _eps(fresh, prompts, x, 500)
    torch.testing.assert_close(loaded, trained, rtol=1e-4, atol=1e-5)
    assert (loaded - base).abs().max() > 1e-4  # the adapter changed the model, and loading kept the change


def test_sample_with_trained_adapter_folders(runs, tmp_path):
    """``sample --preset blend --adapters DIR DIR`` uses the trained adapters, not the random stand-ins."""
    dirs = [str(runs["colourfulness"] / "lora"), str(runs["brightness"] / "lora")]
    common = ["sample", "--preset", "blend", "--tiny", "--steps", "2"]
    procs = [_cli(common + ["--adapters", *dirs], tmp_path / "trained"), _cli(common, tmp_path / "standin")]
    for p in procs:
        _, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-2000:]
    a = torch.load(tmp_path / "trained" / "images.pt")
    b = torch.load(tmp_path / "standin" / "images.pt")
    assert a.shape == b.shape and (a - b).abs().max() > 1e-3
    bad = _cli(common + ["--adapters", dirs[0]], tmp_path / "bad")  # one folder for two adapters
    _, stderr = bad.communicate(timeout=600)
    assert bad.returncode != 0 and "adapter_dirs" in stderr
