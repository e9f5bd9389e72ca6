"""Where the repository's ``data/`` folder is, for chapters and commands that read problem files.

Chapters run with ``book/`` as working directory (Jupyter Book, ``make test``) but a reader may
start Jupyter anywhere, so paths are found from the package's own location first (a checkout or an
editable install), then from the current directory and its parents. Used by chapter 3 and the
appendix "Problem files".
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["repo_root", "data_path"]


def _candidates():
    here = Path(__file__).resolve().parent.parent  # the folder that holds cda_lite/
    cwd = Path.cwd().resolve()
    return [here, cwd, *cwd.parents]


def repo_root() -> Path:
    """The repository root: the first candidate folder (package parent, then CWD and its parents)
    that holds a ``data/`` folder. Raises FileNotFoundError when none does."""
    for folder in _candidates():
        if (folder / "data").is_dir():
            return folder
    raise FileNotFoundError(
        "could not find the repository's data/ folder next to the cda_lite package or in the current "
        "directory or its parents; run from inside the cda_lite checkout")


def data_path(*parts) -> Path:
    """``repo_root()/data/<parts...>``, e.g. ``data_path("problems", "fig1_and.json")``. The path
    need not exist (commands also write there)."""
    for p in parts:
        if not isinstance(p, (str, Path)) or str(p) == "":
            raise ValueError(f"parts: expected non-empty path components (str or Path), got {p!r}")
    return repo_root().joinpath("data", *map(str, parts))
