"""The setting every digits experiment of Chapter 9 shares (:mod:`cda_lite.digits.experiments` runs them).

- :class:`ImageConfig` and :data:`PROFILES` — the effort of the experiments; :data:`CONSTRAINTS` and
  :data:`EXPERTS` — what they ask for;
- :class:`ConvCorrection` — the zero-initialised correction δ_φ(x, t) fine-tuned on top of the frozen UNet;
  :class:`SharedBase` — one frozen UNet shared by several experts, counting its evaluations;
- :func:`setup` — the pretrained digit UNet (:mod:`cda_lite.digits.unet`), the digit classifier, the
  rewards (``is_3`` = log p(3 | x), ``ink``, ``local_contrast``, ``global_contrast``), the sampler chain, and one
  :class:`~cda_lite.constraints.RewardNormalizer` per reward fitted on the pretrained model's samples, so
  levels are in σ units (as the paper).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cda_lite.constraints import Constraint, RewardNormalizer
from cda_lite.models import TimeEmbedding, _t_for_embedding
from cda_lite.profile import profile as current_profile
from cda_lite.sampling import Chain, sample

SHAPE = (1, 8, 8)


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class ImageConfig:
    """Effort of Chapter 9's experiments (defaults: the fast profile, minutes on a laptop CPU)."""

    sample_steps: int = 10  # DDPM(η = 1) chain steps, for fine-tuning, evaluation and every rival
    n_norm: int = 512  # pretrained samples that fit the reward normalisers
    n_eval: int = 2048  # fresh samples that evaluate the constrained and equal-weights models (s.e. ≈ 0.02σ)
    n_eval_expert: int = 512  # fresh samples that evaluate each expert
    steps: int = 100  # primal steps of the constrained and the equal-weights runs
    expert_steps: int = 30  # primal steps of each single-reward expert
    batch_size: int = 32
    grad_steps: int = 10  # backprop through the last K sampler steps (10 = the whole chain)
    lr: float = 3e-3
    lr_cosine: bool = True  # decay the primal lr to 5 % (a steadier final model)
    dual_lr: float = 0.3  # νPI's integral gain κ_i (projected dual ascent step), in σ units
    kappa_p: float = 1.0  # νPI's proportional gain: damps the oscillation of competing multipliers
    nu: float = 0.5  # νPI's EMA factor of the violation
    polish: float = 0.2  # last fraction of primal steps at λ frozen to its average (AlignConfig.polish)
    width: int = 32  # channels of the correction network
    rounds: int = 6  # dual steps of Algorithm 3
    compose_samples: int = 128  # chain samples per round of Algorithm 3
    compose_eval: int = 256  # samples for the final KL evaluation at equal and learned weights
    kl_timesteps: int = 4  # random t per sample in Lemma 2's estimate
    particles: int = 128  # samples of each inference-time rival
    seed: int = 0


PROFILES = {
    "fast": ImageConfig(),
    "full": ImageConfig(n_norm=2048, n_eval=4096, n_eval_expert=2048, steps=400, expert_steps=150, batch_size=64,
                        rounds=12, compose_samples=256, compose_eval=1024, kl_timesteps=8, particles=512),
}

# Experiment 1: three constraints at once (levels in σ of the pretrained model's rewards)
CONSTRAINTS = (("is_3", ">=", 1.0), ("ink", "<=", -0.5), ("local_contrast", ">=", 0.25))
# Experiments 2-3: one expert per reward, each the tilt q·e^{w·r̃} with fixed weight w (σ units)
EXPERTS = (("is_3", 6.0), ("ink", 1.0), ("local_contrast", 1.5))


def config_for(profile: str | None = None, **overrides) -> ImageConfig:
    """The :class:`ImageConfig` of a profile (default: ``$CDA_PROFILE``), with field overrides."""
    name = profile or current_profile()
    if name not in PROFILES:
        raise ValueError(f"profile: expected one of {sorted(PROFILES)}, got {name!r}")
    return dataclasses.replace(PROFILES[name], **overrides)


