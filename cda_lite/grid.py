"""Densities on a regular 2-D grid: the exact reference when no closed form exists
(products of mixtures with fractional powers, tilts by arbitrary rewards, histograms of samples).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp


@dataclass(frozen=True)
class Grid:
    """A regular grid of cell centres over [lo_x, hi_x] × [lo_y, hi_y] with n × n cells."""

    lo: tuple
    hi: tuple
    n: int = 256

    @property
    def axes(self):
        return [np.linspace(l, h, self.n) for l, h in zip(self.lo, self.hi)]

    @property
    def cell_area(self) -> float:
        return float(np.prod([(h - l) / (self.n - 1) for l, h in zip(self.lo, self.hi)]))

    @property
    def points(self) -> np.ndarray:
        """(n², 2) cell centres, x varying slowest (matches ``values.reshape(n, n)`` with [ix, iy])."""
        ax, ay = self.axes
        X, Y = np.meshgrid(ax, ay, indexing="ij")
        return np.stack([X.ravel(), Y.ravel()], axis=1)

    @classmethod
    def around(cls, mixtures, n: int = 256, pad: float = 6.0) -> "Grid":
        """A square-celled grid covering every component of the mixtures ± ``pad`` standard deviations."""
        lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
        for m in mixtures:
            if m.dim != 2:
                raise ValueError(f"grids are 2-D only; got a mixture of dimension {m.dim}")
            sd = np.sqrt(np.diagonal(m.covs, axis1=1, axis2=2))
            lo = np.minimum(lo, (m.means - pad * sd).min(0))
            hi = np.maximum(hi, (m.means + pad * sd).max(0))
        return cls(tuple(lo), tuple(hi), n)


class GridDensity:
    """A normalised density given by its log values at the grid's cell centres."""

    def __init__(self, grid: Grid, log_values: np.ndarray):
        self.grid = grid
        lv = np.asarray(log_values, dtype=float).ravel()
        self.log_values = lv - logsumexp(lv) - np.log(grid.cell_area)

    @property
    def probs(self) -> np.ndarray:
        """Cell probabilities (sum to 1)."""
        return np.exp(self.log_values) * self.grid.cell_area

    @property
    def dim(self) -> int:
        return 2

    def mean(self) -> np.ndarray:
        return self.probs @ self.grid.points

    def cov(self) -> np.ndarray:
        d = self.grid.points - self.mean()
        return (self.probs[:, None] * d).T @ d

    def expectation(self, values: np.ndarray) -> float:
        """E[f] for f given at the cell centres."""
        return float(self.probs @ values)

    def log_prob(self, x) -> np.ndarray:
        """Bilinear interpolation of the log density (−inf outside the grid)."""
        from scipy.interpolate import RegularGridInterpolator

        f = RegularGridInterpolator(self.grid.axes, self.log_values.reshape(self.grid.n, self.grid.n),
                                    bounds_error=False, fill_value=-np.inf)
        return f(np.atleast_2d(x))

    def sample(self, n: int, seed: int | None = 0) -> np.ndarray:
        """Draw a cell by its probability, then a uniform point inside it."""
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(self.log_values), size=n, p=self.probs / self.probs.sum())
        step = np.array([(h - l) / (self.grid.n - 1) for l, h in zip(self.grid.lo, self.grid.hi)])
        return self.grid.points[idx] + (rng.random((n, 2)) - 0.5) * step

    def kl_to(self, log_q: np.ndarray) -> float:
        """KL(self ‖ q) with log q given at the cell centres (q normalised on the grid)."""
        lq = np.asarray(log_q, dtype=float) - logsumexp(log_q) - np.log(self.grid.cell_area)
        p = self.probs
        m = p > 0
        return float(np.sum(p[m] * (self.log_values[m] - lq[m])))

    def entropy(self) -> float:
        p = self.probs
        m = p > 0
        return float(-np.sum(p[m] * self.log_values[m]))

    def __repr__(self):
        return f"GridDensity(n={self.grid.n}, box={self.grid.lo}..{self.grid.hi})"
