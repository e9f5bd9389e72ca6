"""The image rung's data: scikit-learn's 8×8 handwritten digits (1,797 images, classes 0–9).

The data set ships inside scikit-learn (``sklearn/datasets/data/digits.csv.gz``), so nothing is
downloaded at run time. Pixels are integers 0..16 (16 = full ink); the library works in *model
space*, where a pixel v becomes v/8 − 1 ∈ [−1, 1] (−1 = blank paper, +1 = full ink), the range a
diffusion model's N(0, I) prior is scaled for.

- :func:`load_digits` — the images as a (1797, 1, 8, 8) float32 tensor in [−1, 1] (and the labels).
- :func:`to_unit` / :func:`from_unit` — the affine map between model space and [0, 1]. It is *not*
  clamped: a reward must stay differentiable on generated images, which overshoot [−1, 1] a little.
- :func:`to_rgb` — model space → (n, 3, 8, 8) in [0, 1]-units for the weight-free rewards of
  :mod:`cda_lite.rewards` (grey: R = G = B, so luminance = the pixel value, i.e. the ink).
- :func:`reward` — a weight-free reward on model-space digits by name (``"ink"`` = mean ink).
- :func:`split` — the fixed train/held-out split the digit classifier uses.
- :func:`image_grid` / :func:`plot_digits` — pictures.

Chapters 8 and 9.
"""
from __future__ import annotations

import numpy as np
import torch

SHAPE = (1, 8, 8)  # one sample: channels, height, width
N_IMAGES = 1797
N_CLASSES = 10
MAX_VALUE = 16.0  # sklearn's pixel values are integers 0..16


def _sklearn_digits():
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the digits data set ships with scikit-learn: pip install scikit-learn") from err
    return _load()


def load_digits(return_labels: bool = False):
    """scikit-learn's 8×8 digits in model space: a float32 tensor (1797, 1, 8, 8), pixel v ↦ v/8 − 1.

    With ``return_labels=True`` returns ``(images, labels)``, labels a LongTensor (1797,) of 0..9.
    """
    d = _sklearn_digits()
    x = torch.as_tensor(np.asarray(d.images, dtype=np.float32)).reshape(-1, *SHAPE)
    x = from_unit(x / MAX_VALUE)
    if return_labels:
        return x, torch.as_tensor(np.asarray(d.target), dtype=torch.long)
    return x


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Model space [−1, 1] → [0, 1] units: (x + 1)/2. Plain affine, not clamped (keeps gradients;
    generated pixels slightly outside [−1, 1] map slightly outside [0, 1])."""
    return (x + 1) / 2


def from_unit(u: torch.Tensor) -> torch.Tensor:
    """[0, 1] units → model space: 2u − 1 (the inverse of :func:`to_unit`)."""
    return 2 * u - 1


def _check_images(x, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 1:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a (n, 1, H, W) tensor of digit images, got {got}")
    return x


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(n, 1, H, W) model-space digits → (n, 3, H, W) grey images in [0, 1] units (R = G = B =
    :func:`to_unit`), the input format of :mod:`cda_lite.rewards`. Differentiable, not clamped."""
    return to_unit(_check_images(x)).expand(-1, 3, -1, -1)


# weight-free rewards that mean something on grey images (saturation and colourfulness are 0 there)
_GREY_REWARDS = {"ink": "brightness", "brightness": "brightness", "global_contrast": "global_contrast",
                 "local_contrast": "local_contrast"}


class DigitReward:
    """A weight-free reward of :mod:`cda_lite.rewards` on model-space digits: r(x) = reward(to_rgb(x)).

    ``"ink"`` (= ``"brightness"`` of the [0, 1] image: the mean ink per pixel, since ink is the bright
    value), ``"global_contrast"`` (std of the pixels), ``"local_contrast"`` (mean ``|Y − blur(Y)|``).
    Callable on (n, 1, H, W) tensors → (n,), differentiable; ``.name`` is the name given.
    """

    def __init__(self, name: str):
        from cda_lite import rewards

        if name not in _GREY_REWARDS:
            hint = " (identically 0 on grey images)" if name in ("saturation", "colourfulness") else ""
            raise ValueError(f"name: unknown digit reward {name!r}{hint}; known: {sorted(_GREY_REWARDS)}")
        self.name = name
        self._fn = rewards.get(_GREY_REWARDS[name])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(to_rgb(x))

    def __repr__(self):
        return f"DigitReward({self.name!r})"


def reward(name: str) -> DigitReward:
    """The weight-free reward ``name`` on model-space digits (see :class:`DigitReward`)."""
    return DigitReward(name)


def split(test_fraction: float = 0.2, seed: int = 0):
    """A fixed random split of the 1797 indices: ``(train_idx, test_idx)`` LongTensors.

    Every class keeps the same share in both parts (per-class shuffling). The digit classifier trains
    on ``train_idx`` and reports its accuracy on ``test_idx``.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a value in (0, 1), got {test_fraction}")
    _, y = load_digits(return_labels=True)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(N_CLASSES):
        idx = np.flatnonzero(y.numpy() == c)
        rng.shuffle(idx)
        k = int(round(test_fraction * len(idx)))
        test.extend(idx[:k])
        train.extend(idx[k:])
    return torch.as_tensor(np.sort(train)), torch.as_tensor(np.sort(test))


def image_grid(x, nrow: int = 10, pad: int = 1) -> np.ndarray:
    """Tile (n, 1, H, W) model-space digits into one 2-D array in [0, 1] (clamped, for display),
    ``nrow`` images per row, ``pad`` blank pixels between them. Show with ``cmap="gray_r"``
    (ink dark on white paper)."""
    x = torch.as_tensor(x).detach().float().cpu()
    if x.ndim == 3:
        x = x[:, None]
    _check_images(x)
    if nrow < 1:
        raise ValueError(f"nrow: expected a positive number of images per row, got {nrow}")
    n, _, h, w = x.shape
    rows = -(-n // nrow)
    grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.float32)
    u = to_unit(x).clamp(0, 1).numpy()
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = u[i, 0]
    return grid


def plot_digits(x, ax=None, nrow: int = 10, title: str | None = None):
    """Show a grid of model-space digits (ink dark on white). Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(image_grid(x, nrow), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


__all__ = ["SHAPE", "N_IMAGES", "N_CLASSES", "load_digits", "to_unit", "from_unit", "to_rgb", "DigitReward",
           "reward", "split", "image_grid", "plot_digits"]
