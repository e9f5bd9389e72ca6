"""Errors shared by the layers: the 2-D truth (:mod:`cda_lite.exact`) and the learned primal–dual core
(:mod:`cda_lite.constraints`) both raise :class:`InfeasibleConstraintError`, so it lives beneath them; every trainer and command line
knows :class:`NonFiniteError` (a training step gave NaN/inf: :mod:`cda_lite.checkpoint`)."""
from __future__ import annotations


class InfeasibleConstraintError(ValueError):
    """No λ ≥ 0 reaches the constraint levels (Slater's condition fails)."""

    def __init__(self, message: str, constraints: list[int]):
        super().__init__(message)
        self.constraints = constraints


class NonFiniteError(FloatingPointError):
    """A training step produced NaN/inf; ``checkpoint`` is the last finite checkpoint (or None)."""

    def __init__(self, message: str, checkpoint: str | None = None):
        super().__init__(message)
        self.checkpoint = checkpoint

