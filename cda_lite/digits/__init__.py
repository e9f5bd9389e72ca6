"""The digits rung: a diffusion model of scikit-learn's 8×8 digits, trained and aligned on a CPU.

- :mod:`cda_lite.digits.data` — the images, model-space maps, weight-free rewards by name, pictures
  (its public names are re-exported here: ``from cda_lite import digits; digits.load_digits()``);
- :mod:`cda_lite.digits.unet` — the ε-network (a diffusers ``UNet2DModel``), the rung's schedule and its
  pretraining (``python -m cda_lite.digits.unet --train``);
- :mod:`cda_lite.digits.classifier` — a learned reward: a small CNN classifier's log p(digit | x);
- :mod:`cda_lite.digits.experiment_setup` — the setting Chapter 9's experiments share (config, correction
  network, rewards and σ-unit normalisers);
- :mod:`cda_lite.digits.experiments` — those experiments: Algorithm 1, Algorithm 3 and the rivals.

Everything runs through the model-agnostic core (:mod:`cda_lite.align`, :mod:`cda_lite.compose`,
:mod:`cda_lite.inference`); this rung never imports the Stable Diffusion rung (checked by import-linter).
Chapters 8 and 9.
"""
from __future__ import annotations

from cda_lite.digits.data import (N_CLASSES, N_IMAGES, SHAPE, DigitReward, from_unit, image_grid, load_digits,
                                  plot_digits, reward, split, to_rgb, to_unit)

__all__ = ["SHAPE", "N_IMAGES", "N_CLASSES", "load_digits", "to_unit", "from_unit", "to_rgb", "DigitReward",
           "reward", "split", "image_grid", "plot_digits"]
