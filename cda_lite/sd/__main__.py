"""``python -m cda_lite.sd train --preset fig3 [--tiny] --out DIR``,
``python -m cda_lite.sd compose --preset fig5 [--tiny] [--adapters DIR ...] --out DIR`` and
``python -m cda_lite.sd sample --preset das|blend [--tiny] [--adapters DIR ...] --out DIR``;
multi-process training: ``accelerate launch --num_processes N -m cda_lite.sd train ...``;
``python -m cda_lite.sd presets`` lists the presets with their derived numbers.

``train`` resumes ``OUT/checkpoint.pt`` when it exists, and refuses one written under another preset,
seed, baseline, constraints or model (``--fresh`` starts afresh, ``--force-resume`` continues anyway).
User errors (unknown preset or reward, a missing folder, an unwritable ``--out``, missing weights) are
one line on stderr and exit status 2, before any pipeline is built; ``--debug`` shows tracebacks."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import replace

from cda_lite._cli import Parser, UserError, count, entry_point, existing_dir, writable_dir


def _pipe(args):
    if args.tiny:
        from cda_lite.sd.tiny import tiny_pipeline
        return tiny_pipeline(args.seed), None
    import torch

    from cda_lite.sd.load import load_sd15
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per process of a multi-process launch
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return load_sd15(args.model_path, device=device), device


def _model_id(args) -> str:
    """What identifies the base model of a run (recorded in its checkpoints)."""
    from cda_lite.sd.load import DEFAULT_MODEL, ENV_PATH
    if args.tiny:
        return "tiny"
    path = args.model_path or os.environ.get(ENV_PATH)
    return os.path.abspath(path) if path else DEFAULT_MODEL


def _check_inputs(args) -> None:
    """Everything a user typed, checked before a pipeline is built."""
    writable_dir(args.out)
    if not args.tiny and (args.model_path or os.environ.get("CDA_SD_PATH")):
        from cda_lite.sd.load import check_folder
        check_folder(args.model_path or os.environ["CDA_SD_PATH"])  # MissingWeightsError: one line, exit 2
    if getattr(args, "reward", None):
        from cda_lite.sd.rewards import known
        if args.reward not in known():
            raise UserError(f"--reward: unknown reward {args.reward!r}; known: {', '.join(known())}")


@entry_point("python -m cda_lite.sd")
def main(argv=None) -> int:
    ap = Parser(prog="python -m cda_lite.sd", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("train", "compose", "sample"):
        s = sub.add_parser(name)
        s.add_argument("--preset", required=True)
        s.add_argument("--tiny", action="store_true", help="tiny random pipeline on CPU")
        s.add_argument("--out", required=True)
        s.add_argument("--model-path", default=None, help="local SD 1.5 folder (else $CDA_SD_PATH or the hub)")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--steps", type=count, default=None, help="override the preset's step count (≥ 1)")
    t = sub.choices["train"]
    t.add_argument("--baseline", action="store_true", help="λ frozen at lam_init (weighted objective)")
    t.add_argument("--reward", default=None, help="table2: the single reward of the adapter")
    t.add_argument("--fresh", "--no-resume", dest="fresh", action="store_true",
                   help="start afresh, ignoring (and then replacing) a checkpoint in --out")
    t.add_argument("--force-resume", action="store_true",
                   help="resume a checkpoint even if it was written under another configuration")
    sub.choices["compose"].add_argument("--adapters", nargs="*", default=None, type=existing_dir)
    sub.choices["sample"].add_argument("--adapters", nargs="*", default=None, type=existing_dir)
    sub.add_parser("presets")
    args = ap.parse_args(argv)

    from cda_lite.sd import presets as P
    if args.cmd == "presets":
        for n in P.names():
            print(P.describe(P.get_preset(n)))
        return 0
    _check_inputs(args)
    p = P.get_preset(args.preset, tiny=args.tiny)
    p = replace(p, seed=args.seed)
    if args.cmd == "train":
        if not isinstance(p, P.AlignPreset):
            raise UserError(f"--preset {args.preset} is not an alignment preset; use `compose` or `sample`")
        if args.steps:
            p = replace(p, steps=args.steps)
        if args.baseline:
            p = replace(p, fixed_weights=True)
        if args.reward:
            c = p.constraints[0]
            p = replace(p, constraints=[P.ConstraintSpec(args.reward, c.direction, c.level)])
        print(P.describe(p))  # also checks the derived numbers
        from cda_lite.sd.train import check_resume
        if not args.fresh:  # refuse another configuration before building anything
            check_resume(args.out, p, _model_id(args), force=args.force_resume)
        from cda_lite.sd.distributed import world_size
        pipe, device = _pipe(args)
        if world_size() > 1:  # launched by `accelerate launch` / torchrun with several processes
            from cda_lite.sd.distributed import run_distributed
            s = run_distributed(pipe, p, args.out, resume=not args.fresh, progress=True, device=device,
                                force_resume=args.force_resume, model_id=_model_id(args))
        else:
            from cda_lite.sd.train import run
            s = run(pipe, p, args.out, resume=not args.fresh, progress=True, device=device,
                    force_resume=args.force_resume, model_id=_model_id(args))
        s.pop("trainer")
    elif args.cmd == "sample":
        if not isinstance(p, P.InferencePreset):
            raise UserError(f"--preset {args.preset} is not an inference preset (das, blend)")
        if args.steps:
            p = replace(p, steps=args.steps)
        print(P.describe(p))
        import torch

        from cda_lite.checkpoint import atomic_write_json
        from cda_lite.sd.inference import run as run_inference
        pipe, device = _pipe(args)
        res = run_inference(pipe, p, args.adapters, progress=True)
        s = {"preset": p.name, "method": p.method, "prompts": res.prompts, "published": p.published}
        if res.smc is not None:
            s["ess"] = res.smc.ess.tolist()
            s["resamples"] = res.smc.n_resamples.tolist()
        os.makedirs(args.out, exist_ok=True)
        atomic_write_json(s, os.path.join(args.out, "summary.json"))
        torch.save(res.images, os.path.join(args.out, "images.pt"))
    else:
        if not isinstance(p, P.ComposePreset):
            raise UserError(f"--preset {args.preset} is not a composition preset; use `train` or `sample`")
        if args.steps:
            p = replace(p, dual_steps=args.steps)
        print(P.describe(p))
        from cda_lite.checkpoint import atomic_write_json
        from cda_lite.sd.compose import make_experts, run
        pipe, device = _pipe(args)
        res = run(pipe, make_experts(pipe, p, args.adapters, args.seed), p, progress=True, device=device)
        s = {"preset": p.name, "experts": res.names, "lam": res.lam.tolist(), "history": res.history,
             "published": p.published}
        os.makedirs(args.out, exist_ok=True)
        atomic_write_json(s, os.path.join(args.out, "summary.json"))
        if res.images is not None:
            import torch
            torch.save(res.images, os.path.join(args.out, "images.pt"))
    print(json.dumps(s, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
