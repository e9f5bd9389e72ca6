"""The digits rung's ε-network: a small diffusers ``UNet2DModel`` behind the library's ε-model protocol.

:class:`UNetEps` is ``eps(x, t)`` on (n, 1, 8, 8) model-space digits with t an int or an (n,) tensor of
timestep indices, exactly like :mod:`cda_lite.models` — so :func:`cda_lite.sampling.sample`,
:func:`cda_lite.train.fit`, :class:`cda_lite.models.ResidualEps` (its zero-initialised output layer is the
UNet's ``conv_out``), the path-wise KL and the rivals take it unchanged.

:func:`digits_schedule` is the schedule of this rung (cosine, β capped at 0.2; the same β's as diffusers'
``betas_for_alpha_bar``, so diffusers' DDPM/DDIM schedulers can run it too — Chapter 8 checks that).
:func:`pretrain_digits` trains the base model with :func:`cda_lite.train.train_dsm` plus an exponential
moving average of the weights (fast profile) or loads the
committed checkpoint ``data/checkpoints/digits_unet.pt`` (full profile); both are cached.

Regenerate the committed checkpoint with::

    python -m cda_lite.digits.unet --train --profile full --out data/checkpoints/digits_unet.pt

Chapters 8 and 9.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time

import numpy as np
import torch
from torch import nn

from cda_lite._cli import Parser, count, entry_point, writable_dir
from cda_lite.checkpoint import atomic_save
from cda_lite.profile import pick, profile
from cda_lite.schedules import Schedule, cosine

DIGITS_T = 100
DIGITS_MAX_BETA = 0.2

# the base model's architecture: two resolutions (8×8, 4×4), no attention; 0.16 M parameters
DEFAULT_ARCH = {
    "block_out_channels": (16, 32),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "attention": False,
}

# training recipe of the base model per profile (steps × batch 128, AdamW, cosine decay); one step
# costs ~0.11 s on one idle core, so the fast profile trains in about 2 minutes
FAST_STEPS = 1000
FULL_STEPS = 4000
BATCH_SIZE = 128
LR = 2e-3
# the returned weights are an exponential moving average of the iterates (as in DDPM); with 1000 steps
# it evened out the class shares of the samples (max deviation from 10 %: 0.038 against 0.062)
EMA_DECAY = 0.995

CHECKPOINT = ("checkpoints", "digits_unet.pt")


def digits_schedule(T: int = DIGITS_T, max_beta: float = DIGITS_MAX_BETA) -> Schedule:
    """Nichol & Dhariwal's cosine schedule, T = 100, with β_t capped at 0.2 instead of 0.999.

    The same β's as diffusers' ``betas_for_alpha_bar(T, max_beta, "cosine")`` (the ``"squaredcos_cap_v2"``
    schedule with another cap). Cosine spends fewer steps on nearly destroyed images than a linear
    schedule (8×8 images lose their content early). The cap only changes the last four steps: with 0.999
    the final ᾱ is 2·10⁻⁷ and the first reverse step multiplies the network's ε error by up to
    1/√(1−β) ≈ 32 (a few samples in a thousand blow up to ``|x|`` ≈ 30); with 0.2 the factor is ≤ 1.12 and
    ᾱ_{T−1} = 2.6·10⁻³, i.e. x_T keeps a signal of std 0.05 against unit noise: N(0, I) is still a
    faithful start. T = 100 keeps 100-step ancestral sampling cheap on a CPU.
    """
    return cosine(int(T), max_beta=float(max_beta))


class UNetEps(nn.Module):
    """ε(x, t) by a diffusers ``UNet2DModel`` on (n, channels, sample_size, sample_size) images.

    ``block_out_channels`` sets the width at each resolution (the image is halved between them),
    ``attention=True`` puts self-attention in the lowest-resolution blocks and the middle block
    (``False``: a purely convolutional UNet). ``T`` is the number of
    training timesteps (kept for the protocol; the UNet embeds the raw index t sinusoidally).
    """

    def __init__(self, T: int = DIGITS_T, sample_size: int = 8, channels: int = 1,
                 block_out_channels=DEFAULT_ARCH["block_out_channels"],
                 layers_per_block: int = DEFAULT_ARCH["layers_per_block"],
                 norm_num_groups: int = DEFAULT_ARCH["norm_num_groups"],
                 attention: bool = DEFAULT_ARCH["attention"]):
        super().__init__()
        from diffusers import UNet2DModel

        block_out_channels = tuple(int(c) for c in block_out_channels)
        if len(block_out_channels) < 1 or any(c % norm_num_groups for c in block_out_channels):
            raise ValueError(f"block_out_channels: expected widths divisible by norm_num_groups={norm_num_groups}, "
                             f"got {block_out_channels}")
        if sample_size % (2 ** (len(block_out_channels) - 1)):
            raise ValueError(f"sample_size: {sample_size} cannot be halved {len(block_out_channels) - 1} times")
        n = len(block_out_channels)
        down = ["DownBlock2D"] * n
        up = ["UpBlock2D"] * n
        if attention:
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        self.T, self.sample_size, self.channels = int(T), int(sample_size), int(channels)
        self.config = {"T": self.T, "sample_size": self.sample_size, "channels": self.channels,
                       "block_out_channels": list(block_out_channels), "layers_per_block": int(layers_per_block),
                       "norm_num_groups": int(norm_num_groups), "attention": bool(attention)}
        self.unet = UNet2DModel(
            sample_size=sample_size, in_channels=channels, out_channels=channels,
            block_out_channels=block_out_channels, layers_per_block=layers_per_block,
            down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=norm_num_groups,
            attention_head_dim=block_out_channels[-1] if attention else 8, add_attention=bool(attention),
        )

    @property
    def data_shape(self) -> tuple:
        return (self.channels, self.sample_size, self.sample_size)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"x: expected a (n, {', '.join(map(str, self.data_shape))}) tensor, got {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t: expected an int or a ({x.shape[0]},) tensor of timestep indices, got shape {tuple(t.shape)}")
        return self.unet(x, t.long()).sample

    def eps(self, x: torch.Tensor, t) -> torch.Tensor:
        """Same as calling the model: the ε-model protocol."""
        return self(x, t)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def save_unet(model: UNetEps, path: str, extra: dict | None = None, half: bool = True) -> None:
    """Save config + weights (float16 by default: half the bytes, ε changes by ~1e-3) atomically."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    atomic_save({"config": model.config, "state_dict": state, "extra": extra or {}}, path)