# --------------------------------------------------------------------------- networks
class ConvCorrection(nn.Module):
    """δ_φ(x, t) for digit images: three 3×3 convolutions (the pixel coordinates as two extra input
    channels, the time embedding added as a per-channel bias) plus a per-t image ``template`` (a linear
    map of the time embedding). The template lets the correction push every sample towards a shape at a
    given noise level (a "3"), which convolutions with zero padding learn only slowly.

    Used as ``ResidualEps(unet, ConvCorrection(T))``: the template starts at zero here and ``out`` is
    zeroed by :class:`~cda_lite.models.ResidualEps`, so fine-tuning starts exactly at the pretrained UNet
    (the image analogue of a zero-initialised LoRA adapter)."""

    def __init__(self, T: int, channels: int = 1, width: int = 32, size: int = 8):
        super().__init__()
        self.T, self.shape = int(T), (int(channels), int(size), int(size))
        self.time = TimeEmbedding(T, width)
        self.inp = nn.Conv2d(channels + 2, width, 3, padding=1)
        self.mid = nn.Conv2d(width, width, 3, padding=1)
        self.template = nn.Linear(width, channels * size * size)
        nn.init.zeros_(self.template.weight)
        nn.init.zeros_(self.template.bias)
        self.out = nn.Conv2d(width, channels, 3, padding=1)  # registered last: zeroed by ResidualEps
        g = torch.linspace(-1, 1, size)
        self.register_buffer("coords", torch.stack(torch.meshgrid(g, g, indexing="ij"))[None], persistent=False)

    def forward(self, x, t):
        e = self.time(_t_for_embedding(t, x.device)).to(x.dtype)
        h = torch.cat([x, self.coords.to(x.dtype).expand(x.shape[0], -1, -1, -1)], 1)
        h = F.silu(self.inp(h) + e[:, :, None, None])
        h = F.silu(self.mid(h) + e[:, :, None, None])
        return self.out(h) + self.template(e).view(-1, *self.shape)


class SharedBase(nn.Module):
    """A frozen ε-network shared by several :class:`ResidualEps` experts, counting its evaluations.

    Without gradients, a repeated call on the same input tensor (same object, unmodified) and the same t
    returns the stored output: Σ_i λ_i (ε_base + δ_i) then costs one UNet pass, and so does Lemma 2's
    pair (ε_surrogate, ε_i) on one x_t. ``images`` counts the images actually passed through the network.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.images = 0
        self._last = None  # (x, version, t, output); holding x keeps its identity unambiguous

    def _same(self, x, t) -> bool:
        if self._last is None:
            return False
        lx, version, lt, _ = self._last
        if lx is not x or x._version != version:
            return False
        t = torch.as_tensor(t)
        return lt.shape == t.shape and bool(torch.equal(lt, t))

    def forward(self, x, t):
        if torch.is_grad_enabled():
            self._last = None
            self.images += x.shape[0]
            return self.model(x, t)
        if self._same(x, t):
            return self._last[3]
        out = self.model(x, t)
        self.images += x.shape[0]
        self._last = (x, x._version, torch.as_tensor(t).clone(), out)
        return out

    def reset(self) -> None:
        self.images, self._last = 0, None


# --------------------------------------------------------------------------- setup
@dataclass
class DigitSetup:
    """Everything the experiments share: models, rewards, normalisers, the chain, pretrained samples."""

    config: ImageConfig
    pretrained: nn.Module
    classifier: nn.Module
    schedule: object
    chain: Chain
    rewards: dict  # name → r(x) on model-space digits (n, 1, 8, 8) → (n,)
    normalizers: dict  # name → RewardNormalizer fitted on the pretrained samples
    x_pre: torch.Tensor  # pretrained samples (the normalisers' data)
    key: str  # digest of the models and the settings that matter for the cache

    def normalized(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """r̃(x) = (r(x) − mean)/std in σ units of the pretrained model's samples."""
        return self.normalizers[name](self.rewards[name](x))

    def reward_table(self, x: torch.Tensor) -> dict:
        """Every reward's normalised per-sample values on ``x`` (NumPy arrays)."""
        with torch.no_grad():
            return {name: self.normalized(name, x).double().numpy() for name in self.rewards}

    def constraints(self, spec) -> list[Constraint]:
        """Constraints from ``(reward name, direction, level in σ)`` triples."""
        out = []
        for name, direction, level in spec:
            if name not in self.rewards:
                raise ValueError(f"spec: unknown reward {name!r}; known: {sorted(self.rewards)}")
            out.append(Constraint(name, self.rewards[name], float(level), direction, self.normalizers[name]))
        return out


