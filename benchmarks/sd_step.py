"""Fig. 3 optimiser-step benchmark: seconds and peak memory per optimiser step, images/s, with and
without gradient checkpointing, for constrained LoRA alignment (3 constraints, K = 3, η = 1).

    PYTHONPATH=. python benchmarks/sd_step.py            # tiny pipeline, CPU (32 px, 4 DDIM steps)
    PYTHONPATH=. python benchmarks/sd_step.py --full     # GPU: SD 1.5 architecture, random weights, 512 px,
                                                         # the fig3 preset (15 steps, 64 images/step)

The full path needs no weights (random init has the same cost) but needs a GPU; it was not run in the
session that wrote it (no device lent). Prints one JSON line per setting.
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import replace

import torch


def random_sd15_pipeline(device, dtype=torch.float32):
    """SD 1.5's architecture (UNet 860 M, VAE, CLIP ViT-L text encoder) with random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    from cda_lite.sd.load import random_sd15_unet
    from cda_lite.sd.tiny import tiny_tokenizer

    tok = tiny_tokenizer(max_length=77)
    vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, layers_per_block=2,
                        sample_size=512)
    te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                      num_hidden_layers=12, vocab_size=len(tok), max_position_embeddings=77,
                                      bos_token_id=0, eos_token_id=1, pad_token_id=1))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1, timestep_spacing="trailing")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=random_sd15_unet(dtype),
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval().requires_grad_(False)
    return pipe.to(device)


def bench(full: bool, checkpointing: bool, steps: int) -> dict:
    from cda_lite.sd import train as T
    from cda_lite.sd.presets import ConstraintSpec, get_preset

    device = "cuda" if full else None
    p = get_preset("fig3", tiny=not full)
    # MPS needs weights: a weight-free stand-in of the same position in the graph
    cons = [ConstraintSpec("colourfulness", ">=", 0.0)] + p.constraints[1:] if full else p.constraints
    p = replace(p, constraints=cons, checkpointing=checkpointing, steps=steps + 1, checkpoint_every=0)
    pipe = random_sd15_pipeline(device) if full else __import__("cda_lite.sd.tiny", fromlist=["x"]).tiny_pipeline()
    trainer, *_ = T.build(pipe, p, device=device)
    next(iter(trainer.run(steps=1)))  # warm-up step
    if full:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    for _ in trainer.run(steps=steps):
        pass
    if full:
        torch.cuda.synchronize()
    sec = (time.perf_counter() - t0) / steps
    peak = (torch.cuda.max_memory_allocated() / 2**30 if full
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"setting": "sd15-random-512px" if full else "tiny-32px-cpu", "checkpointing": checkpointing,
            "images_per_step": p.images_per_step, "sample_steps": p.sample_steps, "K": p.grad_steps,
            "sec_per_step": round(sec, 3), "images_per_sec": round(p.images_per_step / sec, 3),
            "peak_mem_GiB": round(peak, 3), "peak_mem_kind": "cuda allocated" if full else "process max RSS",
            "rss_growth_GiB": None if full else round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0)
                                                      / 2**20, 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="SD 1.5 architecture at 512 px on a GPU")
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    if args.full and not torch.cuda.is_available():
        raise SystemExit("--full needs a CUDA GPU (the SD 1.5 step takes ~30 s per image on CPU)")
    if not args.full:
        torch.set_num_threads(1)
    for ckpt in (False, True):
        print(json.dumps(bench(args.full, ckpt, args.steps)), flush=True)


if __name__ == "__main__":
    main()
