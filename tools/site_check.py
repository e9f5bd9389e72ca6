"""Check the rendered book in a real headless browser (Chromium driven by Selenium + chromedriver).

    python tools/site_check.py [SITE] [--screenshots DIR] [--install-browser]

SITE (default ``book/_build/html``) is served on 127.0.0.1 and every HTML page in it is opened in
headless Chromium. A page passes when

- it loads without console errors (``console.error``, uncaught exceptions, failed resources);
- no request leaves the local server (MathJax, fonts and scripts all come from the book itself;
  the browser runs with every host name unresolvable except 127.0.0.1, so an attempt also fails);
- MathJax typeset every maths element (``.math`` holds an ``mjx-container``, no ``mjx-merror``), and
  a page whose source (``_sources/``) has ``$...$`` maths shows typeset maths;
- no Markdown table is left as text (``| --- |`` in a paragraph: an output rendered without tables);
- every ``<img>`` has loaded (``naturalWidth > 0``);
- every link to a local page or anchor resolves: the file exists and, for ``page.html#id``, the
  target page has an element with that id;
- a page built from a notebook offers its ``.ipynb`` for download (``_sources/<page>.ipynb``).

A full-page screenshot of each book page (the pages with a source in ``_sources/``) is written to
``--screenshots`` (default ``build/site-check/``), with ``report.txt`` and ``report.json``. The exit
status is 1 if any page fails. ``make test-site`` builds the book and runs this script;
``tests/test_site_check.py`` runs :func:`check_site` on a tiny hand-made site.

Browser: ``chromium`` and ``chromedriver`` from the system (Debian: ``apt-get install chromium
chromium-driver``; ``--install-browser`` does that when they are missing and apt-get is usable). No
browser or driver is ever downloaded from the web.
"""
from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SITE = ROOT / "book" / "_build" / "html"
DEFAULT_OUT = ROOT / "build" / "site-check"

# Headless flags that work offline and as root (see the project's environment notes); the host
# resolver rule makes any off-host request fail at once instead of waiting for a network.
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--hide-scrollbars", "--force-device-scale-factor=1",
)
WINDOW = (1280, 900)
MAX_SCREENSHOT_HEIGHT = 24000  # px; longer pages are cut there (noted in the report)
LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "chrome-extension", "devtools"}
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVER_NAMES = ("chromedriver",)


# --------------------------------------------------------------------------- results
@dataclass
class Problem:
    page: str
    kind: str  # console | offhost | network | math | markdown | image | link | download | load
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.page}: {self.detail}"


@dataclass
class PageResult:
    page: str
    seconds: float = 0.0
    math_elements: int = 0
    math_typeset: int = 0
    mjx_containers: int = 0
    images: int = 0
    images_loaded: int = 0
    links: int = 0
    requests: int = 0
    console_warnings: int = 0
    screenshot: str | None = None
    screenshot_cut: bool = False  # page taller than MAX_SCREENSHOT_HEIGHT: the picture is its top
    redirect: str | None = None


