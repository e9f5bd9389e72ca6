"""Weight-free image rewards, exactly as the paper's code defines them, written once for every rung.

Each is a plain differentiable callable ``reward(images) -> (n,)`` on ``(n, 3, H, W)`` tensors with
values in [0, 1] (decoded images are mapped to [0, 1] exactly once, by the sampler; never again here).

- luminance Y = 0.2126 R + 0.7152 G + 0.0722 B
- :func:`brightness` = mean Y;  :func:`global_contrast` = std Y (population std)
- :func:`local_contrast` = mean ``|Y − GaussianBlur(Y)|``, blur kernel 5, σ = 1 (reflect padding)
- :func:`saturation` = mean over pixels of (max − min)/(max + 1e-8) over the channels
- :func:`colourfulness` (Hasler & Süsstrunk 2003) = √(σ_rg² + σ_yb²) + 0.3 √(μ_rg² + μ_yb²),
  rg = R − G, yb = ½(R + G) − B

Table 7's (mean, std) of the pretrained SD 1.5 samples for local contrast and saturation are in
:data:`TABLE7_STATS`. Used by the digits rung and the Stable Diffusion rung (Chapter 10).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cda_lite._checks import check_finite

LUMA = (0.2126, 0.7152, 0.0722)

# Table 7 of the paper: (mean, std) of each reward over samples of the pretrained SD 1.5
TABLE7_STATS = {
    "aesthetic": (5.1488, 0.439),
    "hps": (0.2669, 0.0057),
    "mps": (5.2365, 3.5449),
    "pickscore": (21.1547, 0.6551),
    "local_contrast": (0.0086, 0.0032),
    "saturation": (0.106, 0.0706),
}


def _check(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected a (n, 3, H, W) tensor in [0, 1], got {shape}")
    check_finite(images, "images")
    return images


def luminance(images: torch.Tensor) -> torch.Tensor:
    """Y = 0.2126 R + 0.7152 G + 0.0722 B, shape (n, H, W)."""
    x = _check(images)
    return LUMA[0] * x[:, 0] + LUMA[1] * x[:, 1] + LUMA[2] * x[:, 2]


def brightness(images: torch.Tensor) -> torch.Tensor:
    """Mean luminance per image."""
    return luminance(images).flatten(1).mean(1)


def global_contrast(images: torch.Tensor) -> torch.Tensor:
    """Standard deviation (population, 1/N) of the luminance per image."""
    return luminance(images).flatten(1).std(1, unbiased=False)


def gaussian_kernel(size: int = 5, sigma: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    """Normalised 2-D Gaussian kernel (size × size), the outer product of a 1-D one."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size: expected an odd positive kernel size, got {size}")
    if not sigma > 0:
        raise ValueError(f"sigma: expected > 0, got {sigma}")
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-r * r / (2 * sigma * sigma))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype)


def gaussian_blur(y: torch.Tensor, size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Blur (n, H, W) maps with a Gaussian kernel by ``conv2d`` (reflect padding, as torchvision)."""
    k = gaussian_kernel(size, sigma, y.dtype).to(y.device)[None, None]
    pad = size // 2
    yp = F.pad(y[:, None], (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(yp, k)[:, 0]


def local_contrast(images: torch.Tensor) -> torch.Tensor:
    """mean ``|Y − GaussianBlur(Y; kernel 5, σ = 1)|`` per image."""
    y = luminance(images)
    return (y - gaussian_blur(y, 5, 1.0)).abs().flatten(1).mean(1)


def saturation(images: torch.Tensor) -> torch.Tensor:
    """mean over pixels of (max_c − min_c)/(max_c + 1e-8) (HSV saturation)."""
    x = _check(images)
    mx, mn = x.max(1).values, x.min(1).values
    return ((mx - mn) / (mx + 1e-8)).flatten(1).mean(1)


def colourfulness(images: torch.Tensor) -> torch.Tensor:
    """Hasler–Süsstrunk colourfulness √(σ_rg² + σ_yb²) + 0.3 √(μ_rg² + μ_yb²) (population std)."""
    x = _check(images)
    rg = (x[:, 0] - x[:, 1]).flatten(1)
    yb = (0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]).flatten(1)
    var = rg.var(1, unbiased=False) + yb.var(1, unbiased=False)
    mu2 = rg.mean(1) ** 2 + yb.mean(1) ** 2
    # + tiny inside the roots keeps the gradient finite on flat (grey) images
    return torch.sqrt(var + 1e-12) + 0.3 * torch.sqrt(mu2 + 1e-12)


WEIGHT_FREE = {
    "brightness": brightness,
    "global_contrast": global_contrast,
    "local_contrast": local_contrast,
    "saturation": saturation,
    "colourfulness": colourfulness,
}


def get(name: str):
    """A weight-free reward by name (ValueError listing the known names otherwise)."""
    if name not in WEIGHT_FREE:
        raise ValueError(f"unknown weight-free reward {name!r}; known: {sorted(WEIGHT_FREE)}")
    return WEIGHT_FREE[name]


__all__ = ["luminance", "brightness", "global_contrast", "local_contrast", "saturation", "colourfulness",
           "gaussian_kernel", "gaussian_blur", "WEIGHT_FREE", "TABLE7_STATS", "get"]
