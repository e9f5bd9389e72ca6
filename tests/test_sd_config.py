"""The SD rung as a researcher drives it, on the tiny pipeline: a YAML configuration starting from a
preset with overrides (``--steps 3`` means 3), the resolved ``config.yaml`` that loads back to the same
run, a reward of one's own by ``module:function`` and as a Python callable (raw units and σ units),
prompt files, TensorBoard events that TensorBoard's own reader parses, validation PNGs, the plot, and
one-line exit-2 errors."""
import json
import os
import sys
import textwrap
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("omegaconf")

from cda_lite.sd import presets as P  # noqa: E402
from cda_lite.sd.__main__ import main  # noqa: E402
from cda_lite.sd.config import TrainConfig, load_config  # noqa: E402

SMALL = ["micro_batch=1", "images_per_step=2", "height=16", "width=16", "sample_steps=3", "grad_steps=2",
         "calibration_images=4", "validation_seeds=[0,1]", "validation_prompts=[a cat,a dog]"]

USER_MODULE = textwrap.dedent('''
    import torch
    CALLS = []
    def darkness(images):
        """1 − mean intensity, recorded with the shape and range it was given."""
        r = 1.0 - images.mean(dim=(1, 2, 3))
        CALLS.append({"shape": tuple(images.shape), "min": float(images.detach().min()), "max": float(images.detach().max()),
                      "values": r.detach().tolist()})
        return r
    PROMPTS = []
    def prompt_aware(images, prompts):
        PROMPTS.extend(prompts)
        return images.std(dim=(1, 2, 3))
''')


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    name = f"user_rewards_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**6}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    mod = importlib.import_module(name)
    yield name, mod
    sys.modules.pop(name, None)


