"""Interop of the SD rung's outputs with the libraries researchers use: the saved LoRA loads in a fresh
process through diffusers (``pipe.load_lora_weights``) and through peft (``PeftModel.from_pretrained``)
and reproduces the trained UNet's output; files honour the umask."""
import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from cda_lite.sd import lora as L  # noqa: E402
from cda_lite.sd.tiny import tiny_pipeline  # noqa: E402

FRESH = textwrap.dedent('''
    import json, sys
    import torch
    from cda_lite.sd.tiny import tiny_pipeline
    folder, how = sys.argv[1], sys.argv[2]
    pipe = tiny_pipeline(0)
    if how == "diffusers":
        pipe.load_lora_weights(folder)
        unet = pipe.unet
    else:
        from peft import PeftModel
        unet = PeftModel.from_pretrained(pipe.unet, folder)
    g = torch.Generator().manual_seed(5)
    x, cond = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 16, 32, generator=g)
    with torch.no_grad():
        out = unet(x, torch.tensor([500, 20]), encoder_hidden_states=cond).sample
    print(json.dumps(out.flatten().tolist()))
''')


def _unet_out(unet):
    g = torch.Generator().manual_seed(5)
    x, cond = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 16, 32, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([500, 20]), encoder_hidden_states=cond).sample.flatten()


def test_lora_loads_in_diffusers_and_peft_in_a_fresh_process(tmp_path):
    pipe = tiny_pipeline(0)
    base = _unet_out(pipe.unet)
    L.add_lora(pipe.unet, 4, init="random", seed=11)
    ours = _unet_out(pipe.unet)
    assert (ours - base).abs().max() > 1e-3  # the adapter changes the output, so a lost adapter is seen
    folder = tmp_path / "lora"
    L.save_lora(pipe, str(folder))
    assert (folder / "adapter_config.json").exists() and (folder / L.WEIGHT_NAME).exists()
    script = tmp_path / "fresh.py"
    script.write_text(FRESH)
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for how in ("diffusers", "peft"):
        proc = subprocess.run([sys.executable, str(script), str(folder), how], capture_output=True, text=True,
                              timeout=240, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        theirs = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
        assert torch.allclose(theirs, ours, atol=1e-5), (how, (theirs - ours).abs().max())


def test_outputs_honour_the_umask(tmp_path):
    from cda_lite.checkpoint import atomic_save, atomic_write_json
    from cda_lite.sd.files import atomic_write_text

    pipe = tiny_pipeline(0)
    L.add_lora(pipe.unet, 2)
    old = os.umask(0o027)
    try:
        L.save_lora(pipe, str(tmp_path / "lora"))
        atomic_save({"a": 1}, str(tmp_path / "c.pt"))
        atomic_write_json({"a": 1}, str(tmp_path / "s.json"))
        atomic_write_text("a: 1\n", str(tmp_path / "config.yaml"))
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "lora") == 0o750
    for p in [tmp_path / "lora" / n for n in os.listdir(tmp_path / "lora")] + \
            [tmp_path / "c.pt", tmp_path / "s.json", tmp_path / "config.yaml"]:
        assert mode(p) == 0o640, (p, oct(mode(p)))


