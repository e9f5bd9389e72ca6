"""The primal-dual core shared by every rung (2-D, digits, Stable Diffusion).

- :class:`Constraint`: a reward, a level and a direction (E r ≥ b or E r ≤ b), optionally in σ units
  of the pretrained model's reward distribution (:class:`RewardNormalizer`), as in the paper.
- :class:`DualAscent`: the multipliers λ ≥ 0 of the alignment problem (UR-A) with projected
  gradient ascent, the νPI controller of the paper's code (κ_p = 0 gives plain ascent) and a
  warm-up ramp of the dual step; a history of λ, slacks and KL per step; a report when a
  constraint stays violated while its λ keeps growing (likely infeasible).
- :class:`SimplexDual`: the multipliers of the composition problems (AND/OR), λ on the simplex,
  updated by λ ← Proj_Δ(λ + η · KL_i) (Algorithms 2–3).
- :func:`lagrangian`: L(θ, λ) = KL − Σ_i λ_i s_i (Ê r_i − b_i), s_i = +1 for ≥ and −1 for ≤.

Dual states are plain data (``state_dict`` / ``load_state_dict``) so training runs checkpoint and
resume exactly. Chapters 4, 5, 9, 10.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from cda_lite._checks import InputError, check_count, check_number
from cda_lite.errors import InfeasibleConstraintError


@dataclass
class RewardNormalizer:
    """r ↦ (r − mean) / std with the pretrained model's reward statistics (levels in σ units)."""

    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        if not (math.isfinite(self.mean) and math.isfinite(self.std)) or self.std <= 0:
            raise ValueError(f"RewardNormalizer: need finite mean and std > 0, got mean={self.mean}, std={self.std}")

    @classmethod
    def fit(cls, values) -> "RewardNormalizer":
        """Estimate from reward values of the pretrained model's samples (fails loudly if degenerate)."""
        v = torch.as_tensor(values, dtype=torch.float64).flatten()
        if v.numel() < 2 or not torch.isfinite(v).all():
            raise ValueError("RewardNormalizer.fit: need at least 2 finite reward values")
        std = float(v.std())
        if std <= 0:
            raise ValueError("RewardNormalizer.fit: the rewards have zero spread; cannot normalise")
        return cls(float(v.mean()), std)

    def __call__(self, r):
        return (r - self.mean) / self.std

    def to_raw_level(self, level: float) -> float:
        return self.mean + self.std * level


@dataclass
class Constraint:
    """E_p[r(x)] ≥ level (``direction=">="``) or ≤ level, in normalised units when ``normalizer`` is set."""

    name: str
    reward: Callable
    level: float
    direction: str = ">="
    normalizer: RewardNormalizer | None = None

    def __post_init__(self):
        if self.direction not in (">=", "<="):
            raise ValueError(f"constraint {self.name!r}: direction must be '>=' or '<=', got {self.direction!r}")
        if not math.isfinite(self.level):
            raise ValueError(f"constraint {self.name!r}: level must be finite, got {self.level}")

    @property
    def sign(self) -> float:
        return 1.0 if self.direction == ">=" else -1.0

    def value(self, x, *args) -> torch.Tensor:
        """Per-sample (normalised) reward."""
        r = self.reward(x, *args)
        return self.normalizer(r) if self.normalizer is not None else r

    def slack(self, expected: float) -> float:
        """s · (E r − b): ≥ 0 when the constraint holds."""
        return self.sign * (expected - self.level)

    def raw_level(self) -> float:
        return self.normalizer.to_raw_level(self.level) if self.normalizer else self.level

    def to_raw_multiplier(self, lam: float) -> float:
        """λ in the reward's own units: λ·(r − m)/s has coefficient λ/s on r."""
        return lam / self.normalizer.std if self.normalizer else lam

    def describe(self) -> dict:
        return {"name": self.name, "direction": self.direction, "level": self.level,
                "units": "sigma" if self.normalizer else "raw"}


