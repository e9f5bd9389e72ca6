"""Interactive explorers for the chapters (JupyterLab), built on plain drawing functions.

Each explorer comes in two parts:

- a **view**: a plain function that solves a problem exactly and draws it on a matplotlib axis.
  The chapters call it to draw the static figure that the rendered book shows, and tests call it;
- a **builder** ``*_explorer(...)`` that wraps the view in ipywidgets sliders. ipywidgets is
  imported inside the builder, so ``import cda_lite.widgets`` stays light (numpy + matplotlib).
  The builder returns an :class:`ipywidgets.interactive`; its ``.f`` is the plain callback the
  sliders call (a test can call it with keyword thresholds) and ``.result`` its last return value.

Explorers:

- alignment (chapter 3): :func:`alignment_view`, :func:`alignment_frame`, :func:`alignment_explorer`;
- composition weights → product (chapter 5): :func:`composition_view`, :func:`composition_frame`,
  :func:`composition_explorer`, static :func:`composition_figure`;
- DAS particle count → distance to the exact tilt (chapter 7): :func:`das_view`, :func:`das_frame`,
  :func:`das_explorer`, static :func:`das_figure`.
"""
from cda_lite.widgets.alignment import alignment_explorer, alignment_frame, alignment_view
from cda_lite.widgets.composition import (CompositionFrame, composition_explorer, composition_figure,
                                          composition_frame, composition_view)
from cda_lite.widgets.das import DASFrame, das_explorer, das_figure, das_frame, das_view

__all__ = ["alignment_view", "alignment_frame", "alignment_explorer",
           "CompositionFrame", "composition_view", "composition_frame", "composition_explorer", "composition_figure",
           "DASFrame", "das_view", "das_frame", "das_explorer", "das_figure"]
