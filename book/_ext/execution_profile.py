"""Execution statistics support: the build's profile as a substitution, and a total run time.

- ``{{ cda_profile }}`` in any page is the ``CDA_PROFILE`` the book was executed with (``fast``
  unless ``make book PROFILE=full``), from :func:`cda_lite.profile`;
- the ``{cda-exec-total}`` directive becomes one sentence with the number of executed notebooks
  and their summed run time, from the same execution data (MyST-NB) as ``{nb-exec-table}``; it is
  refreshed whenever a notebook is executed again.

It also points MyST-NB's jupyter-cache (``execute_notebooks: cache``) at
``<repository>/build/jupyter_cache_<profile>`` (``…_<profile>_<device>`` when ``CDA_DEVICE`` is a GPU),
where ``make test`` stores every chapter it executed (``tests/test_chapters.py``): the build then
renders those outputs instead of running each chapter a second time, and runs only chapters that
changed since. The Makefile clears the cache when the library or the data are newer than it.

Used by ``book/execution_statistics.md``; registered under ``sphinx: local_extensions``.
"""
from __future__ import annotations

import os
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.docutils import SphinxDirective

METADATA_KEY = "has_cda_exec_total"


def build_profile() -> str:
    """The profile the chapters run under: :func:`cda_lite.profile` (``CDA_PROFILE``, default fast)."""
    try:
        from cda_lite import profile
    except ImportError:  # pragma: no cover - the book always has cda_lite installed
        return os.environ.get("CDA_PROFILE", "fast").strip().lower() or "fast"
    return profile()


def cache_dir(book_dir: Path) -> Path:
    """The jupyter-cache of this profile (and device) for the book in ``book_dir``."""
    name = f"jupyter_cache_{build_profile()}"
    device = os.environ.get("CDA_DEVICE", "cpu").strip().lower() or "cpu"
    if device != "cpu":
        name += "_" + device.replace(":", "")
    return Path(book_dir).resolve().parent / "build" / name


def on_config_inited(app: Sphinx, config: Config) -> None:
    subs = dict(config.myst_substitutions or {})
    subs.setdefault("cda_profile", build_profile())
    config.myst_substitutions = subs
    if getattr(config, "nb_execution_mode", None) == "cache":
        config.nb_execution_cache_path = str(cache_dir(app.confdir))


class ExecTotalNode(nodes.General, nodes.Element):
    """Placeholder, replaced once all notebooks have run."""


class ExecTotal(SphinxDirective):
    has_content = False

    def run(self):
        from myst_nb.sphinx_ import NbMetadataCollector

        # the same flag as {nb-exec-table}: the page is rewritten after any new execution
        NbMetadataCollector.set_doc_data(self.env, self.env.docname, "has_exec_table", True)
        return [ExecTotalNode()]


def exec_summary(env) -> tuple[int, float, int]:
    """(notebooks executed, summed run time in s, notebooks that failed)."""
    from myst_nb.sphinx_ import NbMetadataCollector

    count, total, failed = 0, 0.0, 0
    for data in NbMetadataCollector.get_doc_data(env).values():
        exec_data = data.get("exec_data")
        if not exec_data:
            continue
        count += 1
        total += exec_data.get("runtime") or 0.0
        failed += exec_data.get("succeeded") is False
    return count, total, failed


class ExecTotalTransform(SphinxPostTransform):
    default_priority = 8

    def run(self, **kwargs) -> None:
        for node in list(self.document.findall(ExecTotalNode)):
            count, total, failed = exec_summary(self.env)
            text = (f"{count} notebooks executed under the {build_profile()} profile in "
                    f"{total:.0f} s ({total / 60:.1f} min) in total")
            text += f"; {failed} failed." if failed else "; all succeeded."
            node.replace_self(nodes.paragraph(text=text))


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", on_config_inited, priority=200)
    app.add_node(ExecTotalNode)
    app.add_directive("cda-exec-total", ExecTotal)
    app.add_post_transform(ExecTotalTransform)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
