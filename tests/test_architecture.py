"""The layers of the library (pyproject.toml ``[tool.importlinter]``) hold, and a wrong import breaks them.

import-linter reads the import graph statically (grimp), so the check runs on a copy of the package with
one deliberately wrong import added, without executing it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (test extra)")


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT), "--no-cache", "--config", str(tree / "pyproject.toml")], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=120)


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "cda_lite", tmp_path / "cda_lite", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _add_import(tree: Path, module: str, line: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = tree / module.replace(".", "/") / "__init__.py"
    path.write_text(path.read_text(encoding="utf8") + f"\n\ndef _wrong():\n    {line}\n", encoding="utf8")


def test_contracts_hold_on_the_real_tree(tmp_path):
    result = _lint(_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, line, contract", [
    # the core reaching up into a rung
    ("cda_lite.sampling", "from cda_lite.sd import lora", "Layers"),
    # the 2-D truth importing something learned
    ("cda_lite.gmm", "from cda_lite.models import MLPEps", "The 2-D truth imports nothing learned"),
    # one rung importing the other
    ("cda_lite.digits.data", "from cda_lite.sd import lora", "The rungs never import each other"),
    # a circle between two modules of one layer (exact already imports gmm)
    ("cda_lite.gmm", "from cda_lite.exact import tilt", "No import cycles"),
])
def test_a_wrong_import_breaks_a_contract(tmp_path, module, line, contract):
    tree = _copy(tmp_path)
    _add_import(tree, module, line)
    result = _lint(tree)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
