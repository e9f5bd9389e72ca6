"""nbgrader round trip of tools/make_assignments.py: source → release, reference solutions get full
marks, a wrong submission gets partial marks with the checker's message in its feedback.

The round trip runs on a two-exercise chapter written here (seconds, no model training); every real
chapter is converted to its nbgrader source (no execution) and checked for one autograded test cell
per check() call of its solutions.
"""
import importlib.util
import re
import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("make_assignments", ROOT / "tools" / "make_assignments.py")
ma = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ma)

CHAPTER = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  name: python3
  display_name: Python 3
---
# A tiny chapter

```{code-cell} ipython3
import numpy as np
```

## Exercises

```{exercise-start}
:label: ch12-ex1
```
★★ Write one projected step on the simplex as `simplex_step(lam, kls, lr)`.
```{exercise-end}
```

```{solution-start} ch12-ex1
:class: dropdown
```
Project $\\lambda + \\eta\\,\\mathrm{KL}$ onto the simplex.
```{code-cell} ipython3
from cda_lite.exercises import check


def simplex_step(lam, kls, lr):
    v = lam + lr * np.asarray(kls)
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.flatnonzero(u - css / np.arange(1, len(v) + 1) > 0)[-1]
    return np.maximum(v - css[k] / (k + 1), 0.0)


assert check("ch11.simplex_step", simplex_step)
```
```{solution-end}
```

```{exercise-start}
:label: ch12-ex2
```
★ The warm-up dual step of Algorithm 1 as `dual_step(lam, slack, k, lr, warmup)`.
```{exercise-end}
```

```{solution-start} ch12-ex2
:class: dropdown
```
```{code-cell} ipython3
def dual_step(lam, slack, k, lr, warmup):
    ramp = min(1.0, (k + 1) / warmup) if warmup else 1.0
    return np.maximum(lam - ramp * lr * slack, 0.0)


assert check("ch4.warmup_dual_step", dual_step)
```
```{solution-end}
```

```{exercise} A question without code
:label: ch12-ex3
Why?
```

```{solution} ch12-ex3
:class: dropdown
Because.
```
"""

WRONG_STEP = """\
def simplex_step(lam, kls, lr):  # clip and renormalise: not the Euclidean projection
    v = np.maximum(lam + lr * np.asarray(kls), 0)
    return v / v.sum()
"""


def test_chapter_to_source_cells(tmp_path):
    (tmp_path / "12_tiny.md").write_text(CHAPTER)
    nb, points = ma.chapter_to_source(tmp_path / "12_tiny.md")
    assert points == 3  # ★★ + ★
    text = "\n".join(c.source for c in nb.cells)
    assert "{exercise" not in text and "{solution" not in text  # no raw directive left
    assert "### Exercise 12.1" in text and "### Exercise 12.2" in text and "### Exercise 12.3: A question" in text
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"]
    assert [c.metadata.nbgrader.points for c in graded] == [2, 1]
    assert 'assert check("ch11.simplex_step", simplex_step)' in graded[0].source
    assert all(c.metadata.nbgrader.locked for c in graded)
    sols = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"]
    assert len(sols) == 2
    for c in sols:
        assert "### BEGIN SOLUTION" in c.source and "### END SOLUTION" in c.source
        assert "check(" not in c.source.split("### BEGIN SOLUTION")[1]  # the check moved to the test cell
    assert "Because." in text and "Project $" in text  # solution prose kept, as answer cells


@pytest.mark.parametrize("chapter", sorted(p.name for p in (ROOT / "book").glob("[0-9][0-9]_*.md")
                                           if "{exercise-start}" in p.read_text()))
def test_every_chapter_converts(chapter):
    src = (ROOT / "book" / chapter).read_text()
    nb, points = ma.chapter_to_source(ROOT / "book" / chapter)
    calls = re.findall(r'^\s*(?:assert\s+)?check\("([\w.]+)"', src[src.index("{exercise-start}"):], re.M)
    tests = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"]
    assert len(tests) == len(calls)
    text = "\n".join(c.source for c in nb.cells)
    assert "{exercise" not in text and "{solution" not in text
    n = int(chapter[:2])
    assert f"### Exercise {n}.1" in text and f"### Exercise {n}.4" in text


def _score(course, student):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "cda_lite") as gb:
        sub = gb.find_submission("ch12", student)
        return sub.score, sub.max_score


def test_nbgrader_round_trip(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    (book / "_config.yml").write_text("title: tiny\n")
    (book / "12_tiny.md").write_text(CHAPTER)
    course = tmp_path / "course"
    made = ma.make_course(book, course)
    assert made == {"ch12": 3}
    release = nbformat.read(course / "release" / "ch12" / "ch12.ipynb", 4)
    text = "\n".join(c.source for c in release.cells)
    assert "raise NotImplementedError()" in text and "np.sort(v)" not in text and "Because." not in text
    assert 'assert check("ch11.simplex_step", simplex_step)' in text

    # The reference solutions (the source notebook) and a submission with one wrong function.
    for student, wrong in (("reference", False), ("wrong", True)):
        nb = nbformat.read(course / "source" / "ch12" / "ch12.ipynb", 4)
        if wrong:
            cell = next(c for c in nb.cells if "def simplex_step" in c.source)
            cell.source = WRONG_STEP
        dst = course / "submitted" / student / "ch12"
        dst.mkdir(parents=True)
        nbformat.write(nb, dst / "ch12.ipynb")
    ma.nbgrader(["autograde", "ch12", "--create", "--force"], course)
    ma.nbgrader(["generate_feedback", "ch12", "--force"], course)
    assert _score(course, "reference") == (3.0, 3.0)
    assert _score(course, "wrong") == (1.0, 3.0)
    feedback = (course / "feedback" / "wrong" / "ch12" / "ch12.html").read_text()
    assert "✗ ch11.simplex_step: case 1/5 failed" in feedback
    assert "✓ ch4.warmup_dual_step" in feedback
    shutil.rmtree(course)
