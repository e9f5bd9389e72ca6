"""Self-checks for the "implement a piece" exercises of the book.

A student writes a function and calls ``check(name, student_fn)``: the checker runs it on cases of
its own, compares with a reference computed independently of the library function the exercise
re-implements (quadrature, finite differences, another solver, a plain loop) or with a property the
answer must have, prints a verdict that names the first failing case with expected vs got, and returns
``True``/``False``. ``list_checks()`` lists the available checks.

Example::

    from cda_lite.exercises import check
    check("ch2.tilt_linear_gaussian", my_tilt)

Every "implement a piece" exercise of the book calls its check in the solution (and the nbgrader
assignments, ``make assignments``, grade with the same checks); the cases live in
:mod:`cda_lite.exercise_cases` (Stable Diffusion rung: :mod:`cda_lite.exercise_cases_sd`). The student edition (solutions removed, starter cells added) is made
by ``tools/strip_solutions.py`` (``make student``).
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

from cda_lite import exercise_cases as _cases
from cda_lite import exercise_compare as _compare
from cda_lite import exercise_cases_sd as _cases_sd

__all__ = ["check", "list_checks", "CheckFailure", "CaseTimeout"]

CheckFailure = _compare.CheckFailure

#: Seconds each case may take before the check gives up on it (see :func:`check`).
DEFAULT_TIMEOUT = 60.0


@dataclass
class _Check:
    name: str
    description: str
    signature: str
    returns: str
    cases: Callable  # () -> list of (case name, runner(student_fn) raising CheckFailure)


_CHECKS = {name: _Check(name, *spec) for name, spec in {**_cases.BUILDERS, **_cases_sd.BUILDERS}.items()}


class CaseTimeout(Exception):
    """A case ran longer than its time limit."""


@contextmanager
def _time_limit(seconds: float | None):
    """Raise :class:`CaseTimeout` in the main thread after ``seconds`` (SIGALRM; no limit elsewhere)."""
    usable = (seconds is not None and seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def handler(signum, frame):
        raise CaseTimeout

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def list_checks(verbose: bool = True) -> dict[str, str]:
    """Names of the available checks with one-line descriptions (printed unless ``verbose=False``)."""
    if verbose:
        for c in _CHECKS.values():
            print(f"{c.name:28s} {c.description}\n{'':28s} signature: {c.signature} -> {c.returns}")
    return {c.name: c.description for c in _CHECKS.values()}


def check(name: str, student_fn: Callable, verbose: bool = True, timeout: float | None = DEFAULT_TIMEOUT) -> bool:
    """Run the check ``name`` on ``student_fn``; print a verdict and return True if every case passes.

    The verdict names the first failing case and shows expected vs got, the exception the student's
    function raised, what it returned when that was not what the check expects ("your function
    returned X, expected Y"), or that the case ran past ``timeout`` seconds (``None``: no limit;
    enforced in the main thread, where notebooks run).
    """
    if name not in _CHECKS:
        raise ValueError(f"name: unknown check {name!r}; available: {', '.join(_CHECKS)}")
    if not callable(student_fn):
        raise TypeError(f"student_fn: expected a function, got {type(student_fn).__name__}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout: expected a positive number of seconds or None, got {timeout!r}")
    c = _CHECKS[name]
    cases = c.cases()
    for i, (case, run) in enumerate(cases, 1):
        msg = None
        try:
            with _time_limit(timeout):
                run(student_fn)
        except CheckFailure as err:
            msg = str(err)
        except _compare.StudentRaised as err:
            e = err.original
            msg = f"your function raised {type(e).__name__}: {e}\n  (expected signature: {c.signature})"
        except CaseTimeout:
            msg = (f"your function did not finish within {timeout:g} s (an endless loop, or far more work than "
                   f"the case needs?)")
        except Exception:  # the checker could not use what the function returned
            msg = (f"your function returned {_compare.describe(_compare.LAST_RETURN[0])}, expected {c.returns}"
                   f"\n  (signature: {c.signature})")
        if msg is not None:
            if verbose:
                print(f"✗ {name}: case {i}/{len(cases)} failed: {case}\n  {msg}")
            return False
    if verbose:
        print(f"✓ {name}: all {len(cases)} cases passed")
    return True
