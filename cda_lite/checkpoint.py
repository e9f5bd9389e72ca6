"""Atomic checkpoints: write to a temporary file in the same folder, then ``os.replace`` — a crash
mid-write never leaves a half-written checkpoint where the last good one was."""
from __future__ import annotations

import json
import os
import tempfile

import torch


def _default_mode() -> int:
    """0666 & ~umask: the mode an ordinary open() gives (``mkstemp`` alone leaves 0600)."""
    m = os.umask(0o022)
    os.umask(m)
    return 0o666 & ~m


def atomic_save(obj, path: str) -> None:
    """torch.save ``obj`` to ``path`` atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(obj, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.chmod(tmp, _default_mode())
    os.replace(tmp, path)


def load(path: str):
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=False)
