"""2-D problem files (JSON): the one loader every 2-D command uses. Documented in the book's
appendix "Problem files".

Alignment::

    {"base": {"weights": [...], "means": [[...]], "covs": [[[...]]]},
     "rewards": [{"type": "linear", "w": [1, 0]}, {"type": "quadratic", "A": [[1,0],[0,1]], "c": [0, 1]}],
     "thresholds": [0.5, -2.0],
     "seed": 0}

Composition::

    {"experts": [{"weights": ..., "means": ..., "covs": ...}, ...], "seed": 0}
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from cda_lite._checks import UserError
from cda_lite.exact.rewards import reward_from_dict
from cda_lite.gmm import GaussianMixture

ALIGN_KEYS = {"base", "rewards", "thresholds", "seed", "name", "description"}
COMPOSE_KEYS = {"experts", "seed", "name", "description"}


@dataclass
class AlignmentProblem:
    base: GaussianMixture
    rewards: list
    thresholds: np.ndarray
    seed: int = 0
    name: str = "problem"

    def to_dict(self) -> dict:
        return {"name": self.name, "base": self.base.to_dict(), "rewards": [r.to_dict() for r in self.rewards],
                "thresholds": np.asarray(self.thresholds).tolist(), "seed": self.seed}


@dataclass
class CompositionProblem:
    experts: list = field(default_factory=list)
    seed: int = 0
    name: str = "problem"

    def to_dict(self) -> dict:
        return {"name": self.name, "experts": [e.to_dict() for e in self.experts], "seed": self.seed}


def load_problem(source) -> AlignmentProblem | CompositionProblem:
    """Load a problem from a path, a JSON string or a dict; unknown keys and bad values raise
    ValueError naming the key."""
    if isinstance(source, dict):
        d, where = source, "problem"
    else:
        text = str(source)
        if os.path.exists(text):
            where = text
            with open(text) as f:
                try:
                    d = json.load(f)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{where}: not valid JSON ({e})") from None
        elif text.lstrip().startswith("{"):
            where = "problem"
            d = json.loads(text)
        else:
            raise OSError(f"problem file not found: {text}")
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object at the top level")
    seed = d.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"{where}: 'seed' must be an integer, got {seed!r}")
    name = d.get("name", os.path.splitext(os.path.basename(where))[0])
    if "experts" in d:
        extra = set(d) - COMPOSE_KEYS
        if extra:
            raise ValueError(f"{where}: unknown key(s) {sorted(extra)} in a composition problem; allowed: {sorted(COMPOSE_KEYS)}")
        if not isinstance(d["experts"], list) or len(d["experts"]) < 2:
            raise ValueError(f"{where}: 'experts' must be a list of at least 2 mixtures")
        experts = [GaussianMixture.from_dict(e, f"experts[{i}]") for i, e in enumerate(d["experts"])]
        dims = {e.dim for e in experts}
        if len(dims) > 1:
            raise ValueError(f"{where}: experts have different dimensions {sorted(dims)}")
        return CompositionProblem(experts, seed, name)
    extra = set(d) - ALIGN_KEYS
    if extra:
        raise ValueError(f"{where}: unknown key(s) {sorted(extra)}; allowed: {sorted(ALIGN_KEYS | COMPOSE_KEYS)}")
    for key in ("base", "rewards", "thresholds"):
        if key not in d:
            raise ValueError(f"{where}: missing key {key!r} (an alignment problem needs base, rewards, thresholds)")
    base = GaussianMixture.from_dict(d["base"], "base")
    if not isinstance(d["rewards"], list) or not d["rewards"]:
        raise ValueError(f"{where}: 'rewards' must be a non-empty list")
    rewards = [reward_from_dict(r, f"rewards[{i}]") for i, r in enumerate(d["rewards"])]
    for i, r in enumerate(rewards):
        if r.dim != base.dim:
            raise ValueError(f"rewards[{i}]: dimension {r.dim} does not match base dimension {base.dim}")
    th = d["thresholds"]
    if not isinstance(th, list) or len(th) != len(rewards):
        raise ValueError(f"{where}: 'thresholds' must be a list with one level per reward ({len(rewards)})")
    try:
        th = np.array(th, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'thresholds' must be numbers") from None
    if not np.all(np.isfinite(th)):
        raise ValueError(f"{where}: 'thresholds' must be finite numbers")
    return AlignmentProblem(base, rewards, th, seed, name)


def save_problem(problem, path) -> None:
    with open(path, "w") as f:
        json.dump(problem.to_dict(), f, indent=1)


def load_problem_file(path: str, kind: str, command: str = "this command"):
    """Load a 2-D problem file and check it is an ``"align"`` or ``"compose"`` problem."""
    problem = load_problem(path)
    want = AlignmentProblem if kind == "align" else CompositionProblem
    if not isinstance(problem, want):
        have = "a composition problem (with 'experts')" if isinstance(problem, CompositionProblem) else \
            "an alignment problem (with 'base', 'rewards', 'thresholds')"
        need = "an alignment problem file" if kind == "align" else "a composition problem file ('experts')"
        raise UserError(f"{path} is {have}; {command} needs {need}")
    return problem