def _digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


class OnDisplayed:
    """r(clamp(x, −1, 1)): a reward of the image as displayed. Generated pixels overshoot [−1, 1] a
    little; without the clamp a fine-tune can buy contrast or ink with pixels far outside the range
    (reward hacking), with it such pixels earn nothing and only cost KL."""

    def __init__(self, reward, name: str):
        self.reward, self.name = reward, name

    def __call__(self, x):
        return self.reward(x.clamp(-1.0, 1.0))

    def __repr__(self):
        return f"OnDisplayed({self.name})"


def digit_rewards(classifier, digit: int = 3) -> dict:
    """The chapter's rewards on model-space digits, each of the displayed (clamped) image:
    ``is_<digit>`` = log p(digit | x) of the classifier; the weight-free (:mod:`cda_lite.rewards`)
    ``ink`` = mean ink, ``local_contrast`` = mean ``|Y − blur(Y)|`` (crisp strokes) and ``global_contrast``
    = std of the pixels (correlated with ink, 0.68 on the pretrained samples)."""
    from cda_lite.digits.classifier import ClassLogProb
    from cda_lite.digits.data import reward

    r = ClassLogProb(classifier, digit)
    return {r.name: OnDisplayed(r, r.name), **{k: OnDisplayed(reward(k), k)
                                               for k in ("ink", "local_contrast", "global_contrast")}}


def setup(config: ImageConfig | None = None, pretrained: nn.Module | None = None) -> DigitSetup:
    """Load (or train, cached) the pretrained UNet and the classifier, and fit the normalisers on
    ``config.n_norm`` pretrained samples drawn with the experiments' chain."""
    from cda_lite.digits.classifier import train_digit_classifier
    from cda_lite.digits.unet import digits_schedule, pretrain_digits

    config = config or config_for()
    pretrained = (pretrained or pretrain_digits()).eval()
    for p in pretrained.parameters():
        p.requires_grad_(False)
    classifier = train_digit_classifier()  # the reward is fixed; config.seed varies the experiments only
    schedule = digits_schedule()
    chain = Chain.make(schedule, config.sample_steps, 1.0)
    rewards = digit_rewards(classifier)
    x_pre = sample(pretrained, schedule, (config.n_norm, *SHAPE), steps=config.sample_steps, eta=1.0,
                   seed=config.seed + 101)
    with torch.no_grad():
        normalizers = {name: RewardNormalizer.fit(r(x_pre)) for name, r in rewards.items()}
    key = hashlib.sha256(json.dumps({"unet": _digest(pretrained), "clf": _digest(classifier),
                                     "betas": np.round(schedule.betas, 12).tolist(),
                                     "norm": {k: [v.mean, v.std] for k, v in normalizers.items()}},
                                    sort_keys=True).encode()).hexdigest()[:16]
    return DigitSetup(config, pretrained, classifier, schedule, chain, rewards, normalizers, x_pre, key)


__all__ = ["SHAPE", "ImageConfig", "PROFILES", "CONSTRAINTS", "EXPERTS", "config_for", "ConvCorrection", "SharedBase",
           "DigitSetup", "OnDisplayed", "digit_rewards", "setup"]
