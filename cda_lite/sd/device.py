"""One device/dtype policy for every tensor the SD rung creates.

- The pipeline's modules sit on one device (:func:`pipe_device`); everything that meets them follows
  that device: timesteps and tokens are made *on the device of the tensor they meet*, rewards are
  moved there with :func:`cda_lite.sd.rewards.follow` (every reward has ``.to``).
- Random numbers (x_T, step noise, the timesteps and noise of Lemma 2's estimate, DAS's proposals) are
  drawn from CPU :class:`torch.Generator` s and moved to the device afterwards: the stream of a seed is the
  same on every device, so a CPU run and a GPU run draw the same noise.
- Mixed precision: on CUDA, :func:`precision` is a bf16 autocast context for the *frozen* UNet/VAE
  calls and :func:`enable_tf32` allows TF32 matmuls; on the CPU both do nothing (float32 throughout).
  Other code that wants a policy (e.g. an accelerate launcher) calls these rather than its own.

``tests/test_sd_device.py`` checks the policy without a GPU: the pipeline is put on a pretend second
device and any operation that mixes it with a CPU tensor fails. Chapter 10.
"""
from __future__ import annotations

import contextlib

import torch


def pipe_device(pipe) -> torch.device:
    """The device of the pipeline's UNet (where the other modules are expected too)."""
    return next(pipe.unet.parameters()).device


def randn(shape, generator: torch.Generator | None, device=None, dtype=torch.float32) -> torch.Tensor:
    """N(0, I) drawn on the generator's device (CPU for the CPU generators used throughout), then
    moved to ``device``: reproducible across devices."""
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=gen_dev)
    return z if device is None else z.to(device)


def enable_tf32(enabled: bool = True) -> None:
    """Allow TF32 tensor-core matmuls and convolutions on CUDA (no effect on the CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def precision(device, mixed: bool = True):
    """Autocast context for the frozen networks' forward passes: bf16 on CUDA when ``mixed``, else a
    no-op (CPU runs stay float32, bit-reproducible)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if mixed and dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
