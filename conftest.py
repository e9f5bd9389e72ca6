"""Repository-wide pytest set-up for chapters run as notebook tests (nbval), by hand.

(`make test` now runs the chapters with tests/test_chapters.py, which stores them for the book
build; this set-up still serves `pytest --nbval-lax` on converted chapters.)

Run by hand, each MyST chapter ``book/X.md`` converted to ``build/nbtest/X.ipynb`` runs with
``--nbval-lax``. Two adjustments make that run match the book build (`make book`):

- the kernel's working directory is ``book/`` (as in Jupyter Book), not ``build/nbtest/``, so
  relative paths in chapters mean the same thing in both;
- cells tagged ``skip-execution`` (which Jupyter Book does not run) are skipped by nbval too;
- a kernel that dies while starting is started again (with pytest-xdist, two kernels starting at
  the same moment can race for the same TCP ports; this was seen once in many runs).
"""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
BOOK = ROOT / "book"
NBTEST = ROOT / "build" / "nbtest"

try:
    import nbval.plugin as _nbval_plugin
except ImportError:  # nbval not installed: plain unit tests only
    _nbval_plugin = None

if _nbval_plugin is not None and not getattr(_nbval_plugin, "_cda_book_cwd", False):
    _RunningKernel = _nbval_plugin.RunningKernel

    class _BookCwdKernel(_RunningKernel):
        def __init__(self, kernel_name, cwd=None, startup_timeout=60, attempts=3):
            if cwd is not None and Path(cwd).resolve() == NBTEST:
                cwd = str(BOOK)
            for attempt in range(1, attempts + 1):
                try:
                    super().__init__(kernel_name, cwd=cwd, startup_timeout=startup_timeout)
                    return
                except RuntimeError as err:  # "Kernel died before replying to kernel_info"
                    if attempt == attempts or "died" not in str(err):
                        raise

    _nbval_plugin.RunningKernel = _BookCwdKernel
    _nbval_plugin._cda_book_cwd = True


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="cell tagged skip-execution (not run by the book either)")
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is None:
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        if "skip-execution" in tags:
            item.add_marker(skip)
