"""Make the student edition of the book: a copy of book/ with every solution removed.

    python tools/strip_solutions.py book build/student/book [--execute off|force]

Copies SRC to DST (without build outputs), strips the solutions from every MyST chapter with
:func:`strip_solutions`, links DST/../cda_lite to the library (chapters
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

IGNORE = shutil.ignore_patterns("_build", ".ipynb_checkpoints", "__pycache__", "*.ipynb")


_FENCE_OPEN = re.compile(r"^\s*(?P<fence>`{3,}|:{3,})\{(?P<name>[a-z-]+)\}")


def _closes(line: str, fence: str) -> bool:
    """Does ``line`` close a directive opened with ``fence`` (same character, at least as long)?"""
    body = line.strip()
    return len(body) >= len(fence) and set(body) == {fence[0]}


def strip_solutions(text: str) -> str:
    """Remove every solution from a MyST markdown chapter (the student edition of the book).

    Removes gated ``{solution-start}`` … ``{solution-end}`` blocks (with the code cells between them)
    and ``{solution}`` directive blocks; exercises and every other cell are kept. Runs of blank lines
    left behind are collapsed to one. Raises ValueError if a solution block is never closed.
    """
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if m is None or m["name"] not in ("solution", "solution-start"):
            out.append(lines[i])
            i += 1
            continue
        start = i
        if m["name"] == "solution":
            fence = m["fence"]
            i += 1
            while i < len(lines) and not _closes(lines[i], fence):
                i += 1
        else:
            while i < len(lines):
                end = _FENCE_OPEN.match(lines[i])
                if end is not None and end["name"] == "solution-end":
                    break
                i += 1
            if i < len(lines):
                fence = end["fence"]
                i += 1
                while i < len(lines) and not _closes(lines[i], fence):
                    i += 1
        if i >= len(lines):
            raise ValueError(f"text: solution block opened on line {start + 1} is never closed")
        i += 1  # the closing fence
        while out and out[-1].strip() == "" and i < len(lines) and lines[i].strip() == "":
            i += 1  # no double blank lines where the block was
    return "".join(out)


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
