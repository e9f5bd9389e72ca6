"""Pretrained 2-D ε-networks: train one on exact samples of a mixture with the DSM loop, or load it
from a cache keyed by everything that determines it (mixture, schedule, architecture, steps, seed).

The cache lives in ``$CDA_CACHE`` (default ``~/.cache/cda_lite``); delete it to retrain. Chapters 4–7
and the ``bench`` commands share these models.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch

from cda_lite.checkpoint import atomic_save
from cda_lite.gmm import GaussianMixture
from cda_lite.models import MLPEps
from cda_lite.schedules import Schedule, linear
from cda_lite.train import fit


def default_schedule() -> Schedule:
    """The 2-D chapters' schedule: linear β 1e-4 → 0.1 over T = 100 (ᾱ_T ≈ 0.006, close to pure
    noise). The paper's 2-D setting (β up to 0.02) ends at ᾱ_T ≈ 0.37, far from the N(0, I) start."""
    return linear(100, 1e-4, 0.1)


def cache_dir() -> str:
    return os.environ.get("CDA_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "cda_lite"))


def _key(gm: GaussianMixture, schedule: Schedule, arch: dict, steps: int, seed: int, batch_size: int, lr: float,
         ema: float | None = None) -> str:
    d = {"gm": gm.to_dict(), "betas": np.round(schedule.betas, 12).tolist(), "arch": arch,
         "steps": steps, "seed": seed, "batch": batch_size, "lr": lr}
    if ema is not None:  # absent when unset, so the keys of models cached before EMA existed still match
        d["ema"] = ema
    payload = json.dumps(d, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


PRETRAIN_EMA = 0.995
"""EMA decay of the 2-D benches' DSM pretraining (the alignment base and the composition experts) (``pretrain_2d(ema=...)``). On
random problems the last DSM iterate's own sampler law q̂ put λ*(q̂) 6–9 % from λ*(q) where the
exact ε through the same chain is 3 % off; the averaged weights remove most of the network's share
(``benchmarks/README.md``, issue 12)."""


PRETRAIN_SIGMA = True
"""The composition experts of ``bench compose2d`` are noise-level-conditioned score networks
(``MLPEps(sigmas=...)``: slow features of σ_t, ε = σ_t·F). With DDPM's timestep embedding the experts'
score error at t ≤ 3, on their own samples as much as on the product's, was 0.3–4 (ε's error, ~0.02
at every t, divided by σ_t); Algorithm 2's Langevin had to stop at t = 2. Chosen on held-out
``random_composition`` seeds 20–23: KL of the Langevin law at λ* (down to t = 0) to the exact product
0.0030 / 0.0017 / 0.0018 / 0.0031, against 0.0073 / 0.013 / 0.0029 / 0.014 for the previous experts at
their best last level (t = 2); highest feature frequency 1, 3, 8, 30: worst 0.051, 0.0031, 0.022, 0.14.
Issue 12, ``benchmarks/README.md``."""


PRETRAIN_AFFINE = True
"""The composition experts of ``bench compose2d`` carry an affine skip (``MLPEps(affine=True)``): a
product puts its mass in each expert's tail, where DSM saw few samples and a plain MLP's ε strays
(on ``random_composition(3)`` its Lemma-2-weighted error there was 5–8× that on the expert's own
samples, and 5000 DSM steps did not shrink it; with the skip, 13–19× smaller). The alignment base
keeps the plain MLP: on four random alignment problems the skip moved λ*(q̂) both ways
(``bench align2d --affine``). Issue 12, ``benchmarks/README.md``."""


def pretrain_2d(gm: GaussianMixture, schedule: Schedule | None = None, steps: int = 1500, seed: int = 0,
                hidden: int = 128, layers: int = 3, batch_size: int = 512, lr: float = 2e-3,
                cache: bool = True, progress: bool = False, ema: float | None = None, affine: bool = False,
                sigma_conditioned: bool = False) -> MLPEps:
    """An MLPEps trained by denoising score matching on fresh exact samples of ``gm`` (with ``ema``, the
    exponential moving average of its weights, :func:`cda_lite.train.train_dsm`; ``affine``: the
    network's affine skip; ``sigma_conditioned``: conditioned on σ_t with ε = σ_t·F, a score network,
    :class:`~cda_lite.models.MLPEps`)."""
    schedule = schedule or default_schedule()
    arch = {"cls": "MLPEps", "dim": gm.dim, "hidden": hidden, "layers": layers, "T": schedule.T}
    if affine:  # absent when unset: the keys of models cached before the affine skip existed still match
        arch["affine"] = True
    if sigma_conditioned:  # likewise
        arch["sigma_conditioned"] = True
    path = os.path.join(cache_dir(), "pretrained", _key(gm, schedule, arch, steps, seed, batch_size, lr, ema) + ".pt")
    sigmas = schedule.sigma(np.arange(schedule.T)) if sigma_conditioned else None
    model = MLPEps(schedule.T, dim=gm.dim, hidden=hidden, layers=layers, affine=affine, sigmas=sigmas)
    if cache and os.path.exists(path):
        model.load_state_dict(torch.load(path, map_location="cpu"))
        return model.eval()
    torch.manual_seed(seed)
    model = MLPEps(schedule.T, dim=gm.dim, hidden=hidden, layers=layers, affine=affine, sigmas=sigmas)
    data = torch.from_numpy(gm.sample(max(100_000, 20 * batch_size), seed=seed)).float()
    model, _ = fit(model, data, schedule, steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress, ema=ema)
    if cache:
        atomic_save(model.state_dict(), path)
    return model.eval()
