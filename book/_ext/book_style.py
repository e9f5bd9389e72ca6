"""A few lines of CSS for the book (``_ext/static/cda_book.css``), served from the book itself.

Registered in ``book/_config.yml`` under ``sphinx: local_extensions``.
"""
from __future__ import annotations

from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config

STATIC = Path(__file__).resolve().parent / "static"


def on_config_inited(app: Sphinx, config: Config) -> None:
    static = list(config.html_static_path or [])
    if str(STATIC) not in static:
        static.append(str(STATIC))
    config.html_static_path = static


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", on_config_inited)
    app.add_css_file("cda_book.css")
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
