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
