"""tools/site_check.py on a tiny hand-made site: every kind of breakage is reported on the page
that has it, and the clean pages report nothing (no book build needed; about 10 s with a browser).

The browser tests are skipped when no chromium + chromedriver (or no selenium) is installed;
``make test-site`` installs them with apt-get.
"""
from __future__ import annotations

import importlib.util
import shutil
import struct
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("site_check", ROOT / "tools" / "site_check.py")
site_check = importlib.util.module_from_spec(spec)
sys.modules["site_check"] = site_check
spec.loader.exec_module(site_check)


def _png(width=4, height=3) -> bytes:
    """A small valid RGB PNG, written by hand."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# A stand-in for MathJax 3 when the real one (pip package django-static-mathjax) is not installed:
# it typesets every .math element into an mjx-container, a \frac with one argument into an merror
# and the undefined macro \lamda into red text, as MathJax does.
MATHJAX_SHIM = r"""
window.MathJax = {startup: {promise: new Promise(done => {
  document.addEventListener('DOMContentLoaded', () => {
    for (const el of document.querySelectorAll('.math')) {
      const tex = el.textContent;
      if (/\\frac\{[^}]*\}\s*\\\)$/.test(tex))
        el.innerHTML = '<mjx-container><mjx-merror data-mjx-error="Missing argument for \\frac"></mjx-merror></mjx-container>';
      else if (tex.includes('\\lamda'))
        el.innerHTML = '<mjx-container><mjx-assistive-mml><math><mtext mathcolor="red">\\lamda</mtext></math></mjx-assistive-mml></mjx-container>';
      else el.innerHTML = '<mjx-container class="MathJax"></mjx-container>';
    }
    done();
  });
})}};
"""

NOTEBOOK_FRONT = "---\njupytext:\n  text_representation:\n    format_name: myst\nkernelspec:\n  name: python3\n---\n"


def _page(title, body, mathjax=True):
    script = '<script defer src="_static/mathjax.js"></script>' if mathjax else ""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>{script}</head>"
            f"<body><h1 id='top'>{title}</h1>{body}</body></html>")


def make_site(root: Path) -> Path:
    site = root / "site"
    (site / "_static").mkdir(parents=True)
    (site / "_images").mkdir()
    (site / "_sources").mkdir()
    (site / "_images" / "dot.png").write_bytes(_png())
    try:
        from importlib import import_module
        es5 = [Path(p) / "static" / "mathjax" / "es5" for p in import_module("mathjax").__path__]
        bundle = next(p / "tex-svg.js" for p in es5 if (p / "tex-svg.js").is_file())
        shutil.copyfile(bundle, site / "_static" / "mathjax.js")
    except (ImportError, StopIteration):
        (site / "_static" / "mathjax.js").write_text(MATHJAX_SHIM)
    # a clean notebook page: maths, an image, local links and anchors, its downloads, an external link
    (site / "index.html").write_text(_page("Good", """
        <p>Inline <span class="math notranslate nohighlight">\\(x^2 + \\lambda\\)</span>.</p>
        <img src="_images/dot.png" alt="dot">
        <a href="other.html#sec">other</a> <a href="#top">top</a> <a href="other.html">plain</a>
        <a href="_sources/index.md">.md</a> <a href="_sources/index.ipynb">.ipynb</a>
        <a href="https://example.org/paper">paper</a> <a href="mailto:a@b.c">mail</a>"""))
    (site / "_sources" / "index.md").write_text(NOTEBOOK_FRONT + "# Good\n\nInline $x^2 + \\lambda$.\n")
    (site / "_sources" / "index.ipynb").write_text("{}")
    (site / "other.html").write_text(_page("Other", '<h2 id="sec">Section</h2><a href="index.html#top">back</a>',
                                           mathjax=False))
    # everything broken at once
    (site / "broken.html").write_text(_page("Broken", """
        <p><span class="math notranslate nohighlight">\\(\\frac{1}\\)</span>
           <span class="math notranslate nohighlight">\\(\\lamda\\)</span></p>
        <img src="_images/missing.png" alt="missing">
        <img src="https://cdn.example.invalid/logo.png" alt="off-host">
        <a href="nowhere.html">gone</a> <a href="other.html#no-such-anchor">bad anchor</a>
        <p>| method | error |