def load_unet(path: str) -> UNetEps:
    """A :class:`UNetEps` from a file written by :func:`save_unet`, in float32 and eval mode."""
    blob = torch.load(path, map_location="cpu")
    model = UNetEps(**blob["config"])
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    model.extra = blob.get("extra", {})
    return model.eval()


def _cache_path(steps: int, seed: int, schedule: Schedule) -> str:
    from cda_lite.pretrained import cache_dir

    payload = json.dumps({"arch": {k: list(v) if isinstance(v, tuple) else v for k, v in DEFAULT_ARCH.items()},
                          "betas": np.round(schedule.betas, 12).tolist(), "steps": steps, "seed": seed,
                          "batch": BATCH_SIZE, "lr": LR, "ema": EMA_DECAY, "data": "sklearn-digits"}, sort_keys=True)
    return os.path.join(cache_dir(), "digits", hashlib.sha256(payload.encode()).hexdigest()[:16] + ".pt")


def train_digits_unet(steps: int, seed: int = 0, progress: bool = False,
                      ema_decay: float = EMA_DECAY) -> tuple[UNetEps, list[float]]:
    """Train a fresh :class:`UNetEps` (``DEFAULT_ARCH``) on all 1797 digits by denoising score matching
    (the loop :func:`cda_lite.train.train_dsm`, batch ``BATCH_SIZE``, lr ``LR``) and return
    ``(ema_model, losses)``: the exponential moving average of the iterates with decay ``ema_decay``
    (0 returns the last iterate), in eval mode, and the per-step training losses."""
    from tqdm.auto import tqdm

    from cda_lite.digits.data import load_digits
    from cda_lite.train import train_dsm

    if int(steps) < 1:
        raise ValueError(f"steps: expected a positive number of training steps, got {steps}")
    if not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay: expected a value in [0, 1), got {ema_decay}")
    schedule = digits_schedule()
    torch.manual_seed(seed)
    model = UNetEps(schedule.T, **DEFAULT_ARCH)
    ema = copy.deepcopy(model)
    losses = []
    loop = train_dsm(model, load_digits(), schedule, steps=int(steps), batch_size=BATCH_SIZE, lr=LR, seed=seed)
    for state in tqdm(loop, total=int(steps), disable=not progress, desc="DSM"):
        losses.append(state.loss)
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1.0 - ema_decay)
    return ema.eval(), losses


