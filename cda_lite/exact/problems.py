"""2-D problem files (JSON): the one loader every 2-D command uses. Documented in the book's
appendix "Problem files".

Alignment::

    {"base": {"weights": [...], "means": [[...]], "covs": [[[...]]]},
     "rewards": [{"type": "linear", "w": [1, 0]}, {"type": "quadratic", "A": [[1,0],[0,1]], "c": [0, 1]}],
     "thresholds": [0.5, -2.0],
     "seed": 0}

Composition::

    {"experts": [{"weights": ..., "means": ..., "covs": ...}, ...], "seed": 0}

Random families (:func:`random_alignment`, :func:`random_composition`) draw problems nobody tuned a
preset for, one per seed, as ordinary :class:`AlignmentProblem` / :class:`CompositionProblem` objects
that :func:`save_problem` writes out as problem files (``python -m cda_lite.bench sweep`` runs them).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from cda_lite._checks import UserError
from cda_lite.errors import InfeasibleConstraintError
from cda_lite.exact.alignment import align_dual
from cda_lite.exact.rewards import LinearReward, QuadraticReward, reward_from_dict
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


# --------------------------------------------------------------------------- random families
def _random_cov(rng, scale_lo: float, scale_hi: float) -> np.ndarray:
    """R(θ) diag(s₁², s₂²) R(θ)ᵀ with θ ~ U[0, π), s_j ~ U[scale_lo, scale_hi]: a full 2-D covariance."""
    th = rng.uniform(0, math.pi)
    R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    s = rng.uniform(scale_lo, scale_hi, size=2)
    return R @ np.diag(s**2) @ R.T


def reward_moments(gm: GaussianMixture, reward) -> tuple[float, float]:
    """Exact mean and standard deviation of a linear or quadratic reward under a Gaussian mixture.

    Linear wᵀx: Var = wᵀ Cov w. Quadratic −(x−c)ᵀA(x−c) under N(μ, Σ) with d = μ − c: mean
    −(tr AΣ + dᵀAd), variance 2 tr(AΣAΣ) + 4 dᵀAΣAd; the mixture's by the law of total variance."""
    if isinstance(reward, LinearReward):
        return float(reward.w @ gm.mean()), float(math.sqrt(reward.w @ gm.cov() @ reward.w))
    if isinstance(reward, QuadraticReward):
        A = reward.A
        d = gm.means - reward.c
        m_k = -(np.einsum("ij,kji->k", A, gm.covs) + np.einsum("ki,ij,kj->k", d, A, d))
        AS = np.einsum("ij,kjl->kil", A, gm.covs)
        v_k = 2 * np.einsum("kij,kji->k", AS, AS) + 4 * np.einsum("ki,kij,kj->k", d, np.einsum("kij,jl->kil", AS, A), d)
        mean = float(gm.weights @ m_k)
        var = float(gm.weights @ (v_k + m_k**2) - mean**2)
        return mean, math.sqrt(max(var, 0.0))
    raise TypeError(f"reward: expected a LinearReward or QuadraticReward, got {type(reward).__name__}")


def random_alignment(seed: int, components: tuple[int, int] = (2, 4), sigma_range: tuple[float, float] = (0.3, 1.0),
                     max_tries: int = 100) -> AlignmentProblem:
    """One draw of the random 2-D alignment family (deterministic per ``seed``).

    Distribution: K ~ U{components}; weights ~ Dirichlet(2, …, 2); means ~ U[−2, 2]²; covariances
    R(θ) diag(s₁², s₂²) R(θ)ᵀ, θ ~ U[0, π), s ~ U[0.25, 0.7]. Rewards: a linear r₁ = wᵀx with w a
    uniform unit vector, and a quadratic r₂ = −(x−c)ᵀA(x−c) with c ~ U[−2, 2]² and A a rotated
    diag(a₁, a₂), a ~ U[0.3, 1]. Levels b_i = E_q r_i + k_i σ_q(r_i) with k_i ~ U[sigma_range]
    (exact moments, :func:`reward_moments`). A draw that :func:`cda_lite.exact.align_dual` finds
    infeasible is discarded and the next one drawn from the same stream."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected an integer ≥ 0, got {seed!r}")
    lo, hi = components
    if not 1 <= lo <= hi:
        raise ValueError(f"components: expected 1 ≤ low ≤ high, got {components}")
    if not 0 <= sigma_range[0] <= sigma_range[1]:
        raise ValueError(f"sigma_range: expected 0 ≤ low ≤ high, got {sigma_range}")
    rng = np.random.default_rng([int(seed), 12])
    for _ in range(max_tries):
        K = int(rng.integers(lo, hi + 1))
        weights = rng.dirichlet(np.full(K, 2.0))
        means = rng.uniform(-2, 2, size=(K, 2))
        covs = np.stack([_random_cov(rng, 0.25, 0.7) for _ in range(K)])
        base = GaussianMixture(weights, means, covs)
        phi = rng.uniform(0, 2 * math.pi)
        lin = LinearReward([math.cos(phi), math.sin(phi)], name="linear")
        A = _random_cov(rng, math.sqrt(0.3), 1.0)
        quad = QuadraticReward(A, rng.uniform(-2, 2, size=2), name="quadratic")
        rewards = [lin, quad]
        k = rng.uniform(*sigma_range, size=2)
        levels = np.array([m + kk * s for (m, s), kk in zip((reward_moments(base, r) for r in rewards), k)])
        try:
            align_dual(base, rewards, levels)
        except InfeasibleConstraintError:
            continue
        return AlignmentProblem(base, rewards, levels, int(seed), f"random_alignment_{seed}")
    raise RuntimeError(f"random_alignment: no feasible draw in {max_tries} tries for seed {seed}")


def random_composition(seed: int, experts: tuple[int, int] = (2, 4), wide_probability: float = 0.3) -> CompositionProblem:
    """One draw of the random 2-D AND-composition family (deterministic per ``seed``).

    Distribution: m ~ U{experts} single-Gaussian experts, means ~ U[−1, 1]², covariances
    R(θ) diag(s₁², s₂²) R(θ)ᵀ with s ~ U[0.15, 0.8] (unequal, full). With probability
    ``wide_probability`` one more expert is wide (s ~ U[1.2, 2]) and centred near the others' mean:
    such an expert often covers the product of the rest and is inactive at λ* (λ*_i = 0, its KL
    below the common level; Theorem 3's KKT conditions)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected an integer ≥ 0, got {seed!r}")
    lo, hi = experts
    if not 2 <= lo <= hi:
        raise ValueError(f"experts: expected 2 ≤ low ≤ high, got {experts}")
    rng = np.random.default_rng([int(seed), 13])
    m = int(rng.integers(lo, hi + 1))
    wide = bool(rng.uniform() < wide_probability)
    n_narrow = m - 1 if wide else m
    n_narrow = max(n_narrow, 1)
    means = [rng.uniform(-1, 1, size=2) for _ in range(n_narrow)]
    covs = [_random_cov(rng, 0.15, 0.8) for _ in range(n_narrow)]
    if wide:
        means.append(np.mean(means, axis=0) + rng.normal(0, 0.2, size=2))
        covs.append(_random_cov(rng, 1.2, 2.0))
    order = rng.permutation(len(means))
    gms = [GaussianMixture.gaussian(means[i], covs[i]) for i in order]
    return CompositionProblem(gms, int(seed), f"random_composition_{seed}")
