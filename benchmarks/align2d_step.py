"""Seconds per primal step of the 2-D Algorithm 1 preset against a FLOP bound (issue 12).

Counts the floating-point operations of one primal step (forward + backward through the 100-step
chain, batch 128) with ``torch.utils.flop_counter.FlopCounterMode`` and divides by this core's
measured single-thread matmul throughput: the bound is the time the step would take if it ran at
matmul speed with no per-call overhead. Usage: ``PYTHONPATH=. python benchmarks/align2d_step.py``.
"""
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from cda_lite.bench.align2d import default_config
from cda_lite.constraints import Constraint, RewardNormalizer
from cda_lite.align import finetune
from cda_lite.models import MLPEps
from cda_lite.pretrained import default_schedule
from cda_lite.exact.problems import random_alignment

torch.set_num_threads(1)
problem = random_alignment(0)
schedule = default_schedule()
base = MLPEps(schedule.T, dim=2, hidden=128, layers=3).eval()  # untrained weights cost the same FLOPs
cons = [Constraint(f"r{i}", r, 0.5, ">=", RewardNormalizer(0.0, 1.0)) for i, r in enumerate(problem.rewards)]
cfg = default_config("fast", steps=40)
trainer, _ = finetune(base, cons, schedule, cfg, (2,), correction=MLPEps(schedule.T, dim=2, hidden=64, layers=2))
steps = trainer.run()
next(steps)  # warm-up
with FlopCounterMode(display=False) as fc:
    next(steps)
flops = fc.get_total_flops()
t0 = time.perf_counter()
n = 0
for _ in range(20):
    next(steps)
    n += 1
per_step = (time.perf_counter() - t0) / n
a, b = torch.randn(512, 512), torch.randn(512, 512)
for _ in range(3):
    a @ b
t0 = time.perf_counter()
for _ in range(50):
    a @ b
peak = 50 * 2 * 512**3 / (time.perf_counter() - t0)
print(f"one primal step: {flops / 1e9:.2f} GFLOP (matmuls, fwd+bwd), {per_step * 1e3:.0f} ms measured; "
      f"matmul throughput {peak / 1e9:.1f} GFLOP/s -> bound {flops / peak * 1e3:.0f} ms; ratio {per_step * peak / flops:.1f}")
