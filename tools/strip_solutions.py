"""Make the student edition of the book: a copy of book/ with every solution removed.

    python tools/strip_solutions.py book build/student/book [--execute off|force]

Copies SRC to DST (without build outputs), adds a starter code cell under every exercise (the
function to write, with its signature and its ``check``, for implement-a-piece exercises), strips
the solutions from every MyST chapter with :func:`strip_solutions`, links DST/../cda_lite to the library (chapters
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
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cda_lite.exercises import _CHECKS  # noqa: E402

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


_EX_START = re.compile(r"^(`{3,}|:{3,})\{exercise-start\}[^\n]*\n(?::[^\n]*\n)*?:label:\s*(?P<label>\S+)[^\n]*\n(?::[^\n]*\n)*\1\n",
                       re.M)
_EX_END = re.compile(r"^(`{3,}|:{3,})\{exercise-end\}[^\n]*\n\1[ \t]*\n", re.M)
_CHECK = re.compile(r"""^\s*(?:assert\s+)?check\(\s*["'](?P<name>[\w.]+)["']\s*,\s*(?P<fn>\w+)\s*\)""", re.M)


def starter_cell(label: str, solution: str) -> str:
    """The code cell a student starts from: the function to write (signature as in the solution) and
    its check, or a place for the answer."""
    m = re.fullmatch(r"ch(\d+)-ex(\d+)", label)
    title = f"Exercise {m[1]}.{m[2]}" if m else label
    lines = [f"# {title}: your answer (a starter cell of the student edition)."]
    for m in _CHECK.finditer(solution):
        name, fn = m["name"], m["fn"]
        c = _CHECKS[name]
        d = re.search(rf"^def {fn}\((?P<args>[^)]*)\)", solution, re.M)
        args = d["args"] if d else ", ".join(p.split()[0] for p in c.signature[3:].split(")")[0].split(", "))
        doc = textwrap.wrap(f"{c.description[0].upper()}{c.description[1:]}; returns {c.returns}.", 80)
        lines += ["", "", f"def {fn}({args}):", *[f"    # {line}" for line in doc],
                  "    raise NotImplementedError  # your code here", "", "",
                  "# Once it works, test it:", "# from cda_lite.exercises import check",
                  f'# check("{name}", {fn})']
    return "```{code-cell} ipython3\n" + "\n".join(lines) + "\n```\n"


def add_starter_cells(text: str) -> str:
    """After every exercise of a MyST chapter, a starter code cell (see :func:`starter_cell`)."""
    out, pos = [], 0
    for start in _EX_START.finditer(text):
        end = _EX_END.search(text, start.end())
        if end is None:
            raise ValueError(f"text: exercise {start['label']} has no exercise-end")
        label = start["label"]
        sol = re.search(rf"\{{solution-start\}}\s+{re.escape(label)}\b(?P<body>.*?)\{{solution-end\}}", text[end.end():],
                        re.S)
        plain = re.search(rf"\{{solution\}}\s+{re.escape(label)}\b(?P<body>.*?)\n(`{{3,}}|:{{3,}})\n", text[end.end():], re.S)
        body = sol["body"] if sol else (plain["body"] if plain else "")
        out += [text[pos:end.end()], "\n", starter_cell(label, body)]
        pos = end.end()
    out.append(text[pos:])
    return "".join(out)


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
        stripped = strip_solutions(add_starter_cells(text) if "{exercise-start}" in text else text)
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
