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