def _vpred_pipe(seed=0):
    from diffusers import StableDiffusionPipeline

    from cda_lite.sd.tiny import tiny_components
    comp = tiny_components(seed)
    comp["scheduler"] = type(comp["scheduler"]).from_config(comp["scheduler"].config, prediction_type="v_prediction",
                                                            set_alpha_to_one=True)
    pipe = StableDiffusionPipeline(**comp, safety_checker=None, feature_extractor=None, image_encoder=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_v_prediction_is_converted_to_eps_and_matches_diffusers():
    """A tiny v-prediction pipeline: one DDIM step of diffusers' own scheduler on the raw v equals the
    step on the converted ε, and our sampler on the converted model reproduces diffusers' pipeline
    (which reads prediction_type from its scheduler) end to end."""
    from cda_lite.sampling import sample
    from cda_lite.sd import sampling as S
    from cda_lite.sd.load import as_epsilon

    ref = _vpred_pipe()  # untouched: diffusers handles v itself
    ours = as_epsilon(_vpred_pipe())
    assert ours.scheduler.config.prediction_type == "epsilon" and ref.scheduler.config.prediction_type == "v_prediction"
    g = torch.Generator().manual_seed(3)
    x, cond = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 16, 32, generator=g)
    with torch.no_grad():
        for t in (999, 400, 10):
            v = ref.unet(x, t, encoder_hidden_states=cond).sample
            e = ours.unet(x, t, encoder_hidden_states=cond).sample
            assert not torch.allclose(v, e, atol=1e-3)  # the conversion did something
            ref.scheduler.set_timesteps(10)
            ours.scheduler.set_timesteps(10)
            a = ref.scheduler.step(v, t, x, eta=0.0).prev_sample
            b = ours.scheduler.step(e, t, x, eta=0.0).prev_sample
            assert torch.allclose(a, b, atol=1e-5), t
    prompts = ["a cat", "a dog"]
    eps = S.SDEps(ours.unet, 5.0).set_prompts(ours, prompts)
    x_T = S.initial_latents(ours, 2, 32, 32, torch.Generator().manual_seed(0))
    mine = sample(eps, S.schedule_of(ours), x_T.shape, steps=4, eta=0.0, x_T=x_T, spacing="trailing")
    theirs = ref(prompts, num_inference_steps=4, height=32, width=32, guidance_scale=5.0, latents=x_T.clone(),
                 eta=0.0, output_type="latent").images
    assert torch.allclose(mine, theirs, atol=1e-3), (mine - theirs).abs().max()
    # a v-prediction pipeline handed straight to the ε-model wrapper (no load_sd15) is converted too
    direct = _vpred_pipe()
    eps2 = S.SDEps(direct.unet, 5.0).set_prompts(direct, prompts)
    again = sample(eps2, S.schedule_of(direct), x_T.shape, steps=4, eta=0.0, x_T=x_T, spacing="trailing")
    assert torch.allclose(again, mine, atol=1e-5) and direct.scheduler.config.prediction_type == "epsilon"
    # and the ε-model is differentiable (training backpropagates through it)
    xg = x.clone().requires_grad_(True)
    ours.unet(xg, 500, encoder_hidden_states=cond).sample.sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_model_path_forms(tmp_path, monkeypatch):
    """--model-path: a single checkpoint file goes to from_single_file, a hub id to the hub (offline: the
    cache only), a folder is checked; each missing one fails at once naming what to do."""
    from cda_lite.sd.load import MissingWeightsError, resolve
    monkeypatch.delenv("CDA_SD_PATH", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"")
    assert resolve(str(f)) == (str(f), True)
    assert resolve("someone/some-model") == ("someone/some-model", True)
    with pytest.raises(MissingWeightsError, match="does not exist"):
        resolve(str(tmp_path / "gone.ckpt"))
    with pytest.raises(MissingWeightsError, match="lacks"):
        resolve(str(tmp_path))


