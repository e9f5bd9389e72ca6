"""Keep the downloadable notebooks free of duplicated stream output.

With ``nb_merge_streams: true``, MyST-NB 1.4 merges a cell's stdout/stderr chunks for display with
``coalesce_streams``, which appends the later chunks' text to the *first chunk object itself*: the
notebook it then writes to ``_build/jupyter_execute/`` (offered in the page's download menu by
``notebook_downloads``) holds the merged text in the first output and the later chunks again after
it, so their lines appear twice. This extension makes the merge work on copies of the outputs: the
page shows the merged stream, and the written notebook keeps its outputs as the kernel sent them.

Registered in ``book/_config.yml`` under ``sphinx: local_extensions``.
"""
from __future__ import annotations

import copy

from sphinx.application import Sphinx


def coalesce_copies(outputs):
    """MyST-NB's ``coalesce_streams`` on a deep copy of ``outputs`` (the notebook is left alone)."""
    from myst_nb.core.utils import coalesce_streams

    return coalesce_streams(copy.deepcopy(list(outputs or [])))


def setup(app: Sphinx) -> dict:
    import myst_nb.core.render as render

    if getattr(render.coalesce_streams, "__name__", "") != "coalesce_copies":
        render.coalesce_streams = coalesce_copies
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