@dataclass
class Report:
    site: str
    pages: list[PageResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    external_links: list[str] = field(default_factory=list)
    seconds: float = 0.0
    browser: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def kinds(self) -> set[tuple[str, str]]:
        """{(page, kind)} of every problem (what tests look at)."""
        return {(p.page, p.kind) for p in self.problems}

    def text(self) -> str:
        lines = [f"Site check of {self.site} ({self.browser})", ""]
        head = f"{'page':<46} {'s':>5} {'maths':>9} {'images':>7} {'links':>6} {'requests':>8}  problems"
        lines += [head, "-" * len(head)]
        count = {}
        for p in self.problems:
            count[p.page] = count.get(p.page, 0) + 1
        for r in self.pages:
            maths = f"{r.math_typeset}/{r.math_elements}"
            imgs = f"{r.images_loaded}/{r.images}"
            note = f" -> {r.redirect}" if r.redirect else ""
            lines.append(f"{r.page + note:<46} {r.seconds:5.1f} {maths:>9} {imgs:>7} {r.links:>6} "
                         f"{r.requests:>8}  {count.get(r.page, 0) or ''}")
        lines.append("")
        if self.external_links:
            lines.append(f"{len(self.external_links)} external link(s), not followed (offline): "
                         + ", ".join(self.external_links[:8]) + (" ..." if len(self.external_links) > 8 else ""))
        shots = [r for r in self.pages if r.screenshot]
        if shots:
            cut = [r.page for r in shots if r.screenshot_cut]
            lines.append(f"{len(shots)} screenshot(s) in {Path(shots[0].screenshot).parent}"
                         + (f" ({len(cut)} cut at {MAX_SCREENSHOT_HEIGHT} px: {', '.join(cut)})" if cut else ""))
        if self.problems:
            lines += ["", f"{len(self.problems)} PROBLEM(S):"]
            lines += [f"  {p}" for p in self.problems]
        lines += ["", f"site check: {len(self.pages)} pages, {len(self.problems)} problem(s), "
                      f"{self.seconds:.0f} s -> {'PASS' if self.ok else 'FAIL'}"]
        return "\n".join(lines)

    def to_json(self) -> str:
        data = {"site": self.site, "browser": self.browser, "ok": self.ok, "seconds": self.seconds,
                "pages": [asdict(p) for p in self.pages], "problems": [asdict(p) for p in self.problems],
                "external_links": self.external_links}
        return json.dumps(data, indent=1)


# --------------------------------------------------------------------------- browser discovery
def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths from PATH (and Debian's /usr/bin), or ``None``."""
    def which(names):
        for name in names:
            path = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin:/usr/lib/chromium")
            if path:
                return path
        return None

    browser = os.environ.get("CHROMIUM") or which(BROWSER_NAMES)
    driver = os.environ.get("CHROMEDRIVER") or which(DRIVER_NAMES)
    return (browser, driver) if browser and driver else None


NO_BROWSER = 3  # exit status when no browser is available (the site was not checked)


def install_browser() -> None:
    """``apt-get install -y chromium chromium-driver`` (Debian/Ubuntu, as root); retried after
    ``apt-get update`` if the package lists are stale. Raises RuntimeError when impossible."""
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise RuntimeError("chromium/chromedriver missing and apt-get is not usable here (needs root); "
                           "install a Chromium and its chromedriver, or set CHROMIUM and CHROMEDRIVER")
    cmd = [apt, "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("site_check: installing the browser:", " ".join(cmd), flush=True)
    if subprocess.run(cmd, env=env).returncode != 0:
        subprocess.run([apt, "update"], env=env, check=False)
        subprocess.run(cmd, env=env, check=True)


def _major(version_output: str) -> str | None:
    m = re.search(r"(\d+)\.\d+\.\d+", version_output)
    return m.group(1) if m else None


def browser_versions(browser: str, driver: str) -> tuple[str, str]:
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    return out([browser, "--version"]), out([driver, "--version"])


# --------------------------------------------------------------------------- local server
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files of the site; no log lines. ``/favicon.ico``, which the browser asks for on its
    own (no page links to it), is answered with 204 when the site has none, so it is not counted as
    a broken resource of the book."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.split("?")[0] == "/favicon.ico" and not (Path(self.directory) / "favicon.ico").exists():
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()


class SiteServer:
    """``with SiteServer(site) as origin:`` serves ``site`` on http://127.0.0.1:<free port>."""

    def __init__(self, site: Path):
        handler = functools.partial(_QuietHandler, directory=str(site))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> str:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self.origin

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- static helpers
class _IdParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if v and (k == "id" or (k == "name" and tag == "a")):
                self.ids.add(v)


@functools.lru_cache(maxsize=None)
def static_ids(path: Path) -> frozenset[str]:
    """Element ids (and ``<a name>``) of an HTML file, parsed without a browser."""
    parser = _IdParser()
    parser.feed(path.read_text(encoding="utf8", errors="replace"))
    return frozenset(parser.ids)


_FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1[ \t]*$", re.S | re.M)
_INLINE_CODE = re.compile(r"`+[^`\n]*`+")
_MATH = re.compile(r"\$\$.+?\$\$|(?<![\\$\w])\$(?=\S)[^$\n]+?(?<=\S)\$(?![\w$])|\\begin\{(equation|align)|\{math\}",
                   re.S)


def source_has_math(text: str) -> bool:
    """True if MyST markdown ``text`` has maths outside code: ``$...$``, ``$$...$$``,
    ``\\begin{equation|align}`` or a ``{math}`` role/directive. ``{code-cell}`` blocks and other fences
    are ignored, except ``{math}`` fences (maths), so ``"$\\lambda$"`` in a plot label does not count."""
    if re.search(r"^(`{3,}|~{3,})\s*\{math\}", text, re.M):
        return True
    text = _FENCE.sub("", text)
    text = _INLINE_CODE.sub("", text)
    return bool(_MATH.search(text))


def page_sources(site: Path) -> dict[str, Path]:
    """{page.html: its source copy in _sources/} for the pages built from a source file."""
    sources = site / "_sources"
    found = {}
    if sources.is_dir():
        for src in sorted(sources.rglob("*")):
            if not src.is_file():
                continue
            rel = src.relative_to(sources).as_posix()
            for suffix in (".md.txt", ".rst.txt", ".ipynb.txt", ".md", ".rst", ".txt"):
                if rel.endswith(suffix):
                    page = rel[: -len(suffix)] + ".html"
                    if (site / page).is_file() and page not in found:
                        found[page] = src
                    break
    return found


def is_notebook_source(path: Path) -> bool:
    """A MyST markdown notebook: front matter with a ``jupytext:`` or ``kernelspec:`` key."""
    try:
        text = path.read_text(encoding="utf8", errors="replace")
    except OSError:
        return False
    if not text.startswith("---"):
        return False
    end = text.find("\n---", 3)
    head = text[:end] if end > 0 else ""
    return bool(re.search(r"^(jupytext|kernelspec):", head, re.M))


def duplicated_streams(path: Path) -> list[str]:
    """Cells of a notebook whose stream output repeats itself: a stream chunk equal to the previous
    chunk of the same stream, or already at the end of it (what MyST-NB 1.4's ``nb_merge_streams``
    leaves in the notebooks it writes; ``book/_ext/merge_streams_fix.py`` fixes that)."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    found = []
    for i, cell in enumerate(nb.get("cells", [])):
        last: dict[str, str] = {}
        for out in cell.get("outputs", []):
            if out.get("output_type") != "stream":
                continue
            text, name = "".join(out.get("text", "")), out.get("name", "")
            prev = last.get(name)
            if prev is not None and text.strip() and (prev == text or prev.rstrip().endswith("\n" + text.rstrip())):
                found.append(f"cell {i}: {text.strip()[:60]!r}")
                break
            last[name] = text
    return found


def list_pages(site: Path) -> list[str]:
    """Every HTML page of the site (relative POSIX paths), theme templates in _static/ excluded."""
    pages = []
    for path in sorted(site.rglob("*.html")):
        rel = path.relative_to(site).as_posix()
        if rel.startswith("_static/"):
            continue
        pages.append(rel)
    return pages


# --------------------------------------------------------------------------- in-page JavaScript
_WAIT_JS = r"""
const done = arguments[arguments.length - 1];
const limit = arguments[0];
const timeout = new Promise(r => setTimeout(() => r('timeout'), limit));
const mathjax = (window.MathJax && MathJax.startup && MathJax.startup.promise)
  ? MathJax.startup.promise.then(() => 'ok', e => 'error: ' + e) : Promise.resolve('absent');
const images = Promise.all(Array.from(document.images).map(img => {
  if (img.loading === 'lazy') img.loading = 'eager';
  if (img.complete) return Promise.resolve();
  return new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); });
}));
Promise.race([Promise.all([mathjax, images]).then(v => v[0]), timeout]).then(done, e => done('error: ' + e));
"""

_COLLECT_JS = r"""
const math = Array.from(document.querySelectorAll('.math'));
const untypeset = math.filter(el => !el.querySelector('mjx-container'))
  .map(el => el.textContent.trim().slice(0, 80));
