"""Load Stable Diffusion 1.5 (``StableDiffusionPipeline.from_pretrained``, or ``from_single_file`` for one
checkpoint file) from a local folder, a file or the hub, or fail at once with a message that says how
to provide the weights — never a silent download attempt that hangs offline. Whatever the checkpoint
predicts (ε or v), the pipeline returned is an ε-model (:func:`as_epsilon`).

Where the weights come from, in order: the ``path`` argument, the env var ``CDA_SD_PATH`` (a folder
laid out like the hub repository: model_index.json, unet/, vae/, text_encoder/, tokenizer/,
scheduler/; or a hub id; or a single ``.safetensors``/``.ckpt`` checkpoint), else the hub id (default
``stable-diffusion-v1-5/stable-diffusion-v1-5``), read from the local Hugging Face cache only when
``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set. Chapter 10.
"""
from __future__ import annotations

import os
import re

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


SINGLE_FILE = (".safetensors", ".ckpt")


def resolve(path: str | None = None, model_id: str = DEFAULT_MODEL) -> tuple[str, bool]:
    """(where to load from, local_files_only): a single checkpoint file, a diffusers folder, or a hub id."""
    path = path or os.environ.get(ENV_PATH) or None
    if path and path.endswith(SINGLE_FILE):
        if not os.path.isfile(path):
            raise MissingWeightsError(_how_to(f"single-file checkpoint {path!r} does not exist."))
        return path, offline()
    if path and not os.path.isdir(path) and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", path):
        return path, offline()  # a hub id such as "stable-diffusion-v1-5/stable-diffusion-v1-5"
    if path:
        return check_folder(path), True
    return model_id, offline()


class _VToEps:
    """Forward hook turning a v-prediction UNet's output into ε: ε = √ᾱ_t v + √(1 − ᾱ_t) x_t
    (Salimans & Ho 2022, v = √ᾱ ε − √(1 − ᾱ) x₀), so that every caller — sampling, the path-wise KL,
    composition, DAS and the blends — sees an ε-model."""

    def __init__(self, alphas_cumprod):
        self.ab = alphas_cumprod.detach().double().cpu()

    def __call__(self, module, args, kwargs, output):
        import torch

        x = args[0] if args else kwargs["sample"]
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        v = output[0] if isinstance(output, tuple) else output.sample
        t_ = torch.as_tensor(t).detach().cpu().long().reshape(-1)
        ab = self.ab[t_].to(x.device, torch.float32)
        ab = (ab.expand(x.shape[0]) if ab.numel() == 1 else ab).view(-1, *([1] * (x.ndim - 1)))
        eps = (ab.sqrt() * v.float() + (1 - ab).sqrt() * x.float()).to(v.dtype)
        if isinstance(output, tuple):
            return (eps,) + tuple(output[1:])
        output.sample = eps
        return output


def as_epsilon(pipe):
    """Make ``pipe`` an ε-prediction pipeline whatever its scheduler's ``prediction_type``: for
    ``v_prediction`` a hook converts the UNet's v to ε and the scheduler is told ``epsilon`` (so that
    diffusers' own ``pipe(...)`` stays right). ``epsilon`` passes; anything else is a ValueError."""
    kind = getattr(pipe.scheduler.config, "prediction_type", "epsilon")
    if kind == "epsilon" or getattr(pipe.unet, "_cda_v_to_eps", None) is not None:
        return pipe
    if kind != "v_prediction":
        raise ValueError(f"prediction_type {kind!r} is not supported (epsilon, v_prediction)")
    hook = _VToEps(pipe.scheduler.alphas_cumprod)
    pipe.unet._cda_v_to_eps = pipe.unet.register_forward_hook(hook, with_kwargs=True)
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type="epsilon")
    return pipe


def load_sd15(path: str | None = None, model_id: str = DEFAULT_MODEL, dtype=None, device: str | None = None,
              config: str | None = None):
    """SD 1.5 as a ``StableDiffusionPipeline`` (no safety checker), DDIM scheduler with trailing
    spacing (so that truncated backprop through the last steps moves the sample), modules frozen,
    an ε-model whatever the checkpoint predicts (:func:`as_epsilon`).

    ``path``: a diffusers folder, a hub id, or a single ``.safetensors``/``.ckpt`` file (diffusers'
    ``from_single_file``; ``config``: a diffusers folder or hub id with the component configs, needed
    offline)."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    source, local_only = resolve(path, model_id)
    kw = dict(safety_checker=None, requires_safety_checker=False, local_files_only=local_only)
    try:
        if source.endswith(SINGLE_FILE):
            pipe = StableDiffusionPipeline.from_single_file(source, torch_dtype=dtype or torch.float32,
                                                            config=config, **kw)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(source, dtype=dtype or torch.float32, **kw)
    except (OSError, ValueError) as e:  # diffusers raises OSError/EnvironmentError for missing files
        raise MissingWeightsError(_how_to(f"could not load {source!r} ({type(e).__name__}: {e}).")) from e
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    as_epsilon(pipe)
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
