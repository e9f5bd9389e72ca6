"""Load Stable Diffusion 1.5 (``StableDiffusionPipeline.from_pretrained``) from a local folder or the
hub, or fail at once with a message that says how to provide the weights — never a silent download
attempt that hangs offline.

Where the weights come from, in order: the ``path`` argument, the env var ``CDA_SD_PATH`` (a folder
laid out like the hub repository: model_index.json, unet/, vae/, text_encoder/, tokenizer/,
scheduler/), else the hub id (default ``stable-diffusion-v1-5/stable-diffusion-v1-5``), read from the
local Hugging Face cache only when ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set. Chapter 10.
"""
from __future__ import annotations

import os

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
ENV_PATH = "CDA_SD_PATH"
_REQUIRED = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")


class MissingWeightsError(FileNotFoundError):
    """SD weights are not available; the message says how to provide them."""


def _how_to(what: str) -> str:
    return (f"{what}\nTo provide Stable Diffusion 1.5 weights, either\n"
            f"  * download them once on a machine with internet: `huggingface-cli download {DEFAULT_MODEL} "
            f"--local-dir /path/to/sd15` (about 5 GB; the fp16 variant suffices for inference), then set "
            f"{ENV_PATH}=/path/to/sd15 or pass path=...; or\n"
            f"  * unset HF_HUB_OFFLINE to let diffusers download {DEFAULT_MODEL} into the HF cache.\n"
            f"Everything in cda_lite.sd also runs on the tiny random pipeline: cda_lite.sd.tiny.tiny_pipeline().")


def offline() -> bool:
    """True when the Hugging Face offline switches are set."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE"))


def check_folder(path: str) -> str:
    """Raise :class:`MissingWeightsError` unless ``path`` is a complete diffusers SD folder."""
    if not os.path.isdir(path):
        raise MissingWeightsError(_how_to(f"Stable Diffusion folder {path!r} does not exist."))
    missing = [p for p in _REQUIRED if not os.path.exists(os.path.join(path, p))]
    if missing:
        raise MissingWeightsError(_how_to(f"Stable Diffusion folder {path!r} lacks {missing}."))
    return path


def resolve(path: str | None = None, model_id: str = DEFAULT_MODEL) -> tuple[str, bool]:
    """(where to load from, local_files_only)."""
    path = path or os.environ.get(ENV_PATH) or None
    if path:
        return check_folder(path), True
    return model_id, offline()


def load_sd15(path: str | None = None, model_id: str = DEFAULT_MODEL, dtype=None, device: str | None = None):
    """SD 1.5 as a ``StableDiffusionPipeline`` (no safety checker), DDIM scheduler with trailing
    spacing (so that truncated backprop through the last steps moves the sample), modules frozen."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    source, local_only = resolve(path, model_id)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            source, dtype=dtype or torch.float32, safety_checker=None, requires_safety_checker=False,
            local_files_only=local_only)
    except (OSError, ValueError) as e:  # diffusers raises OSError/EnvironmentError for missing files
        raise MissingWeightsError(_how_to(f"could not load {source!r} ({type(e).__name__}: {e}).")) from e
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    if device is not None:
        pipe.to(device)
    return pipe


def random_sd15_unet(dtype=None):
    """The full SD 1.5 UNet architecture with random weights (for benchmarks without weights)."""
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8)
    return unet.to(dtype or torch.float32).eval().requires_grad_(False)
