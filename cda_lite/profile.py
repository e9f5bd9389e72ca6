"""One switch for effort: the ``CDA_PROFILE`` environment variable (``fast`` or ``full``).

``fast`` is what CI and ``make test`` run (minutes on 2 CPU cores); ``full`` is the
better-converged version a reader may want.
"""
from __future__ import annotations

import os

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
