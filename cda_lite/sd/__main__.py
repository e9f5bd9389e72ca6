"""``python -m cda_lite.sd train --preset fig3 [--tiny] --out DIR``,
``python -m cda_lite.sd compose --preset fig5 [--tiny] [--adapters DIR ...] --out DIR`` and
``python -m cda_lite.sd sample --preset das|blend [--tiny] [--adapters DIR ...] --out DIR``;
multi-process training: ``accelerate launch --num_processes N -m cda_lite.sd train ...``;
``python -m cda_lite.sd presets`` lists the presets with their derived numbers."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace


def _pipe(args, model_id=None):
    if args.tiny:
        from cda_lite.sd.tiny import tiny_pipeline
        return tiny_pipeline(args.seed), None
    import torch

    from cda_lite.sd.load import load_sd15
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per process of a multi-process launch
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    kw = {"model_id": model_id} if model_id else {}  # the preset's base model (SD 1.4 for Tables 1/4)
    return load_sd15(args.model_path, device=device, **kw), device


def _concepts_parser(sub):
    """``concepts``: Tables 1/4's min-CLIP / min-BLIP over the preset's random prompt sets (sd/concepts.py)."""
    c = sub.add_parser("concepts", help="Tables 1/4: min CLIP / min BLIP of combined prompt, equal, constrained")
    c.add_argument("--preset", required=True, choices=["table1", "table4"])
    c.add_argument("--tiny", action="store_true", help="tiny random pipeline and scorers on CPU")
    c.add_argument("--sets", type=int, default=None, help="number of random prompt sets (default: the preset's 50)")
    c.add_argument("--images", type=int, default=4, help="images per method and set")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--model-path", default=None, help="local SD folder (else the preset's model_id from the hub)")
    c.add_argument("--out", required=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cda_lite.sd", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("train", "compose", "sample"):
        s = sub.add_parser(name)
        s.add_argument("--preset", required=True)
        s.add_argument("--tiny", action="store_true", help="tiny random pipeline on CPU")
        s.add_argument("--out", required=True)
        s.add_argument("--model-path", default=None, help="local SD 1.5 folder (else $CDA_SD_PATH or the hub)")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--steps", type=int, default=None, help="override the preset's step count")
    t = sub.choices["train"]
    t.add_argument("--baseline", action="store_true", help="λ frozen at lam_init (weighted objective)")
    t.add_argument("--reward", default=None, help="table2: the single reward of the adapter")
    t.add_argument("--no-resume", action="store_true")
    sub.choices["compose"].add_argument("--adapters", nargs="*", default=None)
    sub.choices["sample"].add_argument("--adapters", nargs="*", default=None)
    sub.add_parser("presets")
    _concepts_parser(sub)
    args = ap.parse_args(argv)
    if args.cmd == "concepts":
        from cda_lite.sd.concepts import cli
        print(json.dumps(cli(args)["mean_min"], indent=1))
        return 0

    from cda_lite.sd import presets as P
    if args.cmd == "presets":
        for n in P.names():
            print(P.describe(P.get_preset(n)))
        return 0
    p = P.get_preset(args.preset, tiny=args.tiny)
    p = replace(p, seed=args.seed)
    print(P.describe(p))
    if args.cmd == "train":
        if not isinstance(p, P.AlignPreset):
            raise SystemExit(f"--preset {args.preset} is a composition preset; use `compose`")
        if args.steps:
            p = replace(p, steps=args.steps)
        if args.baseline:
            p = replace(p, fixed_weights=True)
        if args.reward:
            c = p.constraints[0]
            p = replace(p, constraints=[P.ConstraintSpec(args.reward, c.direction, c.level)])
        from cda_lite.sd.distributed import world_size
        pipe, device = _pipe(args, getattr(p, "model_id", None))
        if world_size() > 1:  # launched by `accelerate launch` / torchrun with several processes
            from cda_lite.sd.distributed import run_distributed
            s = run_distributed(pipe, p, args.out, resume=not args.no_resume, progress=True, device=device)
        else:
            from cda_lite.sd.train import run
            s = run(pipe, p, args.out, resume=not args.no_resume, progress=True, device=device)
        s.pop("trainer")
    elif args.cmd == "sample":
        if not isinstance(p, P.InferencePreset):
            raise SystemExit(f"--preset {args.preset} is not an inference preset (das, blend)")
        if args.steps:
            p = replace(p, steps=args.steps)
        import torch

        from cda_lite.checkpoint import atomic_write_json
        from cda_lite.sd.inference import run as run_inference
        pipe, device = _pipe(args, getattr(p, "model_id", None))
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
            raise SystemExit(f"--preset {args.preset} is an alignment preset; use `train`")
        if args.steps:
            p = replace(p, dual_steps=args.steps)
        from cda_lite.checkpoint import atomic_write_json
        from cda_lite.sd.compose import make_experts, run
        pipe, device = _pipe(args, getattr(p, "model_id", None))
        res = run(pipe, make_experts(pipe, p, args.adapters, args.seed), p, progress=True, device=device)
        s = {"preset": p.name, "experts": res.extra["names"], "lam": res.lam.tolist(),
             "kl_at_lam": res.extra["kls"].tolist(), "lam_history": res.lam_history.tolist(),
             "kl_history": res.values_history.tolist(), "published": p.published}
        os.makedirs(args.out, exist_ok=True)
        atomic_write_json(s, os.path.join(args.out, "summary.json"))
        if res.extra["images"] is not None:
            import torch
            torch.save(res.extra["images"], os.path.join(args.out, "images.pt"))
    print(json.dumps(s, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
