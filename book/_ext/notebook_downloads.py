"""Offer every chapter as a Jupyter notebook (``.ipynb``) from the page's download button.

sphinx-book-theme's download menu lists ``.ipynb`` only when a launch button (Binder, Colab, ...)
is configured, which this offline book turns off; it then offers the MyST ``.md`` source alone.
MyST-NB writes each notebook page, executed and with its outputs, to ``_build/jupyter_execute/``
(``execute_notebooks: off`` writes it without outputs, e.g. the student edition). This extension
copies that notebook to ``_sources/<page>.ipynb`` in the HTML output and sets the theme's
``ipynb_source`` so the menu offers it next to ``.md``. Nothing is fetched from the network.

Registered in ``book/_config.yml`` under ``sphinx: local_extensions``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx


def executed_notebook(app: Sphinx, pagename: str) -> Path | None:
    """The notebook MyST-NB wrote for ``pagename`` (``<outdir>/../jupyter_execute/<page>.ipynb``)."""
    path = Path(app.outdir).parent.joinpath("jupyter_execute", *pagename.split("/")).with_suffix(".ipynb")
    return path if path.is_file() else None


def add_notebook_download(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    if app.builder.format != "html" or doctree is None:
        return
    source = executed_notebook(app, pagename)
    if source is None:
        return
    target = Path(app.outdir).joinpath("_sources", *pagename.split("/")).with_suffix(".ipynb")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    context["ipynb_source"] = pagename + ".ipynb"


def setup(app: Sphinx) -> dict:
    # before sphinx-book-theme builds its header buttons (priority 501)
    app.connect("html-page-context", add_notebook_download, priority=450)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
