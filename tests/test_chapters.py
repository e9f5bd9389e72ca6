"""Every chapter runs from top to bottom (what nbval --nbval-lax checked before), and its executed
notebook goes into the book's jupyter-cache, so `make book` renders it without running it again.

Enabled by ``make test``, which sets ``CDA_CHAPTER_CACHE`` to the cache of the current profile
(``build/jupyter_cache_<profile>``; ``book/_config.yml`` builds with ``execute_notebooks: cache``
from the link ``build/jupyter_cache``). Without the variable these tests are skipped: a plain
``pytest tests`` stays quick. A cell tagged ``raises-exception`` may raise; any other error fails
the chapter with the cell's traceback.

The notebook is read with MyST-NB's own reader, so its code cells hash exactly as in the build.
"""
import fcntl
import os
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
CHAPTERS = sorted(p.name for p in BOOK.glob("*.md") if re.search(r"(?m)^jupytext:", p.read_text(encoding="utf-8")))
CACHE = os.environ.get("CDA_CHAPTER_CACHE")


def read_chapter(path: Path):
    """The notebook MyST-NB builds from a MyST chapter (same reader, same cells, same hash)."""
    from myst_nb.core.read import read_myst_markdown_notebook

    return read_myst_markdown_notebook(path.read_text(encoding="utf-8"), add_source_map=True, path=path)


def store(cache_dir: Path, nb, path: Path, seconds: float) -> None:
    """Add an executed notebook to the jupyter-cache at ``cache_dir`` (one writer at a time)."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir.parent / f".{cache_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cache = get_cache(str(cache_dir))
        cache.cache_notebook_bundle(CacheBundleIn(nb, str(path), data={"execution_seconds": seconds}),
                                    check_validity=False, overwrite=True)


@pytest.mark.skipif(not CACHE, reason="chapters run under `make test` (CDA_CHAPTER_CACHE)")
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter(chapter):
    from jupyter_cache.executors.utils import single_nb_execution

    path = BOOK / chapter
    nb = read_chapter(path)
    for attempt in range(2):  # a kernel that dies while starting (two workers racing for ports) gets one retry
        result = single_nb_execution(nb, cwd=str(BOOK), allow_errors=False, timeout=600, meta_override=True,
                                     record_timing=True)
        if result.err is None or "DeadKernel" not in type(result.err).__name__ or attempt:
            break
        nb = read_chapter(path)
    log_slow_cells(Path(CACHE).parent / "chapter_cell_times.jsonl", chapter, nb, result.time)
    if result.err is not None:
        pytest.fail(f"{chapter} failed:\n{result.exc_string}", pytrace=False)
    store(Path(CACHE), nb, path, result.time)


def log_slow_cells(log: Path, chapter: str, nb, seconds: float, slow: float = 30.0) -> None:
    """Append the chapter's time and its cells slower than ``slow`` seconds (busy → reply → idle, from
    nbclient's record_timing) to ``log``: where a chapter that stalls spent its time. (Chapter 5 took
    ~600 s more than usual now and then: nbclient kept waiting after the kernel had finished the cell
    that displays a live ipywidgets ``interactive``, cf. jupyter/nbclient#312; such cells are now tagged
    ``skip-execution``.)"""
    import datetime
    import json

    def t(cell, key):
        v = cell.metadata.get("execution", {}).get(key)
        return datetime.datetime.fromisoformat(v.replace("Z", "+00:00")) if v else None

    cells = []
    for i, cell in enumerate(nb.cells):
        busy, reply, idle = (t(cell, k) for k in ("iopub.status.busy", "shell.execute_reply", "iopub.status.idle"))
        if cell.cell_type == "code" and busy and reply:
            span = ((idle or reply) - busy).total_seconds()
            if span > slow:
                cells.append({"cell": i, "to_reply": (reply - busy).total_seconds(), "to_idle": span,
                              "source": cell.source[:80]})
        cell.metadata.pop("execution", None)  # keep the cached notebook as it was
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(json.dumps({"chapter": chapter, "seconds": seconds, "slow_cells": cells,
                            "when": datetime.datetime.now().isoformat(timespec="seconds")}) + "\n")


def test_cached_notebook_matches_the_build(tmp_path):
    """A notebook stored by `store` is found by the lookup MyST-NB's cache mode makes."""
    from jupyter_cache import get_cache
    from myst_nb.core.execute.cache import NotebookClientCache  # noqa: F401  (the client `make book` uses)

    path = tmp_path / "ch.md"
    path.write_text("---\njupytext:\n  text_representation:\n    format_name: myst\nkernelspec:\n  name: python3\n"
                    "  display_name: Python 3\n---\n# T\n\n```{code-cell} ipython3\nprint(1 + 1)\n```\n")
    nb = read_chapter(path)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="2\n")]
    store(tmp_path / "cache", nb, path, 0.1)
    again = read_chapter(path)  # what the build reads: no outputs
    cache = get_cache(str(tmp_path / "cache"))
    _, merged = cache.merge_match_into_notebook(again)
    assert merged.cells[1].outputs[0]["text"] == "2\n"
    path.write_text(path.read_text().replace("1 + 1", "1 + 2"))
    with pytest.raises(KeyError):
        cache.match_cache_notebook(read_chapter(path))  # an edited chapter is executed again
