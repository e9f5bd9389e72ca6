"""The book's structure as a reader meets it: numbered chapters, exercise references that Sphinx
resolves (no hard-coded numbers), a card under every chapter title, no pointer outside the
repository, and every implement-a-piece solution calling its check."""
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.md"))
PAGES = sorted(BOOK.glob("*.md"))


def test_toc_numbers_the_rungs_not_the_appendices():
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    for part in toc["parts"]:
        rung = part["caption"].startswith("Rung")
        assert part.get("numbered", False) is rung, part["caption"]
    files = [c["file"] for p in toc["parts"] for c in p["chapters"]]
    assert "syllabus" in files
    assert sorted(f for f in files if re.match(r"\d\d_", f) and f != "00_introduction") == [p.stem for p in CHAPTERS[1:]]


def test_exercise_references_are_cross_references():
    for page in PAGES:
        text = page.read_text()
        # "Exercise {ref}`x`" renders "Exercise Exercise 7.2"; "Exercise 4" is a number Sphinx does not manage.
        assert not re.search(r"Exercise \{(ref|numref)\}", text), page.name
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        assert not re.search(r"\bExercises? \d", prose), (page.name, re.search(r"\bExercises? \d.{0,40}", prose))
        for label in re.findall(r"\{(?:ref|numref)\}`([\w-]+)`", text):
            if re.fullmatch(r"ch\d+-ex\d", label):
                owner = BOOK / next(p.name for p in CHAPTERS if p.name.startswith(f"{int(label[2:label.index('-')]):02d}_"))
                assert f":label: {label}" in owner.read_text(), label


def test_every_chapter_has_a_card():
    for page in CHAPTERS[1:]:
        text = page.read_text()
        head = text[text.index("\n# "):][:2500]
        assert "```{admonition} In this chapter" in head, page.name
        for part in ("**You will be able to**", "**Prerequisites:**", "**Hardware:**", "**Run time:**"):
            assert part in head, (page.name, part)


def test_no_pointer_outside_the_repository():
    for page in PAGES + [ROOT / "README.md"]:
        text = page.read_text()
        for phrase in ("reference notes", "shared/reference", "/work/", "methods.md", "paper-experiments.md"):
            assert phrase not in text, (page.name, phrase)
        assert not re.search(r"\btrap \d\b", text), page.name  # numbered items of a list the book does not have


def test_stars_are_explained_once():
    syllabus = (BOOK / "syllabus.md").read_text()
    assert all(f"- {s} —" in syllabus for s in ("★", "★★", "★★★"))
