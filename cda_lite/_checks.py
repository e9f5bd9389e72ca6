"""Input validation shared by the library: errors that name the argument, never a silent NaN."""
from __future__ import annotations

import numpy as np


def as_float_array(value, name: str, ndim: int | None = None) -> np.ndarray:
    """Convert to a float64 array, checking the number of dimensions."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: could not convert to a float array ({e})") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains non-finite values (NaN or inf)")


def check_simplex(w: np.ndarray, name: str, atol: float = 1e-8) -> None:
    """Weights must be non-negative and sum to 1."""
    if np.any(w < 0):
        raise ValueError(f"{name}: weights must be non-negative, got {np.round(w, 6).tolist()}")
    if abs(w.sum() - 1.0) > atol:
        raise ValueError(f"{name}: weights must sum to 1 (they sum to {w.sum():.6g})")


def check_psd(A: np.ndarray, name: str) -> None:
    """Symmetric positive semi-definite."""
    if not np.allclose(A, A.T, rtol=1e-10, atol=1e-12):
        raise ValueError(f"{name}: matrix must be symmetric")
    eig = np.linalg.eigvalsh(A)
    if eig.min() < -1e-12 * max(1.0, abs(eig).max()):
        raise ValueError(f"{name}: matrix must be positive semi-definite (smallest eigenvalue {eig.min():.3g})")
