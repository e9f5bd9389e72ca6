"""Gaussian mixtures: the exact ground truth of the 2-D chapters.

``GaussianMixture(weights, means, covs)`` holds float64 parameters. ``log_prob`` and ``score``
accept NumPy arrays (and return NumPy) or torch tensors (and return torch, differentiable), so
the same object serves exact computations and the torch samplers. Chapter 1 introduces it.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from cda_lite._checks import InputError, as_float_array, check_count, check_finite, check_simplex


def _check_covs(covs: np.ndarray, name: str = "covs") -> None:
    if not np.allclose(covs, np.swapaxes(covs, -1, -2), rtol=1e-10, atol=1e-12):
        raise ValueError(f"{name}: every covariance must be symmetric")
    eig = np.linalg.eigvalsh(covs)
    if np.any(eig <= 0):
        k = int(np.argwhere(eig <= 0)[0][0]) if eig.ndim > 1 else 0
        raise ValueError(
            f"{name}: covariance {k} is not positive definite (smallest eigenvalue {eig.min():.3g})"
        )


class GaussianMixture:
    """q(x) = Σ_k π_k N(x; μ_k, Σ_k).

    Parameters
    ----------
    weights : (K,) on the probability simplex.
    means : (K, d).
    covs : (K, d, d) symmetric positive definite.
    """

    def __init__(self, weights, means, covs):
        w = as_float_array(weights, "weights", ndim=1)
        mu = as_float_array(means, "means", ndim=2)
        cov = as_float_array(covs, "covs", ndim=3)
        K, d = mu.shape
        if w.shape != (K,):
            raise ValueError(f"weights: expected shape ({K},) to match means {mu.shape}, got {w.shape}")
        if cov.shape != (K, d, d):
            raise ValueError(f"covs: expected shape ({K}, {d}, {d}) to match means {mu.shape}, got {cov.shape}")
        for name, a in (("weights", w), ("means", mu), ("covs", cov)):
            check_finite(a, name)
        check_simplex(w, "weights")
        _check_covs(cov)
        self.weights, self.means, self.covs = w, mu, cov

    # ------------------------------------------------------------------ basics
    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, d={self.dim})"

    def mean(self) -> np.ndarray:
        """E[x] = Σ π_k μ_k."""
        return self.weights @ self.means

    def cov(self) -> np.ndarray:
        """Cov[x] = Σ π_k (Σ_k + μ_k μ_kᵀ) − E[x]E[x]ᵀ."""
        m = self.mean()
        second = np.einsum("k,kij->ij", self.weights, self.covs + np.einsum("ki,kj->kij", self.means, self.means))
        return second - np.outer(m, m)

    def sample(self, n: int, seed: int | None = 0) -> np.ndarray:
        """n reproducible samples, shape (n, d)."""
        n = check_count(n, "n")
        rng = np.random.default_rng(seed)
        comp = rng.choice(self.n_components, size=n, p=self.weights)
        chol = np.linalg.cholesky(self.covs)
        z = rng.standard_normal((n, self.dim))
        return self.means[comp] + np.einsum("nij,nj->ni", chol[comp], z)

    def noised(self, alpha_bar: float) -> "GaussianMixture":
        """VP marginal of √ᾱ x₀ + √(1−ᾱ) ε: Σ π_k N(√ᾱ μ_k, ᾱ Σ_k + (1−ᾱ) I)."""
        ab = float(alpha_bar)
        if not (0.0 < ab <= 1.0):
            raise ValueError(f"alpha_bar must lie in (0, 1], got {alpha_bar}")
        eye = np.eye(self.dim)
        return GaussianMixture(self.weights, math.sqrt(ab) * self.means, ab * self.covs + (1 - ab) * eye)

    def component_log_probs(self, x):
        """log π_k + log N(x; μ_k, Σ_k), shape (n, K)."""
        return _with_backend(x, lambda xt: _component_log_probs(xt, *self._torch_params(xt)), self.dim)

    def log_prob(self, x):
        """log q(x), shape (n,)."""
        return _with_backend(x, lambda xt: torch.logsumexp(_component_log_probs(xt, *self._torch_params(xt)), dim=1),
                             self.dim)

    def score(self, x):
        """∇ₓ log q(x) = Σ_k r_k(x) Σ_k⁻¹(μ_k − x), r_k the responsibilities; shape (n, d)."""
        return _with_backend(x, lambda xt: _score(xt, *self._torch_params(xt)), self.dim)

    def responsibilities(self, x):
        """Posterior component probabilities r_k(x), shape (n, K)."""
        return _with_backend(x, lambda xt: torch.softmax(_component_log_probs(xt, *self._torch_params(xt)), dim=1),
                             self.dim)

    def entropy_mc(self, n: int = 200_000, seed: int = 0) -> float:
        """Monte-Carlo estimate of the differential entropy −E log q."""
        return float(-self.log_prob(self.sample(n, seed)).mean())

    def _torch_params(self, like: torch.Tensor):
        kw = dict(dtype=like.dtype, device=like.device)
        return (torch.as_tensor(self.weights, **kw), torch.as_tensor(self.means, **kw), torch.as_tensor(self.covs, **kw))

    # -------------------------------------------------------------- combining
    @staticmethod
    def mixture_of(mixtures, lam) -> "GaussianMixture":
        """Σ_i λ_i q_i as one flat GaussianMixture (λ on the simplex)."""
        lam = as_float_array(lam, "lam", ndim=1)
        if len(lam) != len(mixtures):
            raise ValueError(f"lam: expected {len(mixtures)} weights, got {len(lam)}")
        check_simplex(lam, "lam")
        w = np.concatenate([l * m.weights for l, m in zip(lam, mixtures)])
        keep = w > 0
        mu = np.concatenate([m.means for m in mixtures])[keep]
        cov = np.concatenate([m.covs for m in mixtures])[keep]
        w = w[keep]
        return GaussianMixture(w / w.sum(), mu, cov)

    def to_dict(self) -> dict:
        return {"weights": self.weights.tolist(), "means": self.means.tolist(), "covs": self.covs.tolist()}

    @classmethod
    def from_dict(cls, d: dict, name: str = "mixture") -> "GaussianMixture":
        missing = {"weights", "means", "covs"} - set(d)
        extra = set(d) - {"weights", "means", "covs"}
        if missing:
            raise ValueError(f"{name}: missing key(s) {sorted(missing)}")
        if extra:
            raise ValueError(f"{name}: unknown key(s) {sorted(extra)}; expected weights, means, covs")
        try:
            return cls(d["weights"], d["means"], d["covs"])
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None

    @classmethod
    def gaussian(cls, mean, cov) -> "GaussianMixture":
        """A single Gaussian N(mean, cov) (cov may be a scalar variance or a matrix)."""
        mean = np.atleast_1d(np.asarray(mean, dtype=float))
        cov = np.asarray(cov, dtype=float)
        if cov.ndim == 0:
            cov = float(cov) * np.eye(len(mean))
        return cls([1.0], [mean], [cov])


# ---------------------------------------------------------------------- torch kernels
def _component_log_probs(x, weights, means, covs):
    """log π_k + log N(x; μ_k, Σ_k) for x (n, d); means/covs may carry a leading batch dim."""
    d = x.shape[-1]
    chol = torch.linalg.cholesky(covs)  # (..., K, d, d)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    chol_inv = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)
    diff = x.unsqueeze(-2) - means  # (n, K, d)
    sol = torch.einsum("...kij,...kj->...ki", chol_inv, diff)
    maha = (sol**2).sum(-1)
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return torch.log(weights) - 0.5 * (maha + logdet + d * math.log(2 * math.pi))


def _score(x, weights, means, covs):
    logp = _component_log_probs(x, weights, means, covs)
    resp = torch.softmax(logp, dim=-1)  # (n, K)
    prec = torch.linalg.inv(covs)
    prec_diff = torch.einsum("...kij,...kj->...ki", prec, means - x.unsqueeze(-2))  # (n, K, d)
    return (resp.unsqueeze(-1) * prec_diff).sum(-2)


def noised_score(gm: GaussianMixture, x: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Score of the VP marginal of ``gm`` at per-sample noise levels.

    ``alpha_bar`` is a scalar or a (n,) tensor; the marginal is Σ π_k N(√ᾱ μ_k, ᾱ Σ_k + (1−ᾱ) I).
    Differentiable in ``x``.
    """
    _check_points(x, gm.dim)
    w, mu, cov = gm._torch_params(x)
    ab = torch.as_tensor(alpha_bar, dtype=x.dtype, device=x.device)
    eye = torch.eye(gm.dim, dtype=x.dtype, device=x.device)
    if ab.ndim == 0 or bool((ab == ab.flatten()[0]).all()):  # one noise level: shared components
        a = ab.flatten()[0]
        return _score(x, w, a.sqrt() * mu, a * cov + (1 - a) * eye)
    eye = torch.eye(gm.dim, dtype=x.dtype, device=x.device)
    means_t = ab.sqrt()[:, None, None] * mu  # (n, K, d)
    covs_t = ab[:, None, None, None] * cov + (1 - ab)[:, None, None, None] * eye  # (n, K, d, d)
    return _score(x, w, means_t, covs_t)


def _check_points(x, dim: int | None) -> None:
    """x: finite (n, dim) points — else an error naming x and the expected shape (not torch's)."""
    shape = tuple(x.shape)
    if len(shape) != 2 or (dim is not None and shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, d)"
        raise InputError(f"x: expected points of shape {want} for a {dim or 'd'}-dimensional mixture, got shape {shape}")
    check_finite(x, "x")


def _with_backend(x, fn, dim: int | None = None):
    """Run a torch kernel on NumPy or torch input, returning the caller's type."""
    if isinstance(x, torch.Tensor):
        _check_points(x, dim)
        return fn(x)
    xa = as_float_array(x, "x")
    if xa.ndim == 1:
        xa = xa[None]
    _check_points(xa, dim)
    return fn(torch.from_numpy(np.ascontiguousarray(xa))).numpy()
