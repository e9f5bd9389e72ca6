"""Training runs on ``accelerate``: one process or data-parallel over several (GPUs, or CPU processes),
mixed precision, TensorBoard logs and validation images. The single-process loop of
:mod:`cda_lite.sd.train` and :class:`cda_lite.align.PrimalDualTrainer` runs unchanged in every process.

    accelerate launch --num_processes 4 -m cda_lite.sd train --config run.yaml --out runs/x    # 4 GPUs
    accelerate launch --num_processes 2 --cpu -m cda_lite.sd train --preset fig3 --tiny --out runs/tiny

(``accelerate launch --cpu`` itself starts one process; :func:`ensure_processes` then starts the
requested number through torch's launcher, and a request that would silently yield one process on a
GPU machine is an error.) Each process draws its own images; so that all hold the same LoRA weights and
the same λ after every step — the run is the single-process run on a batch ``world_size`` times larger:

1. **gradients**: the micro-batch (sampling the chain, decoding) is the forward pass of a module that
   ``Accelerator.prepare`` wraps in DistributedDataParallel, which averages the LoRA gradients in the
   backward pass (``no_sync`` on all but the last micro-batch of a step: gradient accumulation) and
   broadcasts process 0's initial weights;
2. **constraint values and KL**: each batch mean is replaced by the mean over all processes
   (``Accelerator.reduce``; a detached shift of the per-image values: the gradient stays local and DDP
   averages it), so the dual step sees the global Ê r_i and λ stays identical everywhere.

Process r draws micro-batch j of step k from a generator seeded by (seed, r, k, j), so a resumed run
continues as it would have. Only process 0 prints and writes. Chapter 10.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import torch

SEED_STRIDE = (1_000_003, 7_919, 104_729)


def world_size() -> int:
    """Number of processes of this launch (``WORLD_SIZE`` set by torchrun / accelerate; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def requested_processes() -> int | None:
    """``--num_processes`` of the ``accelerate launch`` that started this process (None if none did)."""
    try:
        import psutil

        cmd = psutil.Process(os.getppid()).cmdline()
    except Exception:  # no psutil, no /proc: nothing to compare
        return None
    if not any("accelerate" in c for c in cmd[:4]):
        return None
    end = next((i for i, c in enumerate(cmd) if i > 1 and (c in ("-m", "--module") or c.endswith(".py"))), len(cmd))
    cmd = cmd[:end]  # the launcher's own options, not the training script's
    for i, c in enumerate(cmd):
        if c in ("--num_processes", "--num-processes") and i + 1 < len(cmd):
            return int(cmd[i + 1])
        m = re.fullmatch(r"--num[_-]processes=(\d+)", c)
        if m:
            return int(m.group(1))
    return None


def ensure_processes() -> None:
    """If ``accelerate launch --num_processes N`` (N > 1) started only this process: on CPU, re-run the
    same command as N processes (torch's launcher; exits with its status); otherwise raise ValueError
    rather than train silently in one process."""
    n = requested_processes()
    if n is None or n <= 1 or world_size() > 1:
        return
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") or not torch.cuda.is_available()
    if not cpu:
        raise ValueError(f"accelerate launch asked for {n} processes but started one; pass --multi_gpu "
                           f"(or run `accelerate config`) so that it starts {n}")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    target = ["-m", spec.name.removesuffix(".__main__")] if spec is not None and spec.name else [sys.argv[0]]
    env = dict(os.environ, ACCELERATE_USE_CPU="True")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port", str(port),
           *target, *sys.argv[1:]]
    sys.exit(subprocess.call(cmd, env=env))


