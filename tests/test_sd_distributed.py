"""Two CPU processes launched by ``accelerate launch --cpu --num_processes 2`` (accelerate starts one; the
run starts the second through torch's launcher) train the tiny fig3 preset for 2 steps of 4 accumulated
micro-batches (DDP through ``accelerate``): the processes draw different images, yet end with identical LoRA weights
and multipliers, the logged Ê r_i is the mean over both processes' images, and λ follows projected
dual ascent on those global means. About 30–60 s (two interpreters import torch + diffusers)."""
import json
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

WORKER = textwrap.dedent('''
    import json, os, sys
    from cda_lite.sd.distributed import make_accelerator
    out = sys.argv[1]
    acc = make_accelerator(out)  # `accelerate launch --cpu` started one process: this starts the two
    from dataclasses import replace
    import torch
    torch.set_num_threads(1)
    from cda_lite.sd import presets as P
    from cda_lite.sd.distributed import run_accelerated
    from cda_lite.sd.tiny import tiny_pipeline
    p = replace(P.get_preset("fig3", tiny=True), steps=2, images_per_step=4, micro_batch=1, height=16, width=16,
                sample_steps=3, grad_steps=2, random_truncation=True, checkpoint_every=0)
    s = run_accelerated(tiny_pipeline(), p, out, acc=acc, progress=False)
    tr = s["trainer"]
    json.dump({"rank": s["rank"], "world": s["world_size"], "lam": [h["lam"] for h in tr.log],
               "expected": [h["expected"] for h in tr.log], "dual_lr": p.dual_lr, "lam_init": p.lam_init,
               "grad_accum": p.grad_accum, "levels": [c.level for c in tr.constraints],
               "signs": [c.sign for c in tr.constraints],
               "local_means": [m.local_means for m in s["sync"]["rewards"]],
               "synced": s["sync"]["counter"]["synced"],
               "params": torch.cat([q.detach().reshape(-1) for q in tr.params]).tolist()},
              open(os.path.join(out, "rank%d.json" % s["rank"]), "w"))
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_in_lockstep(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(script), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert a["world"] == b["world"] == 2
    assert (out / "log.csv").exists() and (out / "lora").is_dir()  # written by process 0 only
    steps, accum = len(a["lam"]), a["grad_accum"]
    assert steps == 2 and accum == 4 and a["synced"] == b["synced"] == steps  # DDP syncs the last micro-batch only
    la, lb = np.array(a["local_means"]), np.array(b["local_means"])  # (constraints, steps·accum) raw rewards
    assert not np.allclose(la, lb)  # the processes drew different images
    assert np.array_equal(a["params"], b["params"]) and np.abs(a["params"]).max() > 0
    assert np.allclose(a["lam"], b["lam"]) and np.allclose(a["expected"], b["expected"])
    # Ê r_i logged = mean over both processes' micro-batches (in σ units where Table 7 has the reward)
    from cda_lite.sd.registry import normalizer
    from cda_lite.sd.presets import get_preset
    names = [c.reward for c in get_preset("fig3", tiny=True).constraints]
    lam = np.full(3, a["lam_init"])
    for k in range(steps):
        raw = (la[:, k * accum:(k + 1) * accum].mean(1) + lb[:, k * accum:(k + 1) * accum].mean(1)) / 2
        norm = np.array([normalizer(n)(v) if normalizer(n) else v for n, v in zip(names, raw)])
        assert np.allclose(a["expected"][k], norm, rtol=1e-5, atol=1e-5)
        slack = np.array(a["signs"]) * (norm - np.array(a["levels"]))
        W = get_preset("fig3", tiny=True).dual_warmup  # the dual step ramps up over W dual steps
        ramp = min(1.0, (k + 1) / W) if W else 1.0
        lam = np.maximum(lam - a["dual_lr"] * ramp * slack, 0.0)  # projected ascent (νPI with κ_p = 0)
        assert np.allclose(a["lam"][k], lam, rtol=1e-5, atol=1e-6)
