"""What every ``python -m cda_lite...`` command shares: user errors are one line on stderr and exit
status 2, checked before any expensive work; tracebacks are for bugs only (or with ``--debug``).

- :class:`Parser`: an ``argparse.ArgumentParser`` whose usage errors are one line (exit 2).
- argument types: :func:`count` (an integer ≥ 1), :func:`finite_float`, :func:`positive_float`,
  :func:`existing_file`, :func:`existing_dir`;
- :func:`writable_dir` (and :func:`cda_lite.exact.problems.load_problem_file`, the right kind of
  problem file): checks a command runs before it builds anything;
- :func:`entry_point`: wraps a ``main(argv) -> int``; :class:`~cda_lite._checks.UserError`, any other
  ``ValueError`` (the library's bad-argument errors name the argument) and ``OSError`` (files, missing
  weights) become ``prog: error: <message>`` and exit 2; a run stopped on a non-finite value
  (:class:`~cda_lite.checkpoint.NonFiniteError`) is one line and exit 1.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import tempfile

from cda_lite._checks import InputTypeError, UserError

DEBUG_FLAG = "--debug"


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``prog: error: ...``, exit 2) and a ``--debug`` flag."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of any error")

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def count(text: str) -> int:
    """argparse type: an integer ≥ 1 (steps, samples, particles ...)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {v}")
    return v


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def existing_file(text: str) -> str:
    """argparse type: a path to an existing file."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a folder, expected a file")
    return text


def existing_dir(text: str) -> str:
    """argparse type: a path to an existing folder."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"no such folder: {text}")
    return text


def writable_dir(path: str, name: str = "--out") -> str:
    """Create ``path`` if needed and check that a file can be written there (before any work)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{name}: {path} exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UserError(f"{name}: cannot write to {path} ({e.strerror or e})") from None
    return path


def one_line(e: BaseException) -> str:
    """The error's message on one line."""
    text = " ".join(s.strip() for s in str(e).splitlines() if s.strip())
    return text or type(e).__name__


USER_ERRORS = (UserError, ValueError, InputTypeError, OSError)


def entry_point(prog: str):
    """Decorator for ``main(argv=None) -> int``: strips ``--debug`` and maps user errors to exit 2."""
    def wrap(main):
        @functools.wraps(main)
        def run(argv=None) -> int:
            argv = list(sys.argv[1:] if argv is None else argv)
            debug = DEBUG_FLAG in argv
            if debug:
                argv = [a for a in argv if a != DEBUG_FLAG]
            from cda_lite.errors import NonFiniteError
            try:
                return main(argv)
            except SystemExit as e:  # argparse (usage errors: 2, --help: 0): a status, also in process
                if e.code is None or isinstance(e.code, int):
                    return e.code or 0
                raise
            except NonFiniteError as e:
                if debug:
                    raise
                print(f"{prog}: stopped: {one_line(e)}", file=sys.stderr)
                return 1
            except USER_ERRORS as e:
                if debug:
                    raise
                print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
                return 2
        return run
    return wrap