def make_accelerator(out: str | None = None, mixed_precision: str = "no", tensorboard: bool = True):
    """An ``accelerate.Accelerator`` for one run (after :func:`ensure_processes`): TensorBoard tracker in
    ``out/tensorboard``, TF32 matmuls on Ampere or newer GPUs."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    if mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {mixed_precision!r}")
    ensure_processes()
    from accelerate.state import AcceleratorState
    if AcceleratorState._shared_state and world_size() == 1:  # a second run in one process (notebook, tests)
        AcceleratorState._reset_state()  # may change mixed precision; a single process has no group to keep
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") or not torch.cuda.is_available()
    acc = Accelerator(cpu=cpu, mixed_precision=mixed_precision, log_with="tensorboard" if tensorboard and out else None,
                      project_config=ProjectConfiguration(project_dir=out, logging_dir=out) if out else None)
    if acc.device.type == "cuda" and torch.cuda.get_device_capability(acc.device)[0] >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return acc


def half_base(pipe, mixed_precision: str) -> None:
    """Frozen base modules in fp16/bf16 (the LoRA added later stays fp32). fp16 runs without loss
    scaling (the LoRA's gradients are fp32, activations fp16): prefer bf16 where the GPU has it."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision)
    if dtype is not None:
        for m in (pipe.unet, pipe.vae, pipe.text_encoder):
            m.to(dtype)


class _MicroBatch(torch.nn.Module):
    """One micro-batch (chain + decode) as a forward pass, so that DDP sees the UNet's LoRA parameters."""

    def __init__(self, unet, fn):
        super().__init__()
        self.unet, self.fn = unet, fn

    def forward(self, seed):
        return self.fn(int(seed))


class GlobalMean:
    """Wrap a reward so that its batch mean is the mean over all processes (detached shift)."""

    def __init__(self, reward, acc):
        self.reward, self.acc, self.local_means = reward, acc, []

    def __call__(self, x, *args):
        r = self.reward(x, *args)
        local = r.detach().mean()
        self.local_means.append(float(local))
        return r + (self.acc.reduce(local.clone(), "mean") - local)


def setup(trainer, pipe, acc, seed: int) -> dict:
    """Make ``trainer`` data-parallel (see the module docstring); returns the installed pieces."""
    inner, accum, rank = trainer.sample_batch, int(trainer.config.grad_accum), acc.process_index
    means = []
    for c in trainer.constraints:
        c.reward = GlobalMean(c.reward, acc)
        means.append(c.reward)

    def draw(s):
        return inner(torch.Generator().manual_seed(s))

    model = acc.prepare_model(_MicroBatch(pipe.unet, draw))
    counter = {"step": -1, "j": 0, "synced": 0}

    def sample_batch(_generator):
        if counter["step"] != trainer.step:
            counter.update(step=trainer.step, j=0)
        j = counter["j"]
        counter["j"] += 1
        s = int(seed) + SEED_STRIDE[0] * rank + SEED_STRIDE[1] * trainer.step + SEED_STRIDE[2] * j
        if j < accum - 1:
            with acc.no_sync(model):
                x0, kl = model(s)
        else:
            counter["synced"] += 1
            x0, kl = model(s)
        if kl is not None:
            local = kl.detach().mean()
            kl = kl + (acc.reduce(local.clone(), "mean") - local)
        return x0, kl

    trainer.sample_batch = sample_batch
    return {"model": model, "rewards": means, "counter": counter}


def _tag(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)


def step_scalars(trainer) -> dict:
    """The TensorBoard scalars of the last step: λ, each reward's Ê against its level, KL, loss."""
    h = trainer.log[-1]
    out = {"loss": h["loss"], "kl": h["kl"]}
    for c, e, lam in zip(trainer.constraints, h["expected"], h["lam"]):
        t = _tag(c.name)
        out[f"lambda/{t}"] = lam
        out[f"reward/{t}"] = e
        out[f"level/{t}"] = c.level
    return out


@torch.no_grad()
def validation_grid(pipe, p, device=None) -> np.ndarray:
    """Images of the adapted model on fixed prompts (rows) and seeds (columns): an (H, W, 3) uint8 grid."""
    from cda_lite.differentiable import sample_differentiable
    from cda_lite.sd import sampling as S

    prompts = list(getattr(p, "validation_prompts", None) or p.eval_prompts[:4])
    seeds = list(getattr(p, "validation_seeds", None) or [0])
    chain = S.make_chain(pipe, p.sample_steps, p.eta)
    rows = []
    for pr in prompts:
        eps = S.SDEps(pipe.unet, p.guidance).set_prompts(pipe, [pr] * len(seeds))
        x_T = torch.cat([S.initial_latents(pipe, 1, p.height, p.width, torch.Generator().manual_seed(int(s)),
                                           device=device) for s in seeds])
        gen = torch.Generator().manual_seed(int(seeds[0]))
        img = S.decode(pipe, sample_differentiable(eps, chain, x_T, generator=gen).x0).float().cpu()
        rows.append(torch.cat(list(img), dim=2))  # (3, H, W·seeds)
    grid = torch.cat(rows, dim=1)
    return (grid.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def save_png(grid: np.ndarray, path: str) -> None:
    import io

    from PIL import Image

    from cda_lite.sd.files import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    atomic_write_bytes(buf.getvalue(), path)


def run_accelerated(pipe, p, out: str, acc=None, resume: bool = True, progress: bool = True,
                    max_steps: int | None = None, **run_kwargs) -> dict:
    """:func:`cda_lite.sd.train.run` under ``acc`` (made from ``p`` when None): data-parallel when the
    launch has several processes; process 0 writes ``out`` (logs, checkpoints, config.yaml), TensorBoard
    scalars every step and validation grids (``out/samples/step_NNNNNN.png`` and TensorBoard) every
    ``p.validate_every`` steps and at the end. The summary gains ``world_size``, ``rank`` and ``sync``.
    ``run_kwargs`` go to :func:`~cda_lite.sd.train.run` (``force_resume``, ``model_id``)."""
    from cda_lite.sd.train import run

    mp = getattr(p, "mixed_precision", "no")
    if acc is None:
        acc = make_accelerator(out, mp, getattr(p, "tensorboard", True))
    main, world, device = acc.is_main_process, acc.num_processes, acc.device
    half_base(pipe, mp)  # before the LoRA is added: it stays fp32
    every = int(getattr(p, "validate_every", 0) or 0)
    tb = None
    if main and acc.log_with:
        acc.init_trackers("tensorboard")
        tb = acc.get_tracker("tensorboard", unwrap=True)
    pieces, layout = {}, []

    def _setup(trainer):
        if world > 1:
            pieces.update(setup(trainer, pipe, acc, p.seed))

    def validate(step):
        grid = validation_grid(pipe, p, device=device)
        save_png(grid, os.path.join(out, "samples", f"step_{step:06d}.png"))
        if tb is not None:
            tb.add_image("validation", grid, step, dataformats="HWC")

    def on_step(trainer):
        if main and tb is not None:
            if not layout:  # one chart per constraint: its batch mean against its level
                tb.add_custom_scalars({"constraints": {
                    c.name: ["Multiline", [f"reward/{_tag(c.name)}", f"level/{_tag(c.name)}"]]
                    for c in trainer.constraints}})
                layout.append(True)
            acc.log(step_scalars(trainer), step=trainer.step)
        if main and every and trainer.step % every == 0 and trainer.step < p.steps:
            validate(trainer.step)

    try:
        with acc.autocast():
            summary = run(pipe, p, out, resume=resume, progress=progress and main, device=device,
                          max_steps=max_steps, setup=_setup, main=main, on_step=on_step, **run_kwargs)
        if main:
            validate(summary["step"])
    finally:
        acc.wait_for_everyone()
        if tb is not None:
            tb.flush()
        acc.end_training()
    summary.update(world_size=world, rank=acc.process_index, sync=pieces)
    return summary


def run_distributed(pipe, preset, out: str, resume: bool = True, progress: bool = True, device=None,
                    max_steps: int | None = None, **run_kwargs) -> dict:
    """Kept name: :func:`run_accelerated` (``device`` is the accelerator's; ``run_kwargs`` go to
    :func:`cda_lite.sd.train.run`: ``force_resume``, ``model_id``)."""
    return run_accelerated(pipe, preset, out, resume=resume, progress=progress, max_steps=max_steps, **run_kwargs)
