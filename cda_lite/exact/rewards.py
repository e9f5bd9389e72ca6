"""Rewards with a closed-form tilt on Gaussian mixtures: linear and concave quadratic. Their λ-weighted sum is

    Σ_i λ_i r_i(x) = −½ xᵀP x + hᵀx + c,

the form every exact tilt (:mod:`cda_lite.exact.alignment`) works with. Chapter 2.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from cda_lite._checks import InputError, as_float_array, check_finite, check_psd
from cda_lite.gmm import GaussianMixture

__all__ = ["LinearReward", "QuadraticReward", "reward_from_dict"]


def _check_reward_input(x, dim: int) -> None:
    shape = tuple(np.shape(x))
    if not shape or shape[-1] != dim:
        raise InputError(f"x: a reward on {dim}-D points needs shape (n, {dim}), got shape {shape}")


class LinearReward:
    """r(x) = wᵀx (unbounded above: any level is reachable on its own)."""

    kind = "linear"

    def __init__(self, w, name: str | None = None):
        self.w = as_float_array(w, "w", ndim=1)
        check_finite(self.w, "w")
        self.name = name or f"linear{np.round(self.w, 3).tolist()}"

    @property
    def dim(self):
        return len(self.w)

    def __call__(self, x):
        _check_reward_input(x, self.dim)
        if isinstance(x, torch.Tensor):
            return x @ torch.as_tensor(self.w, dtype=x.dtype, device=x.device)
        return np.asarray(x, dtype=float) @ self.w

    def quadratic_form(self):
        """(P, h, c) with r(x) = −½xᵀPx + hᵀx + c."""
        return np.zeros((self.dim, self.dim)), self.w.copy(), 0.0

    def expectation(self, gm: GaussianMixture) -> float:
        return float(self.w @ gm.mean())

    @property
    def sup(self) -> float:
        return math.inf

    def to_dict(self):
        return {"type": "linear", "w": self.w.tolist()}

    def __repr__(self):
        return f"LinearReward(w={self.w.tolist()})"


class QuadraticReward:
    """r(x) = −(x−c)ᵀA(x−c), A symmetric PSD (bounded above by 0, reached only at x = c)."""

    kind = "quadratic"

    def __init__(self, A, c, name: str | None = None):
        self.A = as_float_array(A, "A", ndim=2)
        self.c = as_float_array(c, "c", ndim=1)
        check_finite(self.A, "A")
        check_finite(self.c, "c")
        if self.A.shape != (len(self.c), len(self.c)):
            raise ValueError(f"A: expected shape ({len(self.c)}, {len(self.c)}) to match c, got {self.A.shape}")
        check_psd(self.A, "A")
        self.name = name or "quadratic"

    @property
    def dim(self):
        return len(self.c)

    def __call__(self, x):
        _check_reward_input(x, self.dim)
        if isinstance(x, torch.Tensor):
            A = torch.as_tensor(self.A, dtype=x.dtype, device=x.device)
            d = x - torch.as_tensor(self.c, dtype=x.dtype, device=x.device)
            return -((d @ A) * d).sum(-1)
        d = np.asarray(x, dtype=float) - self.c
        return -np.einsum("ni,ij,nj->n", d, self.A, d)

    def quadratic_form(self):
        return 2 * self.A, 2 * self.A @ self.c, -float(self.c @ self.A @ self.c)

    def expectation(self, gm: GaussianMixture) -> float:
        d = gm.means - self.c
        per = np.einsum("ij,kji->k", self.A, gm.covs) + np.einsum("ki,ij,kj->k", d, self.A, d)
        return float(-gm.weights @ per)

    @property
    def sup(self) -> float:
        return 0.0

    def to_dict(self):
        return {"type": "quadratic", "A": self.A.tolist(), "c": self.c.tolist()}

    def __repr__(self):
        return f"QuadraticReward(A={self.A.tolist()}, c={self.c.tolist()})"


def reward_from_dict(d: dict, name: str = "reward"):
    """Build a reward from its problem-file entry ``{"type": "linear", "w": ...}`` or
    ``{"type": "quadratic", "A": ..., "c": ...}``."""
    if not isinstance(d, dict) or "type" not in d:
        raise ValueError(f"{name}: expected an object with a 'type' key ('linear' or 'quadratic')")
    keys = {"linear": {"type", "w", "name"}, "quadratic": {"type", "A", "c", "name"}}
    kind = d["type"]
    if kind not in keys:
        raise ValueError(f"{name}: unknown reward type {kind!r}; expected 'linear' or 'quadratic'")
    extra = set(d) - keys[kind]
    if extra:
        raise ValueError(f"{name}: unknown key(s) {sorted(extra)} for a {kind} reward")
    try:
        if kind == "linear":
            return LinearReward(d["w"], name=d.get("name"))
        return QuadraticReward(d["A"], d["c"], name=d.get("name"))
    except KeyError as e:
        raise ValueError(f"{name}: missing key {e.args[0]!r} for a {kind} reward") from None
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
