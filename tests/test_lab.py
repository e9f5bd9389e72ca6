"""JupyterLab renders the chapters' MyST (directives, roles, exercises) through jupyterlab-myst: the
extension must be installed, enabled and compatible with the installed JupyterLab (jupyterlab-myst
2.7 is built against @jupyter/ydoc 3; JupyterLab 4.6 ships ydoc 4 and then disables it, showing raw
``{exercise-start}`` fences, hence the pin jupyterlab<4.6 in pyproject.toml)."""
import os
import re
import subprocess
import sys

import pytest


def test_jupyterlab_myst_is_enabled_and_compatible():
    pytest.importorskip("jupyterlab", reason="the lab extra is not installed")
    env = dict(os.environ, JUPYTER_PREFER_ENV_PATH="1")
    out = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"], env=env, capture_output=True,
                         text=True, timeout=120)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)  # no colour codes
    line = next((ln for ln in text.splitlines() if "jupyterlab-myst" in ln and " v" in ln), None)
    assert line is not None, f"jupyterlab-myst is not installed:\n{text}"
    assert "enabled" in line and "OK" in line, f"jupyterlab-myst is not usable: {line.strip()}\n{text}"
    assert "is not compatible with the current JupyterLab" not in text, text


def test_chapter_renders_without_raw_myst_in_jupyterlab():
    """Chapter 3 opened in JupyterLab (headless Chromium, tools/lab_check.py): no directive option
    line, role or exercise fence is visible as raw text."""
    pytest.importorskip("jupyterlab", reason="the lab extra is not installed")
    pytest.importorskip("selenium", reason="selenium is not installed")
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "tools"))
    spec = importlib.util.spec_from_file_location("lab_check", root / "tools" / "lab_check.py")
    lab_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lab_check)
    if lab_check.site_check.find_browser() is None:
        pytest.skip("no chromium/chromedriver (make test-site installs them)")
    chapter = root / "book" / "03_constrained_alignment.md"
    assert lab_check.raw_myst(chapter) == []
    # Control: with jupyterlab-myst switched off the same check sees the raw markup.
    raw = lab_check.raw_myst(chapter, disable=("jupyterlab-myst",))
    assert any(line.startswith(":label: ch3-ex") for line in raw) and any("{doc}" in line for line in raw)
