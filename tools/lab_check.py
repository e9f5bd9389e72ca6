"""Open a chapter in JupyterLab in headless Chromium and report the MyST that shows as raw text.

    python tools/lab_check.py book/03_constrained_alignment.md

The chapter is converted to a notebook (jupytext) in a temporary folder, JupyterLab is started on
it (no token, a free local port, its own settings with notebook windowing off so that every cell
is rendered), and the rendered page is searched for what jupyterlab-myst turns into exercises,
admonitions and links: directive option lines (``:label: ch3-ex1``), ``{doc}``/``{ref}``/
``{numref}`` roles, and ``{exercise-start}``-style fences. Exit 0 when none is visible, 1 when some
are (listed), 3 when no browser is available (see tools/site_check.py). Used by tests/test_lab.py.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import site_check  # noqa: E402

RAW = re.compile(r"^:(label|class):\s|\{(doc|ref|numref|exercise-start|exercise-end|solution-start|solution-end)\}",
                 re.M)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_myst(chapter: Path, timeout: float = 180.0, disable: tuple[str, ...] = ()) -> list[str]:
    """Lines of the chapter's JupyterLab rendering that show MyST markup as raw text.

    ``disable`` names JupyterLab extensions to switch off (the tests' control: without
    jupyterlab-myst the raw markup must be found)."""
    import jupytext

    found = site_check.find_browser()
    if found is None:
        raise FileNotFoundError("no chromium/chromedriver")
    work = Path(tempfile.mkdtemp(prefix="lab-check-"))
    nb = jupytext.read(chapter)
    jupytext.write(nb, work / (chapter.stem + ".ipynb"))
    settings = work / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port = _free_port()
    env = dict(os.environ, JUPYTER_PREFER_ENV_PATH="1")
    if disable:
        (work / "config" / "labconfig").mkdir(parents=True)
        (work / "config" / "labconfig" / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {name: True for name in disable}}))
        env["JUPYTER_CONFIG_DIR"] = str(work / "config")
    lab = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
                            "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
                            f"--ServerApp.root_dir={work}", f"--LabApp.user_settings_dir={work / 'settings'}",
                            "--allow-root"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    drv = profile = None
    try:
        url = f"http://127.0.0.1:{port}/lab/tree/{chapter.stem}.ipynb"
        t0 = time.time()
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5)
                break
            except OSError:
                if time.time() - t0 > timeout or lab.poll() is not None:
                    raise RuntimeError("JupyterLab did not start") from None
                time.sleep(1)
        drv, profile = site_check._start_driver(*found)
        drv.get(url)
        text, stable = "", 0
        while time.time() - t0 < timeout and stable < 3:  # wait until the rendered text stops changing
            time.sleep(3)
            new = drv.execute_script(
                "const n = document.querySelector('.jp-Notebook'); return n ? n.innerText : '';")
            stable = stable + 1 if new == text and len(new) > 1000 else 0
            text = new
        if len(text) < 1000:
            raise RuntimeError(f"the notebook did not render in JupyterLab ({len(text)} characters)")
        return [line.strip()[:100] for line in text.splitlines() if RAW.search(line)]
    finally:
        if drv is not None:
            drv.quit()
        lab.terminate()
        try:
            lab.wait(20)
        except subprocess.TimeoutExpired:
            lab.kill()


def main(argv=None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    chapter = Path(args[0] if args else ROOT / "book" / "03_constrained_alignment.md")
    try:
        raw = raw_myst(chapter)
    except FileNotFoundError as err:
        print(f"lab_check: {err}", file=sys.stderr)
        return site_check.NO_BROWSER
    for line in raw:
        print("raw MyST:", line)
    print(f"{chapter.name}: {len(raw)} line(s) of raw MyST visible in JupyterLab")
    return 1 if raw else 0


if __name__ == "__main__":
    sys.exit(main())