def pretrain_digits(steps: int | None = None, seed: int = 0, progress: bool = False, cache: bool = True) -> UNetEps:
    """The digits rung's base ε-model, in eval mode, with its training losses as ``.losses``.

    ``steps=None``: under the fast profile, ``FAST_STEPS`` steps of DSM from scratch (cached in
    ``$CDA_CACHE/digits``); under the full profile (and ``seed=0``), the committed checkpoint
    ``data/checkpoints/digits_unet.pt`` (``FULL_STEPS`` steps; see ``data/checkpoints/README.md``),
    or, without it, ``FULL_STEPS`` steps trained here.
    An explicit ``steps`` always trains (or loads the cached result of) that many steps.
    """
    if steps is None and seed == 0 and profile() == "full":
        from cda_lite.paths import data_path

        try:
            path = data_path(*CHECKPOINT)
        except FileNotFoundError:  # an installed package without the repository's data/ folder
            path = None
        if path is not None and path.exists():
            model = load_unet(str(path))
            model.losses = list(model.extra.get("losses", []))
            return model
        steps = FULL_STEPS  # no checkpoint in this checkout: train it (and cache it)
    steps = pick(fast=FAST_STEPS, full=FULL_STEPS) if steps is None else int(steps)
    schedule = digits_schedule()
    path = _cache_path(steps, seed, schedule)
    if cache and os.path.exists(path):
        blob = torch.load(path, map_location="cpu")
        model = UNetEps(**blob["config"])
        model.load_state_dict(blob["state_dict"])
        model.losses = list(blob.get("losses", []))
        return model.eval()
    model, losses = train_digits_unet(steps, seed, progress)
    if cache:
        atomic_save({"config": model.config, "state_dict": model.state_dict(), "losses": losses}, path)
    model.losses = losses
    return model


@entry_point("python -m cda_lite.digits.unet")
def main(argv=None) -> int:
    p = Parser(prog="python -m cda_lite.digits.unet",
                                description="Train the digits base ε-model and write a checkpoint.")
    p.add_argument("--train", action="store_true", help="train a UNetEps on the sklearn digits")
    p.add_argument("--steps", type=count, default=None, help=f"DSM steps (default: {FAST_STEPS} fast, {FULL_STEPS} full)")
    p.add_argument("--profile", choices=("fast", "full"), default=None, help="effort profile for the default steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=count, default=1, help="torch threads (1 is fastest for this small net)")
    p.add_argument("--out", default=None, help="checkpoint path (float16 weights + config + loss history)")
    args = p.parse_args(argv)
    if not args.train:
        p.error("nothing to do: pass --train")
    if args.out:
        writable_dir(os.path.dirname(os.path.abspath(args.out)), "--out")
    torch.set_num_threads(args.threads)
    prof = args.profile or profile()
    steps = args.steps if args.steps is not None else (FAST_STEPS if prof == "fast" else FULL_STEPS)
    t0 = time.time()
    model, losses = train_digits_unet(steps, args.seed, progress=True)  # EMA weights
    secs = time.time() - t0
    tail = float(np.mean(losses[-100:]))
    print(f"trained {steps} steps in {secs:.0f} s; final loss (mean of last 100) {tail:.4f}; "
          f"{model.n_parameters()} parameters")
    if args.out:
        save_unet(model, args.out, extra={"steps": steps, "seed": args.seed, "batch": BATCH_SIZE, "lr": LR,
                                          "ema": EMA_DECAY,
                                          "losses": [round(v, 5) for v in losses], "seconds": round(secs),
                                          "torch": str(torch.__version__)})
        print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