def _to_ldm(pipe) -> dict:
    """The tiny pipeline's weights under the original Stable Diffusion (LDM) checkpoint names — UNet under
    ``model.diffusion_model.``, VAE under ``first_stage_model.``, text encoder under
    ``cond_stage_model.transformer.`` — the layout of a single-file SD 1.x checkpoint (written for this
    test from the published layout; diffusers converts it back)."""
    out, unet = {}, pipe.unet
    lpb = unet.config.layers_per_block
    res = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
    top = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
           "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
    keys = list(unet.state_dict())

    def resnet(rest):
        for a, c in res:
            rest = rest.replace(a, c)
        return rest

    def unet_key(k):
        p = k.split(".")
        for a, b in top.items():
            if k.startswith(a + "."):
                return b + k[len(a):]
        if p[0] in ("down_blocks", "up_blocks"):
            b, kind, down = int(p[1]), p[2], p[0] == "down_blocks"
            base = 1 + b * (lpb + 1) if down else b * (lpb + 1)
            name = "input_blocks" if down else "output_blocks"
            if kind == "downsamplers":
                return f"{name}.{base + lpb}.0.op.{p[-1]}"
            if kind == "upsamplers":
                attn = any(x.startswith(f"up_blocks.{b}.attentions.") for x in keys)
                return f"{name}.{base + lpb}.{2 if attn else 1}.conv.{p[-1]}"
            rest = ".".join(p[4:])
            return f"{name}.{base + int(p[3])}." + (f"0.{resnet(rest)}" if kind == "resnets" else f"1.{rest}")
        idx = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[f"{p[1]}.{p[2]}"]
        rest = ".".join(p[3:])
        return f"middle_block.{idx}.{resnet(rest) if p[1] == 'resnets' else rest}"

    for k, v in unet.state_dict().items():
        out["model.diffusion_model." + unet_key(k)] = v
    n_up = len(pipe.vae.config.up_block_types)
    attn = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]
    for k, v in pipe.vae.state_dict().items():
        p = k.split(".")
        key = k.replace("conv_norm_out", "norm_out")
        if p[1] in ("down_blocks", "up_blocks"):
            d = p[1] == "down_blocks"
            j, word = (p[2], "down") if d else (n_up - 1 - int(p[2]), "up")
            key = (f"{p[0]}.{word}.{j}.{'downsample' if d else 'upsample'}.conv.{p[-1]}" if p[3] in ("downsamplers", "upsamplers")
                   else f"{p[0]}.{word}.{j}.block.{p[4]}." + ".".join(p[5:]))
        elif p[1] == "mid_block":
            rest = ".".join(p[4:])
            if p[2] == "attentions":
                for a, c in attn:
                    rest = rest.replace(a, c)
                key = f"{p[0]}.mid.attn_1.{rest}"
            else:
                key = f"{p[0]}.mid.block_{int(p[3]) + 1}.{rest}"
        out["first_stage_model." + key.replace("conv_shortcut", "nin_shortcut")] = v
    for k, v in pipe.text_encoder.state_dict().items():
        out["cond_stage_model.transformer." + ("" if k.startswith("text_model.") else "text_model.") + k] = v
    return {k: v.contiguous() for k, v in out.items()}


def test_single_file_checkpoint_loads_and_trains(tmp_path, monkeypatch):
    """A single .safetensors checkpoint in the original SD layout (with a folder of configs, as offline
    use needs) loads through diffusers' from_single_file with every weight in place, and the CLI trains on it."""
    from safetensors.torch import save_file

    from cda_lite.sd.load import load_sd15
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = tiny_pipeline(0)
    configs = tmp_path / "configs"
    pipe.save_pretrained(str(configs))
    ckpt = tmp_path / "model.safetensors"
    save_file(_to_ldm(pipe), str(ckpt))
    loaded = load_sd15(str(ckpt), config=str(configs))
    for a, b in ((pipe.unet, loaded.unet), (pipe.vae, loaded.vae), (pipe.text_encoder, loaded.text_encoder)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), type(a).__name__
    assert loaded.scheduler.config.timestep_spacing == "trailing"
    from cda_lite.sd.__main__ import main
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"preset: fig3\nmodel_path: {ckpt}\nmodel_config: {configs}\nsteps: 1\nmicro_batch: 1\n"
                   "images_per_step: 1\nheight: 16\nwidth: 16\nsample_steps: 3\ngrad_steps: 2\ncheckpointing: false\n"
                   "tensorboard: false\nconstraints: [{reward: brightness, direction: '>=', level: 0.0}]\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "lora" / L.WEIGHT_NAME).exists()
