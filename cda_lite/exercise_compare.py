"""How an exercise check compares a student's answer with the expected one (:mod:`cda_lite.exercises`).

:func:`call` runs the student's function and keeps its exceptions apart from the checker's own
(:class:`StudentRaised`); :func:`close` compares arrays with a tolerance and says where they first
differ; :func:`describe` and :func:`fmt` write the values into the messages; a wrong answer raises
:class:`CheckFailure`. The cases themselves live in :mod:`cda_lite.exercise_cases` and
:mod:`cda_lite.exercise_cases_sd`.
"""
from __future__ import annotations

import numpy as np

__all__ = ["CheckFailure", "StudentRaised", "LAST_RETURN", "call", "close", "describe", "fmt", "to_array"]


class CheckFailure(Exception):
    """Raised inside a check when a student's answer is wrong (message: what was expected)."""


class StudentRaised(Exception):
    """The student's function raised ``original`` (kept apart from the checker's own errors)."""

    def __init__(self, original: BaseException):
        super().__init__(str(original))
        self.original = original


# The last value the student's function returned (for "your function returned X" messages).
LAST_RETURN: list = [None]


def call(fn, *args, **kwargs):
    """Call the student's function; its exceptions come back as :class:`StudentRaised`."""
    LAST_RETURN[0] = None
    try:
        out = fn(*args, **kwargs)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:
        if type(err).__name__ == "CaseTimeout":
            raise
        raise StudentRaised(err) from err
    LAST_RETURN[0] = out
    return out


def fmt(x) -> str:
    return np.array2string(np.asarray(x, dtype=float), precision=6, suppress_small=True, max_line_width=88,
                           threshold=12)


def to_array(got, what: str) -> np.ndarray:
    """``got`` as a float numpy array (torch tensors included), or a CheckFailure saying what came back."""
    if hasattr(got, "detach"):
        got = got.detach().cpu().numpy()
    try:
        return np.asarray(got, dtype=float)
    except (TypeError, ValueError):
        raise CheckFailure(f"{what}: your function returned {describe(got)}, expected an array of numbers") from None


def close(got, expected, what: str, rtol: float, atol: float):
    g = to_array(got, what)
    e = np.asarray(expected, dtype=float)
    if g.shape != e.shape:
        raise CheckFailure(f"{what}: expected shape {e.shape}, got shape {g.shape}")
    if not np.all(np.isfinite(g)):
        raise CheckFailure(f"{what}: your answer contains NaN or inf: {fmt(g)}")
    bad = ~np.isclose(g, e, rtol=rtol, atol=atol)
    if np.any(bad):
        where = ""
        if g.size > 1:
            k = tuple(int(i) for i in np.argwhere(bad)[0])
            k_str = str(k[0]) if len(k) == 1 else str(k)
            where = f" (first mismatch at index {k_str}: expected {e[k]:.6g}, got {g[k]:.6g})"
        raise CheckFailure(f"{what}: expected {fmt(e)}, got {fmt(g)}{where} (tolerance rtol={rtol:g}, atol={atol:g})")


def describe(x) -> str:
    """A short description of a value: its type and, for arrays, shape and dtype."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, (tuple, list)):
        inner = ", ".join(describe(v) for v in x[:3]) + (", …" if len(x) > 3 else "")
        return f"a {type(x).__name__} of {len(x)} ({inner})"
    if x is None:
        return "None"
    return f"{type(x).__name__} {x!r}"[:120]