|---|---|
| ours | 0.1 |</p>
        <p>| as Sphinx smartens it |
|—|</p>
        <script>console.error("boom from the page");</script>"""))
    (site / "_sources" / "broken.md").write_text(NOTEBOOK_FRONT + "# Broken\n\n$\\frac{1}$\n")
    # maths in the source, but the page never loads MathJax
    (site / "plain.html").write_text(_page("Plain", '<p><span class="math">\\(y\\)</span></p>', mathjax=False))
    (site / "_sources" / "plain.md").write_text("# Plain\n\nThe value $y$.\n")
    # '$' only inside code: not maths
    (site / "code.html").write_text(_page("Code", "<pre>plt.title('$\\\\lambda$')</pre>", mathjax=False))
    (site / "_sources" / "code.md").write_text("# Code\n\n```{code-cell} ipython3\nplt.title('$\\lambda$')\n```\n"
                                                "and `$x$` inline code\n")
    return site


# --------------------------------------------------------------------------- without a browser
def test_source_has_math():
    f = site_check.source_has_math
    assert f("The value $y$ here.") and f("$$\nx\n$$") and f("\\begin{equation}x\\end{equation}")
    assert f("```{math}\nx^2\n```")
    assert not f("costs $5 and $6")  # currency: no closing pair hugging text
    assert not f("```{code-cell} ipython3\nplt.title('$\\lambda$')\n```\n")
    assert not f("inline `$x$` code only")


def test_page_sources_and_ids(tmp_path):
    site = make_site(tmp_path)
    sources = site_check.page_sources(site)
    assert set(sources) == {"index.html", "broken.html", "plain.html", "code.html"}
    assert site_check.is_notebook_source(sources["index.html"]) and not site_check.is_notebook_source(sources["plain.html"])
    assert {"top", "sec"} <= site_check.static_ids(site / "other.html")
    assert site_check.list_pages(site) == ["broken.html", "code.html", "index.html", "other.html", "plain.html"]


def test_missing_site_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="site"):
        site_check.check_site(tmp_path / "nothing")


# --------------------------------------------------------------------------- with a browser
browser = site_check.find_browser()
needs_browser = pytest.mark.skipif(browser is None or importlib.util.find_spec("selenium") is None,
                                   reason="no chromium + chromedriver + selenium (make test-site installs them)")


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    root = tmp_path_factory.mktemp("sitecheck")
    site = make_site(root)
    report = site_check.check_site(site, screenshots=root / "shots", browser=browser, wait_ms=30000)
    return site, root / "shots", report


@needs_browser
def test_every_breakage_is_reported_where_it_is(checked):
    _, _, report = checked
    expected = {("broken.html", kind) for kind in ("console", "offhost", "network", "math", "markdown", "image", "link", "download")}
    expected.add(("plain.html", "math"))
    assert report.kinds() == expected, report.text()
    details = "\n".join(str(p) for p in report.problems)
    assert "boom from the page" in details and "cdn.example.invalid" in details
    assert "nowhere.html" in details and "no-such-anchor" in details and "missing.png" in details
    assert "Missing argument for \\frac" in details and "undefined macro \\lamda" in details
    assert "source plain.md has maths" in details and "Markdown table shown as text: | method" in details
    assert not report.ok and "FAIL" in report.text()


@needs_browser
def test_clean_pages_pass_and_are_measured(checked):
    _, shots, report = checked
    pages = {r.page: r for r in report.pages}
    good = pages["index.html"]
    assert good.math_elements == good.math_typeset == 1 and good.mjx_containers >= 1
    assert good.images == good.images_loaded == 1 and good.links == 7
    assert report.external_links == ["https://example.org/paper"]
    # a screenshot per page built from a source, none for the others
    assert sorted(p.name for p in shots.glob("*.png")) == ["broken.png", "code.png", "index.png", "plain.png"]
    assert (shots / "index.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_browser
def test_command_line_exit_status(checked, tmp_path):
    site, _, _ = checked
    out = tmp_path / "out"
    assert site_check.main([str(site), "--screenshots", str(out), "--page", "index.html", "--page", "other.html"]) == 0
    assert "PASS" in (out / "report.txt").read_text()
    assert site_check.main([str(site), "--screenshots", str(out), "--page", "plain.html"]) == 1
