"""Serve MathJax 3 from the book's own ``_static/`` folder, so pages render maths offline.

Sphinx (and so Jupyter Book 1.x) loads MathJax from a CDN by default; without a network the
pages show raw TeX. The PyPI package ``django-static-mathjax`` ships MathJax 3's browser build
under ``mathjax/static/mathjax/es5/``. At config time this extension copies the self-contained
``tex-svg.js`` bundle, plus the component folders it may load lazily (TeX extensions for
``\\require``, the accessibility menu, fonts), into a staging folder next to the HTML output, adds
that folder to ``html_static_path`` and points ``mathjax_path`` at ``_static/mathjax/tex-svg.js``.

Registered in ``book/_config.yml`` under ``sphinx: local_extensions``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError

BUNDLE = "tex-svg.js"
# Folders of es5/ that tex-svg.js can fetch at run time (relative to its own location).
LAZY_DIRS = ("input", "output", "a11y", "ui", "sre", "adaptors")


def mathjax_es5_dir() -> Path:
    """The ``es5`` folder of the installed ``django-static-mathjax`` package."""
    try:
        import mathjax  # installed by django-static-mathjax
    except ImportError as err:  # pragma: no cover - configuration error
        raise ExtensionError(
            "offline_mathjax needs the PyPI package django-static-mathjax "
            "(pip install -e '.[book]')"
        ) from err
    roots = [Path(p) for p in getattr(mathjax, "__path__", [])]
    for root in roots:
        es5 = root / "static" / "mathjax" / "es5"
        if (es5 / BUNDLE).is_file():
            return es5
    raise ExtensionError(f"{BUNDLE} not found under mathjax/static/mathjax/es5 in {roots}")


def _stage(es5: Path, staging: Path) -> None:
    """Copy the bundle and its lazy components to ``staging/mathjax/`` (once per version)."""
    target = staging / "mathjax"
    stamp = target / ".source"
    source = f"{es5.resolve()} {(es5 / BUNDLE).stat().st_mtime_ns}"
    if stamp.is_file() and stamp.read_text() == source:
        return
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copy2(es5 / BUNDLE, target / BUNDLE)
    for name in LAZY_DIRS:
        if (es5 / name).is_dir():
            shutil.copytree(es5 / name, target / name)
    license_file = es5.parent / "LICENSE"
    if license_file.is_file():
        shutil.copy2(license_file, target / "LICENSE")
    stamp.write_text(source)  # dot-file: Sphinx does not copy it to _static


def on_config_inited(app: Sphinx, config: Config) -> None:
    staging = Path(app.outdir).parent / "_offline_mathjax"
    _stage(mathjax_es5_dir(), staging)
    static = list(config.html_static_path or [])
    if str(staging) not in static:
        static.append(str(staging))
    config.html_static_path = static
    # A path without "://" is resolved relative to _static/ by Sphinx.
    config.mathjax_path = f"mathjax/{BUNDLE}"


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", on_config_inited)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
