"""Data-parallel constrained training over several processes (GPUs, or CPU processes for tests),
launched by ``accelerate launch`` or ``torchrun``; the single-process loop of :mod:`cda_lite.sd.train`
and :class:`cda_lite.align.PrimalDualTrainer` run unchanged in every process.

    accelerate launch --multi_gpu --num_processes 4 -m cda_lite.sd train --preset fig3 --out runs/fig3
    torchrun --nproc_per_node 2 -m cda_lite.sd train --preset fig3 --tiny --out runs/tiny   # CPU processes

(``accelerate launch --cpu`` starts one process only; its multi-GPU launcher is torchrun, which also
spawns CPU processes.) Each process draws its own images; three things are synchronised so that all
processes hold the same LoRA weights and the same λ at every step — the run is then the single-process
run on a batch ``world_size`` times larger:

1. **gradients**: after every backward pass, one all-reduce averages the LoRA gradients (queued at the
   end of the pass, as DistributedDataParallel does, so every process issues its collectives in the
   same order whatever its random truncation K);
2. **constraint values**: each reward's batch mean is replaced by the mean over all processes (a
   detached shift of the per-image values: the gradient is the local one, averaged by 1.), so the dual
   step uses the global Ê r_i and λ stays identical everywhere;
3. **initial weights**: the LoRA weights are broadcast from process 0.

Process r draws micro-batch j of step k with a generator seeded from (seed, r, k, j), so a resumed run
continues as it would have. Only process 0 writes logs and checkpoints. Chapter 10.
"""
from __future__ import annotations

import os

import torch

SEED_STRIDE = (1_000_003, 7_919, 104_729)


def world_size() -> int:
    """Number of processes of this launch (``WORLD_SIZE`` set by torchrun / accelerate; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(device=None) -> tuple[int, int]:
    """Join the process group (gloo on CPU, nccl on CUDA) from the launcher's environment; (rank, world)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if (device is not None and str(device).startswith("cuda")) else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
    return dist.get_rank(), dist.get_world_size()


def _all_mean(t: torch.Tensor, world: int) -> torch.Tensor:
    import torch.distributed as dist

    t = t.detach().clone()
    dist.all_reduce(t)
    return t / world


class GradientSync:
    """Average the gradients of ``params`` over the processes once at the end of every backward pass."""

    def __init__(self, params, world: int):
        self.params, self.world, self._queued, self.calls = list(params), int(world), False, 0
        for p in self.params:
            p.register_post_accumulate_grad_hook(self._hook)

    def _hook(self, _p):
        if not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._sync)

    def _sync(self):
        self._queued = False
        self.calls += 1
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = _all_mean(torch.cat([g.reshape(-1) for g in grads]), self.world)
        i = 0
        for p in self.params:
            n = p.numel()
            p.grad = flat[i:i + n].view_as(p).to(p.dtype).clone()
            i += n


class GlobalMean:
    """Wrap a reward so that its batch mean is the mean over all processes (detached shift)."""

    def __init__(self, reward, world: int):
        self.reward, self.world, self.local_means = reward, int(world), []

    def __call__(self, x, *args):
        r = self.reward(x, *args)
        local = r.detach().mean()
        self.local_means.append(float(local))
        return r + (_all_mean(local, self.world) - local)


def setup(trainer, rank: int, world: int, seed: int) -> dict:
    """Make ``trainer`` data-parallel (see the module docstring); returns the installed pieces."""
    import torch.distributed as dist

    with torch.no_grad():
        for p in trainer.params:
            dist.broadcast(p.data, src=0)
    sync = GradientSync(trainer.params, world)
    means = []
    for c in trainer.constraints:
        c.reward = GlobalMean(c.reward, world)
        means.append(c.reward)
    inner = trainer.sample_batch
    counter = {"step": -1, "j": 0}

    def sample_batch(_generator):
        if counter["step"] != trainer.step:
            counter.update(step=trainer.step, j=0)
        g = torch.Generator().manual_seed(int(seed) + SEED_STRIDE[0] * rank + SEED_STRIDE[1] * trainer.step
                                          + SEED_STRIDE[2] * counter["j"])
        counter["j"] += 1
        x0, kl = inner(g)
        if kl is not None:
            local = kl.detach().mean()
            kl = kl + (_all_mean(local, world) - local)
        return x0, kl

    trainer.sample_batch = sample_batch
    return {"gradients": sync, "rewards": means}


def run_distributed(pipe, preset, out: str, resume: bool = True, progress: bool = True, device=None,
                    max_steps: int | None = None, **run_kwargs) -> dict:
    """:func:`cda_lite.sd.train.run` in every process of the launch, synchronised by :func:`setup`;
    process 0 writes ``out``. The summary gains ``world_size`` and (every process) ``sync``.
    ``run_kwargs`` go to ``run`` (``force_resume``, ``model_id``)."""
    import torch.distributed as dist

    from cda_lite.sd.train import run

    rank, world = init(device)
    pieces = {}

    def _setup(trainer):
        pieces.update(setup(trainer, rank, world, preset.seed))

    try:
        summary = run(pipe, preset, out, resume=resume, progress=progress and rank == 0, device=device,
                      max_steps=max_steps, setup=_setup, main=rank == 0, **run_kwargs)
    finally:
        dist.barrier()
    summary.update(world_size=world, rank=rank, sync=pieces)
    return summary