// TeX errors: MathJax renders them as merror (SVG output: <g data-mjx-error>, CHTML: <mjx-merror>);
// an undefined macro (noundefined package) as red text "\\name" in the assistive MathML.
const merrors = [];
for (const box of document.querySelectorAll('mjx-container')) {
  const err = box.querySelector('[data-mjx-error], mjx-merror');
  if (err) merrors.push((err.getAttribute('data-mjx-error') || err.textContent || '').trim().slice(0, 80));
  for (const t of box.querySelectorAll('mjx-assistive-mml mtext[mathcolor="red"]'))
    if (t.textContent.trim().startsWith('\\')) merrors.push('undefined macro ' + t.textContent.trim().slice(0, 40));
}
// a Markdown table left as text (e.g. a text/markdown output rendered without table support;
// Sphinx's smart quotes may have turned its "---" into an em dash)
const rawTables = Array.from(document.querySelectorAll('p'))
  .filter(p => !p.closest('pre, code') && /\|\s*:?(-{3,}|[\u2013\u2014][-\u2013\u2014]*):?\s*\|/.test(p.textContent))
  .map(p => p.textContent.trim().slice(0, 80));
const images = Array.from(document.images).map(img => ({
  src: img.currentSrc || img.src || img.getAttribute('src') || '', complete: img.complete,
  width: img.naturalWidth }));
