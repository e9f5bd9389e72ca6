"""Two switches: effort (``CDA_PROFILE`` = ``fast`` or ``full``) and hardware (``CDA_DEVICE``).

``fast`` is what CI and ``make test`` run (minutes on 2 CPU cores); ``full`` is the
better-converged version a reader may want, and still runs on a CPU. ``CDA_DEVICE`` (``cpu`` by
default, or ``cuda`` / ``cuda:N``) is the separate switch for what needs a GPU: only with a CUDA
device do Chapters 10–11 load Stable Diffusion 1.5 and the reward checkpoints
(:func:`sd_real`); on a CPU they run the tiny random pipeline under either profile and say so
(:func:`gpu_note`).
"""
from __future__ import annotations

import os
import re

PROFILES = ("fast", "full")


def profile() -> str:
    """The current profile, read from ``CDA_PROFILE`` (default ``fast``)."""
    value = os.environ.get("CDA_PROFILE", "fast").strip().lower() or "fast"
    if value not in PROFILES:
        raise ValueError(f"CDA_PROFILE must be one of {PROFILES}, got {value!r}")
    return value


def pick(fast, full):
    """Return ``fast`` or ``full`` according to the current profile."""
    return fast if profile() == "fast" else full


def device() -> str:
    """The device for the GPU-only cells, read from ``CDA_DEVICE`` (default ``cpu``).

    ``cuda`` or ``cuda:N`` must name a device torch can see: a ValueError says so before any
    weights are loaded.
    """
    value = os.environ.get("CDA_DEVICE", "cpu").strip().lower() or "cpu"
    if value != "cpu" and not re.fullmatch(r"cuda(:\d+)?", value):
        raise ValueError(f"CDA_DEVICE must be 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    if value != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"CDA_DEVICE={value!r} but torch sees no CUDA device; unset it to run on the CPU")
        index = int(value.split(":")[1]) if ":" in value else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"CDA_DEVICE={value!r} but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return value


def sd_real() -> bool:
    """Whether the Stable Diffusion chapters run the real SD 1.5 cells (``CDA_DEVICE`` is a GPU)."""
    return device() != "cpu"


def gpu_note() -> str:
    """One line for the chapters' switch cells: what runs here, and what is skipped for want of a GPU."""
    if sd_real():
        return f"profile {profile()}, device {device()}: SD 1.5 and the reward checkpoints (the paper's runs)"
    skipped = " (the full profile's SD 1.5 runs are skipped: set CDA_DEVICE=cuda on a GPU machine)"
    return (f"profile {profile()}, device cpu: the tiny random pipeline"
            + (skipped if profile() == "full" else ""))
