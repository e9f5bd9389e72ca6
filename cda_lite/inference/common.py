"""Small helpers shared by the inference-time samplers of Chapter 7: the working dtype of an
ε-model, weighted reward sums, the Tweedie look-ahead reward and its gradient, and the DDIM(η)
step size of a chain step (read off :func:`cda_lite.sampling.step_mean_std`, never re-derived)."""
from __future__ import annotations

import numpy as np
import torch

from cda_lite._checks import as_float_array, check_finite
from cda_lite.sampling import step_mean_std, step_sigma, tweedie_x0  # noqa: F401 (step_sigma re-exported)


def model_dtype(model) -> torch.dtype:
    """float64 for parameter-free models (e.g. :class:`~cda_lite.models.ExactEps`), else the
    dtype of the network's parameters."""
    params = list(model.parameters()) if hasattr(model, "parameters") else []
    return params[0].dtype if params else torch.float64


def common_dtype(models) -> torch.dtype:
    """float32 if any model is a float32 network, else float64."""
    dts = {model_dtype(m) for m in models}
    return torch.float32 if torch.float32 in dts else torch.float64


class WeightedReward:
    """r_w(x) = Σ_i w_i r_i(x): the reward whose tilt q·e^{r_w/α} every rival of Chapter 7 targets."""

    def __init__(self, rewards, weights):
        self.rewards = list(rewards)
        self.weights = as_float_array(weights, "weights", ndim=1)
        check_finite(self.weights, "weights")
        if len(self.weights) != len(self.rewards):
            raise ValueError(f"weights: expected {len(self.rewards)} (one per reward), got {len(self.weights)}")

    def __call__(self, x):
        return sum(float(w) * r(x) for w, r in zip(self.weights, self.rewards))


def lookahead(model, reward, x: torch.Tensor, t: int, ab_t: float, alpha: float, grad: bool):
    """ε̂(x_t), the look-ahead reward R = r(x̂₀(x_t))/α with Tweedie's x̂₀, and (if ``grad``)
    ∇_{x_t} R by autograd through the ε-model (None otherwise)."""
    if grad:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            eps = model(xg, t)
            R = reward(tweedie_x0(xg, eps, ab_t)) / alpha
            (g,) = torch.autograd.grad(R.sum(), xg)
        return eps.detach(), R.detach(), g.detach()
    with torch.no_grad():
        eps = model(x, t)
        R = reward(tweedie_x0(x, eps, ab_t)) / alpha
    return eps, R, None


def check_alpha(alpha) -> float:
    a = float(alpha)
    if not np.isfinite(a) or a <= 0:
        raise ValueError(f"alpha: the KL weight must be a positive number, got {alpha!r}")
    return a


def new_generator(seed) -> torch.Generator:
    return torch.Generator().manual_seed(0 if seed is None else int(seed))
