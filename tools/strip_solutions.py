"""Make the student edition of the book: a copy of book/ with every solution removed.

    python tools/strip_solutions.py book build/student/book [--execute off|force]

Copies SRC to DST (without build outputs), strips the solutions from every MyST chapter with
:func:`cda_lite.exercises.strip_solutions`, links DST/../cda_lite to the library (chapters
literalinclude ``../cda_lite/...``), adds ``language_info`` to the chapters' front matter (code
highlighting without execution) and sets ``execute_notebooks`` in DST/_config.yml. Used by
``make student``; jupytext and jupyter-book then turn DST into notebooks and HTML.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cda_lite.exercises import strip_solutions  # noqa: E402

IGNORE = shutil.ignore_patterns("_build", ".ipynb_checkpoints", "__pycache__", "*.ipynb")


LANGUAGE_INFO = "language_info:\n  name: python\n  pygments_lexer: ipython3\n"


def add_language_info(text: str) -> str:
    """Add ``language_info`` (Python) to a MyST notebook's front matter if it has none.

    An executed notebook gets it from the kernel; without execution (the student build's default)
    myst-nb needs it to highlight the code cells (else: "No source code lexer found").
    """
    if not text.startswith("---\n"):
        return text
    end = text.find("\n---\n", 3)
    if end < 0 or "\njupytext:" not in text[:end] or "\nlanguage_info:" in text[:end]:
        return text
    return text[:end + 1] + LANGUAGE_INFO + text[end + 1:]


def make_student_book(src: Path, dst: Path, execute: str | None = None) -> list[Path]:
    """Copy ``src`` to ``dst`` with solutions stripped; return the chapters that had solutions."""
    src, dst = Path(src), Path(dst)
    if not (src / "_config.yml").is_file():
        raise ValueError(f"src: {src} is not a Jupyter Book folder (no _config.yml)")
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=IGNORE)
    changed = []
    for md in sorted(dst.rglob("*.md")):
        text = md.read_text(encoding="utf-8")
        stripped = strip_solutions(text)
        if stripped != text:
            changed.append(md)
        stripped = add_language_info(stripped)
        if stripped != text:
            md.write_text(stripped, encoding="utf-8")
    lib = dst.parent / "cda_lite"
    if not lib.exists() and (src.resolve().parent / "cda_lite").is_dir():
        os.symlink(os.path.relpath(src.resolve().parent / "cda_lite", dst.parent.resolve()), lib)
    if execute is not None:
        cfg = dst / "_config.yml"
        text, n = re.subn(r"(?m)^(\s*execute_notebooks:\s*)\S+", rf"\g<1>{execute}", cfg.read_text(encoding="utf-8"))
        if n != 1:
            raise ValueError(f"execute: could not find execute_notebooks in {cfg}")
        cfg.write_text(text, encoding="utf-8")
    return changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--execute", choices=["off", "force", "auto", "cache"], default=None,
                    help="override execute_notebooks in the copy's _config.yml")
    args = ap.parse_args(argv)
    changed = make_student_book(args.src, args.dst, args.execute)
    print(f"student book in {args.dst}: solutions removed from {len(changed)} chapter(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
