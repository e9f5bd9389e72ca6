"""Make an nbgrader course folder from the book's chapters (``make assignments``).

    python tools/make_assignments.py book build/assignments [--chapters 03 07] [--no-release]

Each MyST chapter with exercises becomes the nbgrader *source* notebook
``COURSE/source/chNN/chNN.ipynb``: the whole chapter (its code builds what the exercises use),
with every exercise as a plain markdown heading "Exercise N.k" (numbered within the chapter, with
its ★ points), every solution region — the code cells and prose between ``{solution-start}`` and
``{solution-end}``, and ``{solution}`` blocks — turned into nbgrader solution cells (code inside
``### BEGIN SOLUTION`` / ``### END SOLUTION``), and every ``check("name", fn)`` call of a solution
moved into its own locked, autograded test cell worth the exercise's points (★ = 1, ★★ = 2,
★★★ = 3) that runs :func:`cda_lite.exercises.check`. Then ``nbgrader generate_assignment`` writes
the student version to ``COURSE/release/`` (solutions replaced by ``raise NotImplementedError()``).

Grade with the usual nbgrader commands in COURSE (``nbgrader collect`` / ``autograde`` /
``generate_feedback``); ``COURSE/nbgrader_config.py`` gives each cell up to 10 minutes.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cda_lite.exercises import _CHECKS  # noqa: E402

FENCE = re.compile(r"^\s*(?P<fence>`{3,}|:{3,})\{(?P<name>[a-z-]+)\}\s*(?P<arg>.*)$")
CHECK_CALL = re.compile(r"""^\s*(?:assert\s+)?check\(\s*["'](?P<name>[\w.]+)["']\s*,\s*(?P<fn>\w+)\s*\)\s*$""")
CHECK_IMPORT = re.compile(r"^\s*from cda_lite\.exercises import check\s*$")
STARS = re.compile(r"★+")

CONFIG = '''\
# nbgrader configuration of the cda_lite course (written by tools/make_assignments.py).
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "cda_lite"
c.CourseDirectory.root = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}
c.ExecutePreprocessor.timeout = 600   # seconds per cell: chapters train small models
c.Execute.timeout = 600
c.Execute.interrupt_on_timeout = True
c.ClearOutput.enabled = True
'''


def _md(source: str, **nbgrader) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(source.strip("\n"))
    if nbgrader:
        cell.metadata["nbgrader"] = {"schema_version": 3, **nbgrader}
    return cell


def _code(source: str, **nbgrader) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source.strip("\n"))
    if nbgrader:
        cell.metadata["nbgrader"] = {"schema_version": 3, **nbgrader}
    return cell


class _State:
    def __init__(self, chapter: int):
        self.chapter = chapter
        self.n_exercise = 0
        self.label = None         # label of the current exercise
        self.points = 1           # ★ count of the current exercise
        self.in_solution = False  # inside {solution-start} … {solution-end}
        self.n_cells = 0


def _closes(line: str, fence: str) -> bool:
    body = line.strip()
    return len(body) >= len(fence) and set(body) == {fence[0]}


def _split_markdown(text: str, st: _State) -> list[nbformat.NotebookNode]:
    """Split one markdown cell at the exercise/solution directives into plain and solution cells."""
    lines = text.splitlines()
    out: list[nbformat.NotebookNode] = []
    buf: list[str] = []

    def flush(solution: bool):
        body = "\n".join(buf).strip("\n")
        buf.clear()
        if not body.strip():
            return
        if solution:
            st.n_cells += 1
            out.append(_md(body, solution=True, grade=True, locked=False, points=0,
                           grade_id=f"{st.label or 'ex'}-answer-{st.n_cells}"))
        else:
            out.append(_md(body))

    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        name = m["name"] if m else None
        if name in ("exercise-start", "exercise"):
            flush(st.in_solution)
            fence, title, opts, body = m["fence"], m["arg"].strip(), {}, []
            i += 1
            while i < len(lines) and lines[i].startswith(":") and not _closes(lines[i], fence):
                key, _, value = lines[i][1:].partition(":")
                opts[key.strip()] = value.strip()
                i += 1
            if name == "exercise-start":  # options only; the text follows the closing fence
                i += 1
            else:
                while i < len(lines) and not _closes(lines[i], fence):
                    body.append(lines[i])
                    i += 1
                i += 1
            st.n_exercise += 1
            st.label = opts.get("label", f"ch{st.chapter}-ex{st.n_exercise}")
            heading = f"### Exercise {st.chapter}.{st.n_exercise}" + (f": {title}" if title else "")
            buf.append(heading)
            buf.extend(body)
            continue
        if name == "exercise-end":
            i += 1
            while i < len(lines) and not _closes(lines[i], m["fence"]):
                i += 1
            i += 1
            stars = STARS.search("\n".join(buf))
            st.points = len(stars.group(0)) if stars else 1
            flush(False)
            continue
        if name == "solution-start":
            flush(False)
            i += 1
            while i < len(lines) and not _closes(lines[i], m["fence"]):  # its options
                i += 1
            i += 1
            st.in_solution = True
            continue
        if name == "solution-end":
            flush(True)
            i += 1
            while i < len(lines) and not _closes(lines[i], m["fence"]):
                i += 1
            i += 1
            st.in_solution = False
            continue
        if name == "solution":  # a one-block solution: prose only
            flush(st.in_solution)
            i += 1
            while i < len(lines) and lines[i].startswith(":") and not _closes(lines[i], m["fence"]):
                i += 1
            while i < len(lines) and not _closes(lines[i], m["fence"]):
                buf.append(lines[i])
                i += 1
            i += 1
            flush(True)
            continue
        buf.append(lines[i])
        i += 1
    flush(st.in_solution)
    return out


def _solution_code(source: str, st: _State) -> list[nbformat.NotebookNode]:
    """A solution code cell → a solution cell (+ one autograded test cell per check call)."""
    keep, checks = [], []
    for line in source.splitlines():
        m = CHECK_CALL.match(line)
        if m:
            checks.append((m["name"], m["fn"]))
        elif not CHECK_IMPORT.match(line):
            keep.append(line)
    body = "\n".join(keep).strip("\n")
    st.n_cells += 1
    hints = []
    for name, fn in checks:
        if name not in _CHECKS:
            raise ValueError(f"source: check({name!r}) in exercise {st.label} is not a known check")
        c = _CHECKS[name]
        hints.append(f"# Define {fn}: {c.signature.replace('fn(', fn + '(', 1)} -> {c.returns}")
        hints.append(f"# The test cell below grades it with check({name!r}, {fn}) ({st.points} points).")
    cells = [_code("\n".join(hints + ["### BEGIN SOLUTION", body, "### END SOLUTION"]), solution=True, grade=False,
                   locked=False, grade_id=f"{st.label}-solution-{st.n_cells}")]
    for name, fn in checks:
        cells.append(_code(f'from cda_lite.exercises import check\n\nassert check("{name}", {fn})', solution=False,
                           grade=True, locked=True, points=st.points, grade_id=f"{st.label}-check-{name.replace('.', '_')}"))
    return cells


def chapter_to_source(path: Path) -> tuple[nbformat.NotebookNode, int]:
    """The nbgrader source notebook of one chapter, and its total points."""
    nb = jupytext.read(path)
    m = re.match(r"(\d+)_", path.name)
    st = _State(int(m.group(1)) if m else 0)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cells.extend(_split_markdown(cell.source, st))
        elif cell.cell_type == "code" and st.in_solution:
            cells.extend(_solution_code(cell.source, st))
        else:
            cells.append(cell)
    nb.cells = cells
    nb.metadata.pop("jupytext", None)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    points = sum(c.metadata.get("nbgrader", {}).get("points", 0) for c in cells)
    return nb, points


def make_course(book: Path, course: Path, chapters: list[str] | None = None, release: bool = True) -> dict:
    """Write COURSE/source/chNN/chNN.ipynb for each chapter with exercises (and release/ unless told not)."""
    book, course = Path(book), Path(course)
    if not (book / "_config.yml").is_file():
        raise ValueError(f"book: {book} is not a Jupyter Book folder (no _config.yml)")
    files = sorted(p for p in book.glob("[0-9][0-9]_*.md") if "{exercise-start}" in p.read_text(encoding="utf-8"))
    if chapters:
        files = [p for p in files if any(p.name.startswith(c) for c in chapters)]
        if not files:
            raise ValueError(f"chapters: no chapter with exercises matches {chapters}")
    course.mkdir(parents=True, exist_ok=True)
    (course / "nbgrader_config.py").write_text(CONFIG, encoding="utf-8")
    made = {}
    for path in files:
        nb, points = chapter_to_source(path)
        name = f"ch{path.name[:2]}"
        dst = course / "source" / name / f"{name}.ipynb"
        dst.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, dst)
        made[name] = points
        if release:
            nbgrader(["generate_assignment", name, "--force"], course)
    return made


def nbgrader(args: list[str], course: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``course`` with this Python's bin/ first on PATH (nbgrader calls alembic)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("JUPYTER_PREFER_ENV_PATH", "1")
    return subprocess.run([sys.executable, "-m", "nbgrader", *args, "--log-level=WARN"], cwd=course, env=env,
                          check=check, capture_output=not check, text=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("book", type=Path)
    ap.add_argument("course", type=Path)
    ap.add_argument("--chapters", nargs="*", help="chapter number prefixes, e.g. 03 07 (default: all)")
    ap.add_argument("--no-release", action="store_true", help="write source/ only")
    args = ap.parse_args(argv)
    try:
        made = make_course(args.book, args.course, args.chapters, release=not args.no_release)
    except ValueError as err:
        print(f"make_assignments: {err}", file=sys.stderr)
        return 2
    for name, points in made.items():
        print(f"{name}: {points} point{'' if points == 1 else 's'} (autograded)")
    print(f"nbgrader course in {args.course} ({'source + release' if not args.no_release else 'source'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
