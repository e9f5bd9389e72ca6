"""LoRA adapters on the UNet's attention projections (to_q, to_k, to_v, to_out.0), as in the paper
(rank 4), through peft as diffusers integrates it; saved in diffusers' LoRA format
(``pytorch_lora_weights.safetensors``: ``pipe.load_lora_weights(folder)``) and in peft's
(``adapter_config.json`` + ``adapter_model.safetensors``: ``PeftModel.from_pretrained(unet, folder)``),
with the user's umask. Chapter 10.
"""
from __future__ import annotations

import os

import torch

from cda_lite.sd.files import honour_umask

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers
PEFT_WEIGHT_NAME = "adapter_model.safetensors"  # peft


def add_lora(unet, rank: int = 4, alpha: float | None = None, name: str = "default", init: str | bool = True,
             seed: int | None = None) -> list[torch.nn.Parameter]:
    """Attach a rank-``rank`` LoRA adapter ``name`` to ``unet`` and return its trainable parameters (fp32).

    ``init=True`` is peft's default (B = 0: the adapter starts as the identity); ``init="random"``
    also draws B (for tests and stand-in adapters that must change the output). Every other UNet
    weight stays frozen.
    """
    from peft import LoraConfig

    if int(rank) < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if init not in (True, "random"):
        raise ValueError(f"init must be True or 'random', got {init!r}")
    unet.requires_grad_(False)
    cfg = LoraConfig(r=int(rank), lora_alpha=float(alpha if alpha is not None else rank),
                     init_lora_weights="gaussian" if init == "random" else True, target_modules=list(TARGETS))
    if seed is not None:
        torch.manual_seed(seed)
    unet.add_adapter(cfg, adapter_name=name)
    params = []
    for pname, p in unet.named_parameters():
        if "lora_" in pname and f".{name}." in pname:
            if init == "random" and "lora_B" in pname:
                with torch.no_grad():
                    p.normal_(0.0, 0.02)
            p.data = p.data.float()
            p.requires_grad_(True)
            params.append(p)
    if not params:
        raise RuntimeError("add_lora: no LoRA parameters were created (are the attention modules named to_q/...?)")
    return params


def lora_parameters(unet, name: str = "default") -> list[torch.nn.Parameter]:
    return [p for n, p in unet.named_parameters() if "lora_" in n and f".{name}." in n]


def lora_state_dict(unet, name: str = "default") -> dict:
    """The adapter's weights in diffusers' key format (``unet.…lora.down/up.weight``-style via peft)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import get_peft_model_state_dict

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=name))


def save_lora(pipe, out_dir: str, name: str = "default") -> str:
    """Write the adapter ``name`` of ``pipe.unet`` to ``out_dir`` (atomically: a temporary folder, then
    rename) in the format ``pipe.load_lora_weights(out_dir)`` reads. Returns the weight file's path."""
    import shutil
    import tempfile

    from diffusers import StableDiffusionPipeline

    layers = {k: v.detach().float().cpu().contiguous() for k, v in lora_state_dict(pipe.unet, name).items()}
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-lora-")
    try:
        StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=layers, safe_serialization=True)
        save_peft_adapter(pipe.unet, tmp, name)
        honour_umask(tmp)  # mkdtemp made it 0700
        if os.path.isdir(out_dir):
            old = out_dir.rstrip("/") + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return os.path.join(out_dir, WEIGHT_NAME)


def save_peft_adapter(unet, folder: str, name: str = "default") -> None:
    """peft's own layout of adapter ``name``: ``adapter_config.json`` (the LoraConfig) and
    ``adapter_model.safetensors`` (keys as ``PeftModel.save_pretrained`` writes them)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    cfg = unet.peft_config[name]
    cfg.save_pretrained(folder)
    sd = get_peft_model_state_dict(unet, adapter_name=name)
    save_file({f"base_model.model.{k}": v.detach().float().cpu().contiguous() for k, v in sd.items()},
              os.path.join(folder, PEFT_WEIGHT_NAME), metadata={"format": "pt"})


def load_lora(pipe, folder: str, name: str) -> None:
    """Load a saved adapter into ``pipe`` under ``name`` (diffusers' ``load_lora_weights``)."""
    if not os.path.exists(os.path.join(folder, WEIGHT_NAME)):
        raise FileNotFoundError(f"no LoRA weights ({WEIGHT_NAME}) in {folder!r}")
    pipe.load_lora_weights(folder, adapter_name=name)


def set_active(unet, name: str) -> None:
    """Make adapter ``name`` the only active one (weight 1)."""
    unet.set_adapters([name], weights=[1.0])


def attach_adapters(pipe, names, adapter_dirs: list[str] | None = None, tiny: bool = False, seed: int = 0) -> list[str]:
    """Attach the LoRA adapters ``names`` to ``pipe``: loaded from ``adapter_dirs`` (one folder per name,
    as written by ``python -m cda_lite.sd train --out``), or, on the tiny pipeline without folders,
    random rank-4 stand-ins (seeds ``seed``, ``seed + 1``, …). Used by composition and the blends."""
    names = list(names)
    if adapter_dirs:
        if len(adapter_dirs) != len(names):
            raise ValueError(f"adapter_dirs: need {len(names)} folders ({names}), got {len(adapter_dirs)}")
        for n, d in zip(names, adapter_dirs):
            load_lora(pipe, d, n)
    elif tiny:
        for i, n in enumerate(names):
            add_lora(pipe.unet, 4, name=n, init="random", seed=seed + i)
        pipe.unet.requires_grad_(False)
    else:
        raise ValueError("adapter_dirs: composing or blending LoRAs needs the Table 2 adapters (one folder each); "
                         "train them with `python -m cda_lite.sd train --preset table2 --reward NAME`")
    return names
