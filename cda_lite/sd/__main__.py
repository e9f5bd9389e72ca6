"""Stable Diffusion rung from the command line.

  python -m cda_lite.sd train --config run.yaml [--set key=value ...] --out DIR
  python -m cda_lite.sd train --preset fig3 [--tiny] [--steps N] [--reward NAME|module:function] --out DIR
  python -m cda_lite.sd compose --preset fig5 [--tiny] [--adapters DIR ...] --out DIR
  python -m cda_lite.sd sample --preset das|blend [--tiny] [--adapters DIR ...] --out DIR
  python -m cda_lite.sd plot DIR              # training curves of a run → DIR/curves.png
  python -m cda_lite.sd presets               # the presets with their derived numbers

Several processes: ``accelerate launch --num_processes N [--cpu] -m cda_lite.sd train ...``.
A training run writes DIR/config.yaml (the resolved configuration), log.jsonl/log.csv, TensorBoard
events (DIR/tensorboard), validation grids (DIR/samples), checkpoint.pt and the LoRA (DIR/lora, loadable
by diffusers' ``load_lora_weights`` and peft's ``PeftModel.from_pretrained``).

``train`` resumes ``DIR/checkpoint.pt`` when it exists, and refuses one written under another preset,
seed, baseline, constraints or model (``--fresh`` starts afresh, ``--force-resume`` continues anyway).
User errors (unknown preset or reward, a missing folder, an unwritable ``--out``, missing weights) are
one line on stderr and exit status 2, before any pipeline is built; ``--debug`` shows tracebacks.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

from cda_lite._cli import Parser, UserError, count, entry_point, existing_dir, writable_dir


def _load_pipe(tiny: bool, model_path, seed: int, device=None, model_config=None, model_id=None):
    import torch

    if tiny:
        from cda_lite.sd.tiny import tiny_pipeline
        pipe = tiny_pipeline(seed)
    else:
        from cda_lite.sd.load import load_sd15
        kw = {"model_id": model_id} if model_id else {}  # the preset's base model (SD 1.4 for Tables 1/4)
        pipe = load_sd15(model_path, config=model_config, **kw)
    if device is None:
        device = "cuda" if torch.cuda.is_available() and not tiny else "cpu"
        if device == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per process of a multi-process launch
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    pipe.to(device)
    return pipe, (None if str(device) == "cpu" else device)


def _concepts_parser(sub):
    """``concepts``: Tables 1/4's min-CLIP / min-BLIP over the preset's random prompt sets (sd/concepts.py)."""
    c = sub.add_parser("concepts", help="Tables 1/4: min CLIP / min BLIP of combined prompt, equal, constrained")
    c.add_argument("--preset", required=True, choices=["table1", "table4"])
    c.add_argument("--tiny", action="store_true", help="tiny random pipeline and scorers on CPU")
    c.add_argument("--sets", type=count, default=None, help="number of random prompt sets (default: the preset's 50)")
    c.add_argument("--images", type=count, default=4, help="images per method and set")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--model-path", default=None, help="local SD folder (else the preset's model_id from the hub)")
    c.add_argument("--out", required=True)


def _parser():
    from cda_lite.sd import presets as P

    kinds = {n: type(P.get_preset(n)).__name__ for n in P.names()}
    train_names = [n for n, k in kinds.items() if k == "AlignPreset"]
    compose_names = [n for n, k in kinds.items() if k == "ComposePreset"]
    sample_names = [n for n, k in kinds.items() if k == "InferencePreset"]
    ap = Parser(prog="python -m cda_lite.sd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, choices in (("train", train_names), ("compose", compose_names), ("sample", sample_names)):
        s = sub.add_parser(name, help=f"presets: {', '.join(choices)}")
        s.add_argument("--preset", choices=choices, required=name != "train",
                       help=f"one of {', '.join(choices)}" + (" (or `preset:` in --config)" if name == "train" else ""))
        s.add_argument("--tiny", action="store_true", default=None, help="tiny random pipeline on CPU")
        s.add_argument("--out", required=True, help="output folder")
        s.add_argument("--model-path", default=None,
                       help="diffusers folder, hub id or single .safetensors/.ckpt file (else $CDA_SD_PATH or the hub)")
        s.add_argument("--model-config", default=None,
                       help="with a single-file --model-path: diffusers folder or hub id holding the component configs")
        s.add_argument("--seed", type=int, default=None)
        s.add_argument("--steps", type=count, default=None, help="override the preset's step count (≥ 1)")
    t = sub.choices["train"]
    t.add_argument("--config", default=None, help="YAML or JSON file: `preset: NAME` and/or any field (see config.yaml "
                                                  "of a run)")
    t.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. --set lr=2e-3 --set constraints[0].level=0.7 (repeatable)")
    t.add_argument("--baseline", action="store_true", help="λ frozen at lam_init (weighted objective)")
    t.add_argument("--reward", default=None, help="reward of the first constraint: a name or module:function")
    t.add_argument("--prompts", default=None, help="file of prompts, one per line (training and evaluation)")
    t.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None)
    t.add_argument("--validate-every", type=int, default=None, help="steps between validation grids (0: at the end)")
    t.add_argument("--fresh", "--no-resume", dest="fresh", action="store_true",
                   help="start afresh, ignoring (and then replacing) a checkpoint in --out")
    t.add_argument("--force-resume", action="store_true",
                   help="resume a checkpoint even if it was written under another configuration")
    sub.choices["compose"].add_argument("--adapters", nargs="*", default=None, type=existing_dir)
    sub.choices["sample"].add_argument("--adapters", nargs="*", default=None, type=existing_dir)
    pl = sub.add_parser("plot", help="training curves of a run folder to PNG")
    pl.add_argument("run_dir")
    pl.add_argument("--out", default=None, help="PNG path (default RUN_DIR/curves.png)")
    sub.add_parser("presets", help="list the presets with their derived numbers")
    _concepts_parser(sub)
    return ap


def _check_weights(tiny: bool, model_path) -> None:
    """A local model path that does not exist: MissingWeightsError (one line, exit 2) before anything is built."""
    from cda_lite.sd.load import ENV_PATH, resolve
    if not tiny and (model_path or os.environ.get(ENV_PATH)):
        resolve(model_path)


def _model_id(cfg) -> str:
    """What identifies the base model of a run (recorded in its checkpoints, compared on resume)."""
    from cda_lite.sd.load import DEFAULT_MODEL, ENV_PATH
    if cfg.tiny:
        return "tiny"
    path = cfg.model_path or os.environ.get(ENV_PATH)
    return os.path.abspath(path) if path and os.path.exists(path) else (path or DEFAULT_MODEL)


def _train(args) -> dict:
    from cda_lite.sd import presets as P
    from cda_lite.sd.config import load_config
    from cda_lite.sd.distributed import make_accelerator, run_accelerated
    from cda_lite.sd.train import check_resume

    flags = {"steps": args.steps, "seed": args.seed, "model_path": args.model_path, "prompts": args.prompts,
             "model_config": args.model_config,
             "mixed_precision": args.mixed_precision, "validate_every": args.validate_every}
    flags = {k: v for k, v in flags.items() if v is not None}
    if args.baseline:
        flags["fixed_weights"] = True
    if args.fresh:
        flags["resume"] = False
    if args.reward:
        flags["constraints[0].reward"] = args.reward
    if args.config is None and args.preset is None:
        raise ValueError("train: give --preset NAME or --config FILE")
    cfg = load_config(args.config, preset=args.preset, tiny=args.tiny, flags=flags, overrides=args.sets)
    writable_dir(args.out)
    _check_weights(cfg.tiny, cfg.model_path)
    model_id = _model_id(cfg)
    if cfg.resume:  # refuse another configuration before anything is built
        check_resume(args.out, cfg, model_id, force=args.force_resume)
    acc = make_accelerator(args.out, cfg.mixed_precision, cfg.tensorboard)
    if acc.is_main_process:
        print(P.describe(cfg))
    pipe, _ = _load_pipe(cfg.tiny, cfg.model_path, cfg.seed, device=acc.device, model_config=cfg.model_config)
    s = run_accelerated(pipe, cfg, args.out, acc=acc, resume=cfg.resume, progress=True,
                        force_resume=args.force_resume, model_id=model_id)
    s.pop("trainer")
    s.pop("sync", None)
    return s if acc.is_main_process else {}


def _plot(args) -> dict:
    from cda_lite.sd.plot import plot_run

    path = plot_run(args.run_dir, args.out)
    return {"plot": path}


@entry_point("python -m cda_lite.sd")
def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from cda_lite.sd import presets as P
    if args.cmd == "presets":
        for n in P.names():
            print(P.describe(P.get_preset(n)))
        return 0
    try:
        if args.cmd == "concepts":
            writable_dir(args.out)
            s = _concepts(args)["mean_min"]
        elif args.cmd == "train":
            s = _train(args)
        elif args.cmd == "plot":
            s = _plot(args)
        else:
            s = _compose_or_sample(args)
    except TypeError as e:  # a reward or prompt of the wrong kind (ValueError/OSError: entry_point, exit 2)
        raise UserError(str(e)) from e
    if s:
        print(json.dumps(s, indent=1, default=str))
    return 0


def _compose_or_sample(args) -> dict:
    from cda_lite.checkpoint import atomic_write_json
    from cda_lite.sd import presets as P

    tiny = bool(args.tiny)
    seed = 0 if args.seed is None else args.seed
    writable_dir(args.out)
    _check_weights(tiny, args.model_path)
    p = replace(P.get_preset(args.preset, tiny=tiny), seed=seed)
    if args.cmd == "sample":
        if args.steps:
            p = replace(p, steps=args.steps)
        print(P.describe(p))
        import torch

        from cda_lite.sd.inference import run as run_inference
        pipe, device = _load_pipe(tiny, args.model_path, seed, model_config=args.model_config,
                                  model_id=getattr(p, "model_id", None))
        res = run_inference(pipe, p, args.adapters, progress=True)
        s = {"preset": p.name, "method": p.method, "prompts": res.prompts, "published": p.published}
        if res.smc is not None:
            s["ess"] = res.smc.ess.tolist()
            s["resamples"] = res.smc.n_resamples.tolist()
        os.makedirs(args.out, exist_ok=True)
        atomic_write_json(s, os.path.join(args.out, "summary.json"))
        torch.save(res.images, os.path.join(args.out, "images.pt"))
        return s
    if args.steps:
        p = replace(p, dual_steps=args.steps)
    print(P.describe(p))
    from cda_lite.sd.compose import make_experts, run
    pipe, device = _load_pipe(tiny, args.model_path, seed, model_config=args.model_config,
                              model_id=getattr(p, "model_id", None))
    res = run(pipe, make_experts(pipe, p, args.adapters, seed), p, progress=True, device=device)
    s = {"preset": p.name, "experts": res.extra["names"], "lam": res.lam.tolist(),
         "kl_at_lam": res.extra["kls"].tolist(), "lam_history": res.lam_history.tolist(),
         "kl_history": res.values_history.tolist(), "published": p.published}
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(s, os.path.join(args.out, "summary.json"))
    if res.extra["images"] is not None:
        import torch
        torch.save(res.extra["images"], os.path.join(args.out, "images.pt"))
    return s


def _concepts(args) -> dict:
    """``python -m cda_lite.sd concepts --preset table1|table4 [--tiny] [--sets N] [--images N] --out DIR``:
    :func:`cda_lite.sd.concepts.table_metrics` with CLIP ViT-L/14 and BLIP-2 ITM (tiny random scorers with ``--tiny``); writes
    summary.json. ``args``: the parsed namespace (preset, tiny, sets, images, seed, out, model_path)."""
    from dataclasses import replace

    import torch

    from cda_lite.checkpoint import atomic_write_json
    from cda_lite.sd import presets as P
    from cda_lite.sd.concepts import Blip2ITM, table_metrics

    p = P.get_preset(args.preset, tiny=args.tiny)
    if not isinstance(p, P.ComposePreset) or p.experts != "prompts":
        raise ValueError(f"--preset {args.preset}: the concept metrics need a prompt-composition preset (table1, table4)")
    if args.sets:
        p = replace(p, n_sets=int(args.sets))
    if args.tiny:
        from cda_lite.sd import tiny_rewards as TR
        from cda_lite.sd.tiny import tiny_pipeline
        pipe, scorers = tiny_pipeline(args.seed), {"clip": TR.tiny_clip_score(), "blip": TR.tiny_blip2_itm()}
    else:
        from cda_lite.sd.load import load_sd15
        from cda_lite.sd.rewards import CLIPScore
        device = "cuda" if torch.cuda.is_available() else "cpu"
        pipe = load_sd15(args.model_path, model_id=p.model_id, device=device)
        scorers = {"clip": CLIPScore(), "blip": Blip2ITM()}
    out = table_metrics(pipe, p, scorers, n_images=args.images, seed=args.seed, progress=True)
    out["published"] = p.published
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(out, os.path.join(args.out, "summary.json"))
    return out


if __name__ == "__main__":
    sys.exit(main())
