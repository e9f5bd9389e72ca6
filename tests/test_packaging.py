"""Packaging checks: environment.yml and pyproject.toml agree; ``import cda_lite`` stays light."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf8"))


def pyproject_requirements() -> dict[str, SpecifierSet]:
    """Every requirement of the core and of all extras, by canonical name."""
    project = _pyproject()["project"]
    groups = {"core": project["dependencies"], **project.get("optional-dependencies", {})}
    found: dict[str, tuple[str, SpecifierSet]] = {}
    for group, reqs in groups.items():
        for text in reqs:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            if name in found:
                first_group, spec = found[name]
                assert spec == req.specifier, (
                    f"pyproject.toml: {req.name} is {spec} in [{first_group}] "
                    f"but {req.specifier} in [{group}]"
                )
            else:
                found[name] = (group, req.specifier)
    return {name: spec for name, (_, spec) in found.items()}


def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf8"))


def environment_pip_requirements() -> dict[str, SpecifierSet]:
    deps = environment()["dependencies"]
    pip_lists = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml needs exactly one pip: section"
    found: dict[str, SpecifierSet] = {}
    for text in pip_lists[0]:
        if text.startswith("-e"):  # the project itself
            assert text.split(None, 1)[1].strip() in (".", "./"), text
            continue
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name not in found, f"environment.yml lists {req.name} twice"
        found[name] = req.specifier
    return found


def _pinned(spec: SpecifierSet) -> Version | None:
    pins = [s for s in spec if s.operator == "=="]
    return Version(pins[0].version) if len(pins) == 1 and len(spec) == 1 else None


def compatible(env_spec: SpecifierSet, project_spec: SpecifierSet) -> bool:
    """Same specifier, or environment.yml pins a version that pyproject.toml accepts."""
    if env_spec == project_spec:
        return True
    pin = _pinned(env_spec)
    return pin is not None and project_spec.contains(pin, prereleases=True)


def test_every_pyproject_dependency_is_in_environment_yml():
    env = environment_pip_requirements()
    for name, spec in pyproject_requirements().items():
        assert name in env, f"{name}{spec} (pyproject.toml) missing from environment.yml"
        assert compatible(env[name], spec), (
            f"{name}: environment.yml has '{env[name]}', pyproject.toml has '{spec}'"
        )


def test_every_environment_yml_dependency_is_in_pyproject():
    project = pyproject_requirements()
    for name, spec in environment_pip_requirements().items():
        assert name in project, f"{name}{spec} (environment.yml) missing from pyproject.toml"


def test_python_and_torch_pins_agree():
    deps = environment()["dependencies"]
    pythons = [d for d in deps if isinstance(d, str) and re.match(r"python\s*[=<>]", d)]
    assert len(pythons) == 1, "environment.yml must pin python"
    version = Version(re.split(r"[=<>]+", pythons[0], maxsplit=1)[1].strip())
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert requires.contains(version), f"python {version} does not satisfy requires-python {requires}"
    # The Makefile installs the same torch as environment.yml, before anything else.
    makefile = (ROOT / "Makefile").read_text(encoding="utf8")
    torch_pin = re.search(r"^TORCH\s*:?=\s*(\S+)", makefile, re.M)
    assert torch_pin, "Makefile must define TORCH"
    assert _pinned(environment_pip_requirements()["torch"]) == _pinned(
        Requirement(torch_pin.group(1)).specifier
    )
    first_pip = next(d["pip"] for d in deps if isinstance(d, dict))[0]
    assert canonicalize_name(Requirement(first_pip).name) == "torch", "torch must come first"


HEAVY = ("diffusers", "transformers", "peft")


def test_import_cda_lite_does_not_import_heavy_libraries():
    code = (
        "import json, sys; import cda_lite; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"`import cda_lite` imports {loaded}; import them lazily in cda_lite.sd"


@pytest.mark.parametrize("chapter", sorted((ROOT / "book").glob("*.md")), ids=lambda p: p.name)
def test_chapters_are_myst_notebooks(chapter):
    """Every chapter listed in the book is a jupytext MyST notebook (so make test runs it)."""
    text = chapter.read_text(encoding="utf8")
    if not text.startswith("---\n"):
        pytest.skip("plain markdown page")
    header = yaml.safe_load(text.split("---\n", 2)[1])
    assert header["jupytext"]["text_representation"]["format_name"] == "myst"
    assert header["kernelspec"]["name"] == "python3"
