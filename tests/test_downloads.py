"""The .ipynb downloads of the book: no stream output printed twice (book/_ext/merge_streams_fix.py),
checked on MyST-NB's merge itself, on a tiny book built with the book's extensions, and by the
site check's detector (tools/site_check.py)."""
import copy
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, mod)  # dataclasses look their module up
    spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


fix = _load("merge_streams_fix", ROOT / "book" / "_ext" / "merge_streams_fix.py")
site_check = _load("site_check", ROOT / "tools" / "site_check.py")


def outputs():
    new = nbformat.v4.new_output
    return [new("stream", name="stdout", text="first\n"), new("stream", name="stderr", text="warning\n"),
            new("stream", name="stdout", text="second\n")]


def test_myst_nb_merge_mutates_and_the_fix_does_not():
    from myst_nb.core.utils import coalesce_streams

    raw = outputs()
    coalesce_streams(raw)
    assert raw[0]["text"] == "first\nsecond\n" and raw[2]["text"] == "second\n"  # the bug: "second" twice
    mine = outputs()
    merged = fix.coalesce_copies(mine)
    assert mine == outputs()  # the notebook's outputs are untouched
    assert [o["text"] for o in merged] == ["first\nsecond\n", "warning\n"]


def test_detector(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x")]
    nb.cells[0].outputs = outputs()
    path = tmp_path / "a.ipynb"
    nbformat.write(nb, path)
    assert site_check.duplicated_streams(path) == []
    from myst_nb.core.utils import coalesce_streams

    coalesce_streams(nb.cells[0].outputs)  # what MyST-NB 1.4 leaves in the notebook it writes
    nbformat.write(nb, path)
    assert site_check.duplicated_streams(path) == ["cell 0: 'second'"]
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="10\n"),
                           nbformat.v4.new_output("stream", name="stdout", text="0\n")]
    nbformat.write(nb, path)
    assert site_check.duplicated_streams(path) == []  # "0" ends "10" but not as a line of its own


CHAPTER = """\
---
jupytext:
  text_representation:
    format_name: myst
kernelspec:
  name: python3
  display_name: Python 3
---
# Streams

```{code-cell} ipython3
import sys
print("first")
sys.stdout.flush()
print("warning", file=sys.stderr)
sys.stderr.flush()
print("second")
```
"""


@pytest.mark.skipif(shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) is None,
                    reason="jupyter-book not installed")
def test_built_download_has_each_line_once(tmp_path):
    book = tmp_path / "book"
    (book / "_ext").mkdir(parents=True)
    for ext in ("merge_streams_fix.py", "notebook_downloads.py"):
        shutil.copy(ROOT / "book" / "_ext" / ext, book / "_ext" / ext)
    (book / "_config.yml").write_text(
        "title: t\nexecute:\n  execute_notebooks: force\nsphinx:\n  local_extensions:\n"
        "    merge_streams_fix: _ext\n    notebook_downloads: _ext\n  config:\n    nb_merge_streams: true\n"
        "launch_buttons:\n  thebe: false\n")
    (book / "_toc.yml").write_text("format: jb-book\nroot: streams\n")
    (book / "streams.md").write_text(CHAPTER)
    subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(book), "--quiet"], check=True,
                   capture_output=True)
    ipynb = book / "_build" / "html" / "_sources" / "streams.ipynb"
    nb = json.loads(ipynb.read_text())
    text = "".join("".join(o.get("text", "")) for o in nb["cells"][-1]["outputs"] if o["output_type"] == "stream")
    assert text.count("second") == 1 and text.count("first") == 1
    assert site_check.duplicated_streams(ipynb) == []
    html = (book / "_build" / "html" / "streams.html").read_text()
    assert html.count("second") == 2  # in the code, and once in the merged stream below it