def lagrangian(kl: torch.Tensor, rewards: torch.Tensor, constraints, lam) -> torch.Tensor:
    """L(θ, λ) = KL − Σ_i λ_i s_i (mean r_i − b_i); ``rewards`` is (m, n) per-sample normalised rewards."""
    lam_t = torch.as_tensor(np.asarray(lam, dtype=float), dtype=rewards.dtype, device=rewards.device)
    signs = torch.tensor([c.sign for c in constraints], dtype=rewards.dtype, device=rewards.device)
    levels = torch.tensor([c.level for c in constraints], dtype=rewards.dtype, device=rewards.device)
    return kl - (lam_t * signs * (rewards.mean(1) - levels)).sum()


def weighted_objective(kl: torch.Tensor, rewards: torch.Tensor, weights, signs=None) -> torch.Tensor:
    """The fixed-weights baseline: KL − Σ_i w_i s_i mean r_i (no dual updates)."""
    w = torch.as_tensor(np.asarray(weights, dtype=float), dtype=rewards.dtype, device=rewards.device)
    s = torch.ones_like(w) if signs is None else torch.as_tensor(signs, dtype=rewards.dtype)
    return kl - (w * s * rewards.mean(1)).sum()


@dataclass
class DualAscent:
    """Multipliers λ ≥ 0 for constraints s_i(E r_i − b_i) ≥ 0.

    Update (νPI, Sohrabi et al. 2024, as in the paper's code): with violation e = −slack,
    ξ ← ν ξ + (1 − ν) e;  λ ← [λ + ρ(k) (κ_i e + κ_p (ξ − ξ_prev))]₊, where ρ(k) = min(1, (k+1)/warmup)
    ramps the step in. κ_p = 0 is projected dual ascent λ ← [λ − η · slack]₊ with η = κ_i.
    """

    n: int
    lr: float = 0.5  # κ_i, the dual step size
    kappa_p: float = 0.0  # proportional gain of νPI (0: plain projected ascent)
    nu: float = 0.0  # EMA factor of the νPI error signal
    warmup: int = 0  # dual steps over which the step size ramps from 1/warmup to 1
    init: float | list | None = None  # initial λ (default 1/m, as Algorithm 1)
    patience: int = 50  # consecutive violated steps with growing λ before reporting infeasibility
    on_infeasible: str = "raise"  # "raise" | "warn" | "ignore"
    names: list | None = None
    lam: np.ndarray = field(init=False)
    xi: np.ndarray = field(init=False)
    step: int = field(init=False, default=0)
    history: list = field(init=False, default_factory=list)
    _violated_run: np.ndarray = field(init=False)

    def __post_init__(self):
        check_count(self.n, "n (constraints)")
        check_number(self.lr, "lr", positive=True)
        check_number(self.kappa_p, "kappa_p", nonnegative=True)
        if not 0 <= check_number(self.nu, "nu") < 1:
            raise InputError(f"nu: the EMA factor must lie in [0, 1), got {self.nu}")
        check_count(self.warmup, "warmup", minimum=0)
        check_count(self.patience, "patience")
        if self.on_infeasible not in ("raise", "warn", "ignore"):
            raise ValueError("on_infeasible must be 'raise', 'warn' or 'ignore'")
        init = 1.0 / self.n if self.init is None else self.init
        self.lam = np.broadcast_to(np.asarray(init, dtype=float), (self.n,)).copy()
        if np.any(self.lam < 0) or not np.all(np.isfinite(self.lam)):
            raise ValueError(f"initial λ must be finite and ≥ 0, got {self.lam}")
        self.xi = np.zeros(self.n)
        self._violated_run = np.zeros(self.n, dtype=int)
        self.names = list(self.names) if self.names else [f"constraint {i}" for i in range(self.n)]

    def update(self, slacks, kl: float | None = None, **extra) -> np.ndarray:
        """One dual step from the constraint slacks s_i(Ê r_i − b_i); records history; returns λ."""
        slacks = np.asarray(slacks, dtype=float)
        if slacks.shape != (self.n,):
            raise ValueError(f"slacks: expected shape ({self.n},), got {slacks.shape}")
        if not np.all(np.isfinite(slacks)):
            raise FloatingPointError(f"non-finite constraint slacks {slacks.tolist()} at dual step {self.step}")
        e = -slacks
        xi_prev = self.xi
        self.xi = self.nu * self.xi + (1 - self.nu) * e
        ramp = min(1.0, (self.step + 1) / self.warmup) if self.warmup > 0 else 1.0
        self.lam = np.maximum(self.lam + ramp * (self.lr * e + self.kappa_p * (self.xi - xi_prev)), 0.0)
        self.step += 1
        self.history.append({"step": self.step, "lam": self.lam.tolist(), "slacks": slacks.tolist(),
                             "kl": None if kl is None else float(kl), **extra})
        self._check_feasibility(slacks)
        return self.lam.copy()

    def _check_feasibility(self, slacks):
        growing = slacks < 0
        self._violated_run = np.where(growing, self._violated_run + 1, 0)
        stuck = np.flatnonzero(self._violated_run >= self.patience)
        if len(stuck) and self.on_infeasible != "ignore":
            msg = "; ".join(
                f"{self.names[i]} violated for {self._violated_run[i]} dual steps (slack {slacks[i]:.3g}, "
                f"λ grew to {self.lam[i]:.3g})" for i in stuck)
            msg = "likely infeasible constraint level(s): " + msg + ". Lower the level or check the reward."
            if self.on_infeasible == "raise":
                raise InfeasibleConstraintError(msg, stuck.tolist())
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            self._violated_run[stuck] = 0

    @property
    def lam_history(self) -> np.ndarray:
        return np.array([h["lam"] for h in self.history]) if self.history else np.empty((0, self.n))

    def averaged(self, fraction: float = 0.25) -> np.ndarray:
        """Average of the last ``fraction`` of the λ iterates (Polyak averaging of the dual sequence)."""
        h = self.lam_history
        if len(h) == 0:
            return self.lam.copy()
        k = max(1, int(round(fraction * len(h))))
        return h[-k:].mean(0)

    def state_dict(self) -> dict:
        return {"lam": self.lam.tolist(), "xi": self.xi.tolist(), "step": self.step,
                "history": list(self.history), "violated_run": self._violated_run.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.lam = np.asarray(state["lam"], dtype=float)
        self.xi = np.asarray(state["xi"], dtype=float)
        self.step = int(state["step"])
        self.history = list(state["history"])
        self._violated_run = np.asarray(state.get("violated_run", np.zeros(self.n)), dtype=int)


def project_simplex(v) -> np.ndarray:
    """Euclidean projection onto the probability simplex (sort-based; Duchi et al. 2008)."""
    v = np.asarray(v, dtype=float)
    if v.ndim != 1 or len(v) == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"project_simplex: expected a finite non-empty vector, got {v}")
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, len(v) + 1)
    rho = np.flatnonzero(u - css / k > 0)[-1]
    return np.maximum(v - css[rho] / (rho + 1), 0.0)


