"""Every reward of the SD rung by name: ``get_reward(name, **kw)`` returns a scorer of
:mod:`cda_lite.sd.rewards` (weight-free, weight-based) or its tiny random stand-in of
:mod:`cda_lite.sd.tiny_rewards`; :func:`normalizer` gives Table 7's (mean, std) for a name.

It sits above both modules, so the scorers and their tiny stand-ins never import each other in a circle.
Chapter 10.
"""
from __future__ import annotations

from cda_lite import rewards as wf
from cda_lite.constraints import RewardNormalizer
from cda_lite.sd.rewards import MPS, HPS, Aesthetic, CLIPScore, ImageReward, PickScore, WeightFree

WEIGHTED = {"aesthetic": Aesthetic, "hps": HPS, "pickscore": PickScore, "imagereward": ImageReward,
            "mps": MPS, "clip": CLIPScore}
TINY = ("tiny_aesthetic", "tiny_hps", "tiny_pickscore", "tiny_imagereward", "tiny_mps", "tiny_clip_score", "tiny_clip")


def known() -> list[str]:
    return sorted(set(wf.WEIGHT_FREE) | set(WEIGHTED) | set(TINY))


def get_reward(name: str, **kw):
    """The reward called ``name`` (nothing is loaded until it is first called; ``tiny_*`` are built now)."""
    if name in wf.WEIGHT_FREE:
        if kw:
            raise ValueError(f"reward {name!r} takes no options, got {sorted(kw)}")
        return WeightFree(name)
    if name in WEIGHTED:
        return WEIGHTED[name](**kw)
    if name in TINY:
        from cda_lite.sd import tiny_rewards  # builds small models: imported when one is asked for
        return getattr(tiny_rewards, name)(**kw)
    raise ValueError(f"unknown reward {name!r}; known: {known()}")


def normalizer(name: str, stats: dict | None = None) -> RewardNormalizer | None:
    """Table 7's (mean, std) for ``name`` (or ``stats[name]``); None when neither has it (raw units).
    ImageReward has no Table 7 entry: its scorer is already standardised by the package's own mean/std."""
    table = {**wf.TABLE7_STATS, **(stats or {})}
    if name not in table:
        return None
    mean, std = table[name]
    return RewardNormalizer(float(mean), float(std))
