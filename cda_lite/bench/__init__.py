"""Benchmark commands: ``python -m cda_lite.bench SUBCOMMAND [options] [--json]``.

Each subcommand is a module with ``add_arguments(parser)`` and ``run(args) -> dict`` (its docstring's
first line is the help text; an optional ``format(result) -> str`` renders the result for people).
``--json`` prints the result as one JSON object. Adding a subcommand: write the module and add one
line to :data:`SUBCOMMANDS`. The paper's 2-D figures: ``python -m cda_lite.bench.reproduce fig1|fig2``
(:mod:`cda_lite.bench.reproduce`). This package is the library's one home for command-line and figure code.
"""
from __future__ import annotations

SUBCOMMANDS: dict[str, str] = {
    "align2d": "cda_lite.bench.align2d",  # Chapter 4: Algorithm 1 on a 2-D problem vs the exact λ*
    "rivals2d": "cda_lite.bench.rivals2d",  # Chapter 7: DAS, Diffusion Blend, MSDDA, guidance vs the exact tilt
    "compose2d": "cda_lite.bench.compose2d",  # Chapters 5-6: AND (Algorithms 2, 3) and OR composition vs exact
    "images": "cda_lite.bench.images",
    "sweep": "cda_lite.bench.sweep",  # Chapters 4-5: learned vs exact on the first N random problems  # Chapter 9: constraints, AND composition and the rivals on 8×8 digits
}

__all__ = ["SUBCOMMANDS"]