def bounded_newton_step(b, hessian, lam, active, sum_zero: bool = False, ridge: float = 1e-3) -> np.ndarray:
    """The step d maximising the quadratic model bᵀd − ½dᵀHd of a concave dual at λ, over the
    coordinates in ``active`` (d_i = 0 elsewhere), keeping λ + d ≥ 0 and, with ``sum_zero``, Σd = 0
    (the simplex). A primal active-set method: solve the model on the free coordinates (a KKT system
    with the sum); where the step would take some λ_i below 0, stop the first such coordinate at
    d_i = −λ_i and solve again; when no coordinate crosses, free a stopped one whose model gradient
    (its KKT multiplier) still points up, and solve again. ``ridge`` × the mean diagonal keeps a noisy H
    invertible. Projecting an unbounded Newton step instead would keep the other coordinates' share of
    a step that one coordinate never took."""
    b = np.asarray(b, float)
    H = np.asarray(hessian, float)
    lam = np.asarray(lam, float)
    free = np.array(active, bool)
    n = len(b)
    if b.ndim != 1 or H.shape != (n, n) or lam.shape != (n,) or free.shape != (n,):
        raise ValueError(f"b, hessian, lam, active: expected shapes ({n},), ({n}, {n}), ({n},), ({n},); got "
                         f"{b.shape}, {H.shape}, {lam.shape}, {free.shape}")
    for name, v in (("b", b), ("hessian", H), ("lam", lam)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name}: contains non-finite values (NaN or inf)")
    Hr = (H + H.T) / 2
    d = np.zeros(n)
    stopped = np.zeros(n, bool)
    for _ in range(4 * n + 4):
        nu = 0.0
        idx = np.flatnonzero(free)
        k = len(idx)
        if k >= (2 if sum_zero else 1):
            Ha = Hr[np.ix_(idx, idx)] + ridge * max(float(np.trace(Hr[np.ix_(idx, idx)])) / k, 1e-12) * np.eye(k)
            rhs = b[idx] - Hr[np.ix_(idx, np.flatnonzero(stopped))] @ d[stopped]
            if sum_zero:
                kkt = np.block([[Ha, np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
                sol = np.linalg.solve(kkt, np.r_[rhs, -d[stopped].sum()])
                d[idx], nu = sol[:k], float(sol[k])
            else:
                d[idx] = np.linalg.solve(Ha, rhs)
        elif sum_zero:  # one coordinate (or none) left free: it takes up what the stopped ones gave
            d[idx] = -d[stopped].sum()
        crossing = np.flatnonzero(free & (lam + d < 0))
        if len(crossing):
            i = crossing[np.argmin(lam[crossing] / -d[crossing])]  # the first to reach 0 stops there
            d[i], free[i], stopped[i] = -lam[i], False, True
            continue
        grad = b - Hr @ d - nu  # the model's gradient; at a stopped coordinate, its KKT multiplier
        up = np.flatnonzero(stopped & (grad > 1e-12 * max(1.0, float(np.abs(b).max()))))
        if not len(up):
            return d
        i = up[np.argmax(grad[up])]
        free[i], stopped[i] = True, False
    return d


def simplex_newton_direction(g, hessian, lam, ridge: float = 1e-3) -> np.ndarray:
    """Newton's direction for maximising a concave D(λ) on the simplex, from its gradient ``g`` and
    ``hessian`` = −∇²D (positive semidefinite): d maximises gᵀd − ½dᵀHd subject to Σ d_i = 0, λ + d ≥ 0
    and d_i = 0 off the active set (λ_i > 0, or λ_i = 0 with g_i above the active mean: an expert about
    to enter); :func:`bounded_newton_step`. For the AND dual, g_i = KL(p_λ ‖ q_i) and
    H = Cov_{p_λ}(log q_i, log q_j)."""
    g = np.asarray(g, float)
    H = np.atleast_2d(np.asarray(hessian, float))
    lam = np.asarray(lam, float)
    n = len(g)
    if g.ndim != 1 or not np.all(np.isfinite(g)):
        raise ValueError(f"g: expected a finite vector, got {g}")
    if H.shape != (n, n) or not np.all(np.isfinite(H)):
        raise ValueError(f"hessian: expected a finite ({n}, {n}) matrix for {n} values, got shape {H.shape}")
    if lam.shape != (n,) or not np.all(np.isfinite(lam)):
        raise ValueError(f"lam: expected {n} finite weights, got {lam}")
    active = lam > 1e-12  # (a projection leaves round-off such as 1e-17 on a face)
    if not active.any():
        raise ValueError(f"lam: expected a point of the simplex, got {lam}")
    active |= g > g[active].mean()
    return bounded_newton_step(g, H, lam, active, sum_zero=True, ridge=ridge)


@dataclass
class SimplexDual:
    """λ on the simplex for the composition problems: λ ← Proj_Δ(λ + η_k · g), g the per-expert KLs
    (AND) or denoising losses (OR); η_k = lr · decay^k (the paper decays the dual lr by 0.9 per step).

    ``normalized=True`` takes steps of length η_k along g − mean(g) (a normalised subgradient step;
    ``lr`` is then a distance on the simplex). The projection ignores the mean of g, so only the
    spread of the KLs sets the direction, and a problem whose KLs differ little still moves λ by
    η_0 (1 + decay + …) in all: the plain step moves it by η_k times that small spread. Given the
    dual's curvature (``update(values, hessian=H)``), the step is Newton's, capped at length η_k: near
    λ* it shrinks by itself, where a normalised gradient step keeps its length η_k."""

    n: int
    lr: float = 1.0
    decay: float = 1.0
    init: list | None = None
    normalized: bool = False
    lam: np.ndarray = field(init=False)
    step: int = field(init=False, default=0)
    history: list = field(init=False, default_factory=list)

    def __post_init__(self):
        if check_count(self.n, "n") < 2:
            raise InputError("n: SimplexDual needs at least two experts")
        check_number(self.lr, "lr", positive=True)
        check_number(self.decay, "decay", positive=True)
        lam = np.full(self.n, 1.0 / self.n) if self.init is None else np.asarray(self.init, dtype=float)
        if lam.shape != (self.n,) or np.any(lam < 0) or abs(lam.sum() - 1) > 1e-8:
            raise ValueError(f"initial λ must lie on the simplex, got {lam}")
        self.lam = lam

    def update(self, values, hessian=None, **extra) -> np.ndarray:
        """One step with the per-expert ``values`` g. With ``hessian`` (−∇²D; normalised steps only):
        Newton's step (:func:`simplex_newton_direction`), shortened to length η_k where it is longer
        (far from λ* the quadratic model of D overshoots; near λ* the step is exact to second order)."""
        g = np.asarray(values, dtype=float)
        if g.shape != (self.n,) or not np.all(np.isfinite(g)):
            raise ValueError(f"values: expected {self.n} finite numbers, got {g}")
        if hessian is not None and not self.normalized:
            raise ValueError("hessian: a Newton step needs normalized=True (its length is capped at η_k)")
        eta = self.lr * self.decay**self.step
        d = simplex_newton_direction(g, hessian, self.lam) if hessian is not None else None
        if d is not None:
            norm = float(np.linalg.norm(d))
            self.lam = project_simplex(self.lam + d * min(1.0, eta / norm)) if norm > 0 else self.lam.copy()
        elif self.normalized:
            d = g - g.mean()
            norm = float(np.linalg.norm(d))
            self.lam = project_simplex(self.lam + (eta / norm) * d) if norm > 0 else self.lam.copy()
        else:
            self.lam = project_simplex(self.lam + eta * g)
        self.step += 1
        self.history.append({"step": self.step, "lam": self.lam.tolist(), "values": g.tolist(), **extra})
        return self.lam.copy()

    @property
    def lam_history(self) -> np.ndarray:
        return np.array([h["lam"] for h in self.history]) if self.history else np.empty((0, self.n))

    def averaged(self, last: int = 5) -> np.ndarray:
        h = self.lam_history
        return h[-last:].mean(0) if len(h) else self.lam.copy()

    def state_dict(self) -> dict:
        return {"lam": self.lam.tolist(), "step": self.step, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.lam = np.asarray(state["lam"], dtype=float)
        self.step = int(state["step"])
        self.history = list(state["history"])