const links = Array.from(document.querySelectorAll('a[href]')).map(a => ({
  href: a.href, raw: a.getAttribute('href') }));
const ids = Array.from(document.querySelectorAll('[id]')).map(el => el.id)
  .concat(Array.from(document.querySelectorAll('a[name]')).map(a => a.getAttribute('name')));
return {url: location.href, math: math.length, untypeset: untypeset, merrors: merrors, rawTables: rawTables,
        mjx: document.querySelectorAll('mjx-container').length, images: images, links: links, ids: ids,
        height: Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0)};
"""


# --------------------------------------------------------------------------- the check
def _start_driver(browser: str, driver_path: str):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:  # pragma: no cover - environment error
        raise RuntimeError("selenium is not installed: pip install -e '.[test]'") from err
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    profile = tempfile.mkdtemp(prefix="site-check-profile-")
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    drv = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    drv.set_page_load_timeout(120)
    drv.set_script_timeout(120)
    return drv, profile


def _network_events(drv) -> list[dict]:
    events = []
    for entry in drv.get_log("performance"):
        try:
            msg = json.loads(entry["message"])["message"]
        except (KeyError, ValueError):
            continue
        if msg.get("method", "").startswith("Network."):
            events.append(msg)
    return events


def _screenshot(drv, path: Path, height: int) -> bool:
    """Full-page PNG (cut at MAX_SCREENSHOT_HEIGHT); True if the page was cut."""
    h = max(1, min(int(height), MAX_SCREENSHOT_HEIGHT))
    # Lay the page out in a viewport as tall as the picture (as a full-page capture does), then
    # restore the window: capturing "beyond the viewport" without it can shift the layout.
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                        {"width": WINDOW[0], "height": h, "deviceScaleFactor": 1, "mobile": False})
    try:
        drv.execute_script("window.scrollTo(0, 0)")
        shot = drv.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "fromSurface": True,
            "clip": {"x": 0, "y": 0, "width": WINDOW[0], "height": h, "scale": 1}})
    finally:
        drv.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return height > MAX_SCREENSHOT_HEIGHT


def _local_target(url: str, origin: str, site: Path) -> tuple[Path, str] | None:
    """(file in the site, fragment) for a URL on the local server, else None."""
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}" != origin:
        return None
    path = unquote(parts.path).lstrip("/")
    if path == "" or path.endswith("/"):
        path += "index.html"
    return site / path, unquote(parts.fragment)


def check_site(site: str | Path, screenshots: str | Path | None = None, pages: list[str] | None = None,
               browser: tuple[str, str] | None = None, wait_ms: int = 60000,
               progress: bool = False) -> Report:
    """Open every page of ``site`` in headless Chromium and check it (see the module docstring).

    ``pages``: relative paths to check (default: every HTML page); ``screenshots``: folder for a
    full-page PNG of each page built from a source file (``None``: no screenshots); ``browser``:
    (chromium, chromedriver) paths (default: :func:`find_browser`). Returns a :class:`Report`.
    """
    site = Path(site).resolve()
    t_start = time.perf_counter()
    if not site.is_dir():
        raise FileNotFoundError(f"site: no such folder {site} (build the book first: make book)")
    pages = list_pages(site) if pages is None else list(pages)
    report = Report(site=str(site))
    if not pages:
        report.problems.append(Problem(".", "load", "no HTML pages found"))
        return report
    browser = browser or find_browser()
    if browser is None:
        raise RuntimeError("no chromium + chromedriver found (apt-get install chromium chromium-driver, "
                           "or run with --install-browser)")
    b_version, d_version = browser_versions(*browser)
    report.browser = f"{b_version or browser[0]}; {d_version.split(' (')[0] or browser[1]}"
    if _major(b_version) and _major(d_version) and _major(b_version) != _major(d_version):
        raise RuntimeError(f"chromedriver ({d_version}) does not match the browser ({b_version})")
    sources = page_sources(site)
    shot_dir = Path(screenshots) if screenshots is not None else None
    dom_ids: dict[Path, set[str]] = {}
    links: list[tuple[str, str, str]] = []  # (page, absolute href, raw href)

    with SiteServer(site) as origin:
        drv, profile = _start_driver(*browser)
        try:
            drv.get("about:blank")
            drv.get_log("browser")
            _network_events(drv)  # drop the start-up traffic (new-tab page)
            for page in pages:
                t0 = time.perf_counter()
                res = PageResult(page)
                report.pages.append(res)
                url = f"{origin}/{page}"
                try:
                    drv.get(url)
                    state = drv.execute_async_script(_WAIT_JS, wait_ms)
                    info = drv.execute_script(_COLLECT_JS)
                except Exception as err:  # a page that hangs or crashes the tab
                    report.problems.append(Problem(page, "load", f"{type(err).__name__}: {str(err)[:200]}"))
                    res.seconds = time.perf_counter() - t0
                    continue
                problems = report.problems
                if state == "timeout":
                    problems.append(Problem(page, "load", f"MathJax/images not done after {wait_ms / 1000:.0f} s"))
                elif isinstance(state, str) and state.startswith("error"):
                    problems.append(Problem(page, "math", f"MathJax failed: {state}"))
                final = info["url"].split("#")[0]
                if final != url:
                    target = _local_target(final, origin, site)
                    res.redirect = target[0].relative_to(site).as_posix() if target else final

                # console: errors fail, warnings are counted
                for entry in drv.get_log("browser"):
                    level, message = entry.get("level"), entry.get("message", "")
                    if level == "SEVERE":
                        problems.append(Problem(page, "console", message[:300]))
                    elif level == "WARNING":
                        res.console_warnings += 1

                # network: every request stays on the local server and succeeds
                seen_offhost = set()
                for msg in _network_events(drv):
                    method, params = msg["method"], msg.get("params", {})
                    if method == "Network.requestWillBeSent":
                        req_url = params.get("request", {}).get("url", "")
                        res.requests += 1
                        parts = urlsplit(req_url)
                        if parts.scheme in LOCAL_SCHEMES:
                            continue
                        if f"{parts.scheme}://{parts.netloc}" != origin and req_url not in seen_offhost:
                            seen_offhost.add(req_url)
                            problems.append(Problem(page, "offhost", f"request to {req_url[:200]}"))
                    elif method == "Network.responseReceived":
                        resp = params.get("response", {})
                        status, r_url = resp.get("status", 0), resp.get("url", "")
                        if r_url.startswith(origin) and status >= 400:
                            problems.append(Problem(page, "network", f"HTTP {status} for {r_url[len(origin):]}"))

                # maths
                res.math_elements, res.mjx_containers = info["math"], info["mjx"]
                res.math_typeset = info["math"] - len(info["untypeset"])
                if info["untypeset"]:
                    sample = "; ".join(info["untypeset"][:3])
                    problems.append(Problem(page, "math", f"{len(info['untypeset'])} of {info['math']} maths "
                                                          f"element(s) not typeset, e.g. {sample}"))
                for err_text in info["merrors"][:5]:
                    problems.append(Problem(page, "math", f"MathJax error: {err_text}"))
                src = sources.get(page)
                if src is not None and res.redirect is None and info["mjx"] == 0:
                    text = src.read_text(encoding="utf8", errors="replace")
                    if source_has_math(text):
                        problems.append(Problem(page, "math", f"source {src.name} has maths but the page "
                                                              "shows no typeset maths"))

                for text in info["rawTables"][:5]:
                    problems.append(Problem(page, "markdown", f"Markdown table shown as text: {text}"))

                # images
                res.images = len(info["images"])
                for img in info["images"]:
                    if img["complete"] and img["width"] > 0:
                        res.images_loaded += 1
                    else:
                        problems.append(Problem(page, "image", f"not loaded: {img['src'][:200]}"))

                # links (resolved after all pages are seen) and ids
                target_file = site / page if res.redirect is None else None
                if target_file is not None:
                    dom_ids[target_file] = set(info["ids"])
                    for link in info["links"]:
                        links.append((page, link["href"], link["raw"] or ""))
                    res.links = len(info["links"])

                # downloads: a notebook page offers its .ipynb
                if src is not None and res.redirect is None and is_notebook_source(src):
                    nb_links = [lk["href"] for lk in info["links"] if urlsplit(lk["href"]).path.endswith(".ipynb")]
                    if not nb_links:
                        problems.append(Problem(page, "download", "no .ipynb download link on a notebook page"))
                    ipynb = site / "_sources" / Path(page).with_suffix(".ipynb")
                    if ipynb.is_file():
                        for where in duplicated_streams(ipynb):
                            problems.append(Problem(page, "download", f"duplicated stream output in the .ipynb: {where}"))

                if shot_dir is not None and src is not None and res.redirect is None:
                    shot = shot_dir / (page[: -len(".html")].replace("/", "__") + ".png")
                    try:
                        res.screenshot_cut = _screenshot(drv, shot, info["height"])
                        res.screenshot = str(shot)
                    except Exception as err:
                        problems.append(Problem(page, "load", f"screenshot failed: {str(err)[:200]}"))
                res.seconds = time.perf_counter() - t0
                if progress:
                    print(f"  {page:<46} {res.seconds:5.1f} s", flush=True)
        finally:
            drv.quit()
            shutil.rmtree(profile, ignore_errors=True)

    # resolve links: local file exists, and the anchor exists in an HTML target
    external, checked = set(), {}
    for page, href, raw in links:
        parts = urlsplit(href)
        if parts.scheme in ("mailto", "javascript", "tel", "data"):
            continue
        target = _local_target(href, origin, site)
        if target is None:
            if parts.scheme in ("http", "https"):
                external.add(href)
            continue
        path, fragment = target
        key = (path, fragment)
        if key not in checked:
            if not path.is_file():
                checked[key] = f"missing file {path.relative_to(site).as_posix() if path.is_relative_to(site) else path}"
            elif fragment and path.suffix == ".html":
                ids = dom_ids.get(path)
                if ids is None:
                    ids = static_ids(path)
                checked[key] = None if fragment in ids else \
                    f"no element id={fragment!r} in {path.relative_to(site).as_posix()}"
            else:
                checked[key] = None
        if checked[key]:
            report.problems.append(Problem(page, "link", f"{raw} -> {checked[key]}"))
    report.external_links = sorted(external)
    # one line per (page, kind, detail)
    unique, seen = [], set()
    for p in report.problems:
        k = (p.page, p.kind, p.detail)
        if k not in seen:
            seen.add(k)
            unique.append(p)
    report.problems = unique
    report.seconds = time.perf_counter() - t_start
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site", nargs="?", default=str(DEFAULT_SITE), help="built HTML folder (book/_build/html)")
    ap.add_argument("--screenshots", default=str(DEFAULT_OUT),
                    help="folder for screenshots and report.{txt,json} (build/site-check)")
    ap.add_argument("--install-browser", action="store_true",
                    help="apt-get install chromium chromium-driver if they are missing")
    ap.add_argument("--page", action="append", help="check only this page (repeatable)")
    args = ap.parse_args(argv)

    browser = find_browser()
    if browser is None and args.install_browser:
        try:
            install_browser()
        except (RuntimeError, subprocess.CalledProcessError) as err:
            print(f"site_check: could not install the browser: {err}", file=sys.stderr)
        browser = find_browser()
    out = Path(args.screenshots)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if browser is None:  # exit status 3: the check could not run (no browser), as opposed to 1: it failed
        print("site_check: no chromium + chromedriver (apt-get install chromium chromium-driver, "
              "or --install-browser)", file=sys.stderr)
        (out / ".no-browser").write_text("no chromium + chromedriver: the site was not checked\n")
        return NO_BROWSER
    print(f"site_check: {args.site} in {browser[0]}", flush=True)
    try:
        report = check_site(args.site, screenshots=out, pages=args.page, browser=browser, progress=True)
    except (RuntimeError, FileNotFoundError) as err:
        print(f"site_check: {err}", file=sys.stderr)
        return 2
    text = report.text()
    (out / "report.txt").write_text(text + "\n", encoding="utf8")
    (out / "report.json").write_text(report.to_json(), encoding="utf8")
    print(text)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
