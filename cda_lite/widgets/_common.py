"""Shared pieces of the explorers: a matplotlib axis, slider ranges and sliders, reward labels."""
from __future__ import annotations

import numpy as np

def _axis(ax, figsize=(5.0, 5.0)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _parse_ranges(ranges, n: int, name: str = "ranges"):
    """[(lo, hi, step)] from ranges given as (lo, hi) or (lo, hi, step), one per slider."""
    ranges = list(ranges)
    if len(ranges) != n:
        raise ValueError(f"{name}: expected {n} ranges (one per reward), got {len(ranges)}")
    out = []
    for i, r in enumerate(ranges):
        r = tuple(float(v) for v in r)
        if len(r) not in (2, 3) or not np.all(np.isfinite(r)):
            raise ValueError(f"{name}[{i}]: expected finite (lo, hi) or (lo, hi, step), got {ranges[i]!r}")
        lo, hi = r[:2]
        step = r[2] if len(r) == 3 else (hi - lo) / 100
        if not lo < hi or step <= 0:
            raise ValueError(f"{name}[{i}]: need lo < hi and step > 0, got {ranges[i]!r}")
        out.append((lo, hi, step))
    return out


def _float_sliders(labels, ranges, values):
    """One ipywidgets FloatSlider per (label, (lo, hi, step), value); updates on release only."""
    import ipywidgets as widgets

    return {
        label: widgets.FloatSlider(value=float(v), min=lo, max=hi, step=step, description=label,
                                   continuous_update=False, readout_format=".3g")
        for label, (lo, hi, step), v in zip(labels, ranges, values)
    }


# --------------------------------------------------------------------------- alignment (chapter 3)
def _reward_label(reward, i):
    return getattr(reward, "name", None) or f"r{i + 1}"
