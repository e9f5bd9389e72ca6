"""Algorithm 1 on random 2-D problems with the *exact* ε of the base mixture as the pretrained model.

With no network error left, what remains between the learned λ and λ*(q) is the chain's
discretisation and the primal-dual run itself. Used to split the tilted-DSM primal step's error
(Chapter 4, *A primal step that fits the tilt*):

    PYTHONPATH=. python benchmarks/align2d_exact_base.py --seeds 13 14 --primal tilted_dsm

prints one JSON line per seed: the learned λ (rewards' units), λ*(q) and the relative error.
"""
import argparse
import json
import time

import torch

from cda_lite.bench import align2d
from cda_lite.exact.problems import random_alignment
from cda_lite.models import ExactEps, MLPEps
from cda_lite.pretrained import default_schedule
from cda_lite.runner import run_alignment
from cda_lite.sampling import sample


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--primal", choices=("pathwise", "tilted_dsm"), default="tilted_dsm")
    args = p.parse_args()
    torch.set_num_threads(1)
    schedule = default_schedule()
    for seed in args.seeds:
        problem = random_alignment(seed)
        cfg = align2d.default_config("fast", dual_precondition=True, seed=seed, primal=args.primal)
        base = ExactEps(problem.base, schedule)
        x_pre = sample(base, schedule, (4096, 2), steps=cfg.sample_steps, eta=cfg.eta, seed=seed + 1).double()
        t0 = time.time()
        run = run_alignment(base, schedule, problem.rewards, problem.thresholds, cfg, (2,), x_pre,
                            correction=MLPEps(schedule.T, 2, 64, 2))
        lam, star = run.trainer.lam_raw(), align2d.check_feasible(problem).lam
        print(json.dumps({"seed": seed, "primal": args.primal, "lam_learned": lam.tolist(), "lam_exact": star.tolist(),
                          "error": align2d.relative_error(lam, star), "seconds": round(time.time() - t0, 1)}),
              flush=True)


if __name__ == "__main__":
    main()
