"""Input validation shared by the library and its command lines: one check per kind of input, at the
public boundary, each raising an error that names the argument — never a silent NaN, never an error
from deep inside torch/NumPy/SciPy.

The error family: :class:`InputError` (a ``ValueError``) and :class:`InputTypeError` (a ``TypeError``)
for bad arguments; :class:`UserError` for what a person typed or pointed a command at (a file, a
folder, a name); the command lines (:mod:`cda_lite._cli`) print any of them as one line and exit 2.
"""
from __future__ import annotations

import math
import numbers

import numpy as np


class InputError(ValueError):
    """A bad argument value (wrong shape, non-finite, out of range); the message names the argument."""


class InputTypeError(TypeError):
    """An argument of the wrong kind (e.g. a plain function where a reward object is needed)."""


class UserError(InputError):
    """A user's mistake at a command line or in a file: a missing/wrong file, an unknown name, an
    unwritable folder. Command lines print it as one line and exit with status 2."""


def as_float_array(value, name: str, ndim: int | None = None) -> np.ndarray:
    """Convert to a float64 array, checking the number of dimensions."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name}: could not convert to a float array ({e})") from None
    if ndim is not None and arr.ndim != ndim:
        raise InputError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    return arr


def check_finite(arr, name: str) -> None:
    """Every entry finite (NumPy arrays, tensors, numbers)."""
    if _is_tensor(arr):
        ok = bool(arr.detach().isfinite().all()) if arr.is_floating_point() or arr.is_complex() else True
    else:
        ok = bool(np.all(np.isfinite(np.asarray(arr, dtype=float))))
    if not ok:
        raise InputError(f"{name}: contains non-finite values (NaN or inf)")


def check_number(value, name: str, *, positive: bool = False, nonnegative: bool = False) -> float:
    """A finite real number (optionally > 0 or ≥ 0); returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if _is_tensor(value) and value.numel() == 1:
            value = float(value)
        else:
            raise InputTypeError(f"{name}: expected a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{name}: must be a finite number, got {v}")
    if positive and v <= 0:
        raise InputError(f"{name}: must be > 0, got {v:g}")
    if nonnegative and v < 0:
        raise InputError(f"{name}: must be ≥ 0, got {v:g}")
    return v


def check_count(value, name: str, minimum: int = 1) -> int:
    """An integer ≥ ``minimum`` (a count of steps, samples, levels ...); returns it as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputTypeError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{name}: must be ≥ {minimum}, got {value}")
    return int(value)


def check_shape(x, name: str, ndim: int | None = None, last: int | None = None, what: str = "") -> None:
    """``x`` has ``ndim`` dimensions and/or last dimension ``last``; the message says what was expected
    (``what``, e.g. "(n, 2) points of a 2-D mixture")."""
    shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
    bad = (ndim is not None and len(shape) != ndim) or (last is not None and (not shape or shape[-1] != last))
    if bad:
        want = what or ", ".join(s for s in (f"{ndim} dimensions" if ndim is not None else "",
                                             f"last dimension {last}" if last is not None else "") if s)
        raise InputError(f"{name}: expected {want}, got shape {shape}")


def check_callable_reward(reward, name: str = "reward", needs: tuple = ("__call__",)) -> None:
    """``reward`` is an object with the attributes ``needs`` (e.g. ``("expectation", "sup")`` for the
    exact 2-D rewards); a plain function gets a message saying what is needed."""
    missing = [a for a in needs if not hasattr(reward, a)]
    if missing:
        kind = type(reward).__name__
        raise InputTypeError(f"{name}: expected a reward object with {', '.join(needs)} (e.g. "
                             f"cda_lite.exact.LinearReward or QuadraticReward), got a {kind} without {missing}")


def check_simplex(w: np.ndarray, name: str, atol: float = 1e-8) -> None:
    """Weights must be non-negative and sum to 1."""
    check_finite(w, name)
    if np.any(w < 0):
        raise InputError(f"{name}: weights must be non-negative, got {np.round(w, 6).tolist()}")
    if abs(w.sum() - 1.0) > atol:
        raise InputError(f"{name}: weights must sum to 1 (they sum to {w.sum():.6g})")


def check_psd(A: np.ndarray, name: str) -> None:
    """Symmetric positive semi-definite."""
    check_finite(A, name)
    if not np.allclose(A, A.T, rtol=1e-10, atol=1e-12):
        raise InputError(f"{name}: matrix must be symmetric")
    eig = np.linalg.eigvalsh(A)
    if eig.min() < -1e-12 * max(1.0, abs(eig).max()):
        raise InputError(f"{name}: matrix must be positive semi-definite (smallest eigenvalue {eig.min():.3g})")


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "isfinite")