def test_yaml_config_overrides_callable_reward_logs_and_plot(tmp_path, user_module, capsys):
    name, mod = user_module
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red boat\n\n  a blue house  \na green tree\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(textwrap.dedent(f'''
        preset: fig3
        tiny: true
        steps: 5
        validate_every: 2
        prompts: {prompts}
        constraints:
          - {{reward: "{name}:darkness", direction: ">=", level: 0.4, units: raw}}
          - {{reward: "{name}:prompt_aware", direction: "<=", level: 0.3, units: raw}}
    '''))
    out = tmp_path / "run"
    rc = main(["train", "--config", str(cfg), "--steps", "3", "--set", "lr=0.002", *sum([["--set", s] for s in SMALL], []),
               "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines()]
    assert summary["step"] == 3 and len(rows) == 3  # --steps 3 means 3 (the file said 5)
    assert "steps = 3" in capsys.readouterr().out
    # the resolved configuration: every override present, and it loads back to the same configuration
    back = load_config(str(out / "config.yaml"))
    assert back.steps == 3 and back.lr == 0.002 and back.micro_batch == 1 and back.tiny
    assert back.train_prompts == back.eval_prompts == ["a red boat", "a blue house", "a green tree"]
    assert asdict(back) == asdict(load_config(str(cfg), overrides=["steps=3", "lr=0.002", *SMALL]))
    # the user's reward: called on (N, 3, H, W) images in [0, 1]; raw units, so the logged batch mean is the
    # mean of what it returned over the step's 2 micro-batches (calls after training: validation only)
    calls = mod.CALLS
    assert all(c["shape"] == (1, 3, 16, 16) and 0 <= c["min"] <= c["max"] <= 1 for c in calls)
    for k, row in enumerate(rows):
        mine = np.mean([v for c in calls[2 * k:2 * k + 2] for v in c["values"]])
        assert row[f"E[{name}:darkness]"] == pytest.approx(mine, rel=1e-5)
    assert set(mod.PROMPTS) <= {"a red boat", "a blue house", "a green tree"} and mod.PROMPTS
    # TensorBoard: TensorBoard's own reader parses the events with the expected tags and values
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ev = [os.path.join(r, f) for r, _, fs in os.walk(out / "tensorboard") for f in fs if "tfevents" in f]
    acc = EventAccumulator(ev[0], size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    lam_tags = [s for s in tags["scalars"] if s.startswith("lambda/")]
    assert {"loss", "kl"} <= set(tags["scalars"]) and len(lam_tags) == 2
    for tag in lam_tags:
        cname = tag.split("/", 1)[1]
        assert f"reward/{cname}" in tags["scalars"] and f"level/{cname}" in tags["scalars"]
    kl = [e.value for e in acc.Scalars("kl")]
    assert [e.step for e in acc.Scalars("kl")] == [1, 2, 3]
    assert np.allclose(kl, [r["kl"] for r in rows], rtol=1e-5)
    assert "validation" in tags["images"] and [e.step for e in acc.Images("validation")] == [2, 3]
    # validation grids: 2 prompts (rows) × 2 seeds (columns) of 16 px
    from PIL import Image
    pngs = sorted(os.listdir(out / "samples"))
    assert pngs == ["step_000002.png", "step_000003.png"]
    assert Image.open(out / "samples" / pngs[-1]).size == (32, 32)
    assert main(["plot", str(out)]) == 0
    assert Image.open(out / "curves.png").size[0] > 100
    # a second run of the same folder resumes and refuses nothing: it is already done
    lora = out / "lora"
    assert (lora / "adapter_config.json").exists()


def test_python_api_callable_reward_sigma_units_are_affine_invariant(tmp_path):
    """A callable reward in σ units of the pretrained model: σ measured on the base model's samples, so
    r and 10 r + 3 give the same normalised values (and differ from raw units)."""
    from cda_lite.sd.tiny import tiny_pipeline
    from cda_lite.sd.train import build

    def bright(images):
        return images.mean(dim=(1, 2, 3))

    def scaled(images):
        return 10 * images.mean(dim=(1, 2, 3)) + 3

    p = P.get_preset("fig3", tiny=True)
    p = replace(p, constraints=[P.ConstraintSpec(bright, ">=", 0.0, "sigma"), P.ConstraintSpec(scaled, ">=", 0.0, "sigma"),
                                P.ConstraintSpec(scaled, ">=", 0.0, "raw")],
                micro_batch=2, images_per_step=2, height=16, width=16, sample_steps=3, grad_steps=2, calibration_images=6)
    trainer = build(tiny_pipeline(), p)[0]
    a, b, raw = trainer.constraints
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a.value(x), b.value(x), atol=1e-4)
    assert b.normalizer.std == pytest.approx(10 * a.normalizer.std, rel=1e-4)
    assert raw.normalizer is None and torch.allclose(raw.value(x), scaled(x))
    assert "bright" in a.name  # named module:qualname in logs and config.yaml
    # train through the Python API with the callable itself
    from cda_lite.sd.train import run
    s = run(tiny_pipeline(), replace(p, steps=1, constraints=p.constraints[:1], checkpoint_every=0), str(tmp_path),
            progress=False)
    assert s["step"] == 1 and np.isfinite(s["last_expected"][0])
    assert "bright" in (tmp_path / "config.yaml").read_text()


def test_config_errors_are_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: fig3\ntiny: true\nstepz: 3\n")
    cases = [["train", "--config", str(bad), "--out", str(tmp_path / "o")],
             ["train", "--preset", "fig3", "--tiny", "--set", "steps=abc", "--out", str(tmp_path / "o")],
             ["train", "--preset", "fig3", "--tiny", "--reward", "no_such_module_xyz:f", "--out", str(tmp_path / "o")],
             ["train", "--preset", "fig3", "--tiny", "--reward", "nope", "--out", str(tmp_path / "o")],
             ["train", "--preset", "fig3", "--tiny", "--prompts", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")],
             ["train", "--preset", "fig3", "--tiny", "--set", "constraints[0].units=kelvin", "--out", str(tmp_path / "o")],
             ["plot", str(tmp_path / "nothing")]]
    keys = ["stepz", "steps", "no_such_module_xyz", "nope", "missing.txt", "units", "log.jsonl"]
    for argv, key in zip(cases, keys):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and key in err, err
    assert not (tmp_path / "o").exists()  # nothing written before the configuration is valid
    assert main(["train", "--preset", "fig5", "--out", str(tmp_path / "o")]) == 2  # a composition preset
    assert "fig3" in capsys.readouterr().err  # the choices are listed


def test_every_field_reachable_and_preset_choices_in_help(capsys):
    fields = [f for f in TrainConfig.__dataclass_fields__ if f not in ("name", "constraints")]
    c = load_config(preset="fig4", tiny=True)
    assert isinstance(c, P.AlignPreset) and c.preset == "fig4" and len(c.constraints) == 4
    for f in ("kl_weight", "dual_lr", "lam_init", "eta", "guidance", "lora_rank", "grad_clip"):
        assert f in fields
        v = getattr(c, f) + (1 if isinstance(getattr(c, f), int) else 0.5)
        assert getattr(load_config(preset="fig4", tiny=True, overrides=[f"{f}={v}"]), f) == pytest.approx(v)
    d = load_config(preset="fig4", tiny=True, overrides=["constraints[1].direction=<=", "constraints[2].reward=cda_lite.rewards:brightness"])
    assert d.constraints[1].direction == "<=" and d.constraints[2].reward == "cda_lite.rewards:brightness"
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in ("fig3", "fig4", "table2"))


def test_a_request_for_n_processes_that_yields_one_is_an_error(monkeypatch):
    from cda_lite.sd import distributed as D
    monkeypatch.setattr(D, "requested_processes", lambda: 2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match="2 processes"):
        D.ensure_processes()


def test_every_core_setting_reaches_the_trainer():
    """Each AlignConfig field (Algorithm 1's settings) is a configuration field of the same name and
    arrives in the trainer's configuration unchanged (the SD-specific mappings aside)."""
    from dataclasses import fields

    from cda_lite.align import AlignConfig
    from cda_lite.sd.train import align_config
    mapped = {"batch_size", "checkpoint_every", "checkpoint_path", "kappa_p", "nu", "fixed_weights", "grad_accum"}
    # the tilted-DSM primal step reweights the model's own samples, which needs a pool of thousands of
    # samples per dual step: the 2-D rung's option, not Stable Diffusion's (which runs the paper's step)
    not_sd = {"primal", "buffer", "dsm_batch"}
    new = {"steps": 7, "lr": 3e-4, "optimizer": "adam", "lr_cosine": True, "dual_lr": 0.3, "dual_every": 2,
           "dual_warmup": 3, "lam_init": 0.7, "sample_steps": 5, "eta": 0.5, "grad_steps": 4,
           "random_truncation": False, "checkpointing": True, "kl_weight": 0.4, "grad_clip": 2.0,
           "lam_average": 0.5, "polish": 0.1, "patience": 9, "on_infeasible": "raise", "seed": 11,
           "dual_precondition": True}
    assert set(new) == {f.name for f in fields(AlignConfig)} - mapped - not_sd
    c = load_config(preset="fig3", tiny=True, overrides=[f"{k}={v}" for k, v in new.items()] + ["dual=nupi",
                                                                                               "kappa_p=0.2", "nu=0.5"])
    a = align_config(c)
    assert {k: getattr(a, k) for k in new} == new
    assert a.primal == "pathwise"
    assert (a.kappa_p, a.nu, a.batch_size, a.grad_accum) == (0.2, 0.5, c.micro_batch, c.images_per_step // c.micro_batch)
    assert align_config(replace(c, fixed_weights=True)).fixed_weights == [0.7] * 3



def test_json_configuration(tmp_path):
    f = tmp_path / "run.json"
    f.write_text(json.dumps({"preset": "table2", "tiny": True, "steps": 2, "lr": 5e-4,
                             "constraints": [{"reward": "brightness", "direction": "<=", "level": 1.5, "units": "raw"}]}))
    c = load_config(str(f))
    assert (c.name, c.steps, c.lr, c.sample_steps) == ("table2", 2, 5e-4, P.get_preset("table2", tiny=True).sample_steps)
    assert c.constraints == [P.ConstraintSpec("brightness", "<=", 1.5, "raw")]


def test_bf16_run_keeps_the_lora_in_fp32(tmp_path):
    """--mixed-precision bf16: the frozen base in bf16, the LoRA and its gradients in fp32; the run is finite."""
    rc = main(["train", "--preset", "fig3", "--tiny", "--steps", "1", "--mixed-precision", "bf16",
               *sum([["--set", s] for s in SMALL], []), "--set", "tensorboard=false", "--out", str(tmp_path)])
    assert rc == 0
    from safetensors.torch import load_file
    w = load_file(str(tmp_path / "lora" / "pytorch_lora_weights.safetensors"))
    assert {v.dtype for v in w.values()} == {torch.float32}
    row = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert np.isfinite(row["loss"]) and not (tmp_path / "tensorboard").exists()
    # the Python API: base modules in bf16, the trained LoRA parameters in fp32
    from cda_lite.sd.distributed import run_accelerated
    from cda_lite.sd.tiny import tiny_pipeline
    c = load_config(preset="fig3", tiny=True, overrides=[*SMALL, "steps=1", "mixed_precision=bf16", "tensorboard=false"])
    pipe = tiny_pipeline()
    s = run_accelerated(pipe, c, str(tmp_path / "api"), progress=False)
    assert pipe.unet.conv_in.weight.dtype == pipe.vae.decoder.conv_in.weight.dtype == torch.bfloat16
    assert {q.dtype for q in s["trainer"].params} == {torch.float32} and s["step"] == 1


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(preset=st.sampled_from(["fig3", "fig4", "table2"]), tiny=st.booleans(), steps=st.integers(1, 10**4),
       lr=st.floats(1e-7, 1.0), kl=st.floats(0.0, 10.0), lam=st.floats(0.0, 5.0), seed=st.integers(0, 2**31 - 1),
       dual=st.sampled_from(["nupi", "ascent"]), trunc=st.booleans(),
       level=st.floats(-5, 5), units=st.sampled_from(["auto", "raw", "sigma"]))
def test_resolved_configuration_round_trips(tmp_path_factory, preset, tiny, steps, lr, kl, lam, seed, dual, trunc,
                                            level, units):
    """Whatever the overrides, config.yaml loads back to exactly the configuration that was resolved."""
    from cda_lite.sd.config import to_yaml
    sets = [f"steps={steps}", f"lr={lr!r}", f"kl_weight={kl!r}", f"lam_init={lam!r}", f"seed={seed}", f"dual={dual}",
            f"random_truncation={trunc}", f"constraints[0].level={level!r}", f"constraints[0].units={units}"]
    c = load_config(preset=preset, tiny=tiny, overrides=sets)
    f = tmp_path_factory.mktemp("rt") / "config.yaml"
    f.write_text(to_yaml(c))
    assert asdict(load_config(str(f))) == asdict(c)
    assert (c.steps, c.lr, c.seed, c.constraints[0].level, c.constraints[0].units) == (steps, lr, seed, level, units)
