"""Rewards by name for the SD rung: ``get_reward(name, **kw) -> reward(images, prompts=None) -> (n,)``
on images (n, 3, H, W) in [0, 1] (never remapped here), and :func:`normalizer` with Table 7's
(mean, std) as :class:`cda_lite.constraints.RewardNormalizer` defaults.

- weight-free: brightness, global_contrast, local_contrast, saturation, colourfulness
  (:mod:`cda_lite.rewards`, defined once);
- weight-based, loaded only when first called, from a local path (``path=`` or an env var) or the
  hub: ``aesthetic`` (LAION: CLIP ViT-L/14 + MLP head), ``hps`` (HPSv2, needs ``open_clip``),
  ``pickscore``, ``imagereward`` (needs ``image-reward``), ``mps`` (needs the MPS checkpoint),
  ``clip`` (CLIP score 100·cos);
- ``tiny_clip``: a tiny randomly initialised CLIP (same interface, prompt-aware) for tests.

None of the weight-based rewards is exercised in tests (no weights here); their loaders fail with a
message naming the path/env var to set. Chapter 10.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from cda_lite import rewards as wf
from cda_lite.constraints import RewardNormalizer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_preprocess(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Differentiable CLIP preprocessing of [0, 1] images: bicubic resize + centre crop + normalise."""
    x = wf._check(images)
    h, w = x.shape[-2:]
    s = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * s)), max(size, round(w * s))), mode="bicubic",
                      align_corners=False, antialias=True)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class WeightFree:
    """Adapter of a weight-free reward to the ``(images, prompts=None)`` interface."""

    needs_prompts = False

    def __init__(self, name):
        self.name, self.fn = name, wf.get(name)

    def __call__(self, images, prompts=None):
        return self.fn(images)


class _Lazy:
    """Base of the weight-based rewards: loads the model on first call, then scores."""

    needs_prompts = True
    env: str = ""
    hub_id: str = ""

    def __init__(self, path: str | None = None, device=None):
        self.path = path or (os.environ.get(self.env) if self.env else None)
        self.device, self._model = device, None

    def _source(self) -> tuple[str, bool]:
        from cda_lite.sd.load import offline

        if self.path:
            if not os.path.exists(self.path):
                raise FileNotFoundError(f"{self.name} reward: {self.path!r} does not exist; set {self.env} or "
                                        f"path= to a local copy of {self.hub_id}")
            return self.path, True
        return self.hub_id, offline()

    def _fail(self, e):
        raise FileNotFoundError(
            f"{self.name} reward: could not load weights ({type(e).__name__}: {e}). Provide them with "
            f"path=... or the env var {self.env} (a local copy of {self.hub_id}), or go online.") from e

    def __call__(self, images, prompts=None):
        if self._model is None:
            self._model = self.load()
        if self.needs_prompts and (prompts is None or len(prompts) != images.shape[0]):
            raise ValueError(f"{self.name} reward: needs one prompt per image")
        return self.score(images, prompts)


class _CLIPLike(_Lazy):
    """CLIP-style reward: scale · cos(image embedding, text embedding) (transformers CLIPModel)."""

    scale = 100.0
    proc_id = ""

    def load(self):
        from transformers import AutoProcessor, CLIPModel

        src, local = self._source()
        try:
            model = CLIPModel.from_pretrained(src, local_files_only=local).eval().requires_grad_(False)
            proc = AutoProcessor.from_pretrained(self.proc_id or src, local_files_only=local)
        except OSError as e:
            self._fail(e)
        self.tokenizer = proc.tokenizer
        return model.to(self.device) if self.device else model

    def score(self, images, prompts):
        m = self._model
        dev = next(m.parameters()).device
        img = m.get_image_features(pixel_values=clip_preprocess(images, m.config.vision_config.image_size).to(dev))
        tok = self.tokenizer(list(prompts), padding=True, truncation=True, return_tensors="pt").to(dev)
        txt = m.get_text_features(**tok)
        if not isinstance(img, torch.Tensor):  # transformers 5 may return a model output
            img, txt = img.pooler_output, txt.pooler_output
        return self.scale * F.cosine_similarity(img, txt, dim=-1).to(images.dtype).to(images.device)


class CLIPScore(_CLIPLike):
    name, env, hub_id = "clip", "CDA_CLIP_PATH", "openai/clip-vit-large-patch14"


class PickScore(_CLIPLike):
    name, env, hub_id = "pickscore", "CDA_PICKSCORE_PATH", "yuvalkirstain/PickScore_v1"
    proc_id = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


class Aesthetic(_Lazy):
    """LAION aesthetic predictor v2: MLP head on L2-normalised CLIP ViT-L/14 image embeddings.
    ``path`` = the head's state dict (``sac+logos+ava1-l14-linearMSE.pth``); CLIP from CDA_CLIP_PATH/hub."""

    name, env, hub_id, needs_prompts = "aesthetic", "CDA_AESTHETIC_PATH", "sac+logos+ava1-l14-linearMSE.pth", False

    def load(self):
        from transformers import CLIPModel

        if not self.path or not os.path.exists(self.path):
            raise FileNotFoundError(f"aesthetic reward: set {self.env} or path= to the LAION head "
                                    f"({self.hub_id}); got {self.path!r}")
        head = torch.nn.Sequential(torch.nn.Linear(768, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128),
                                   torch.nn.Dropout(0.2), torch.nn.Linear(128, 64), torch.nn.Dropout(0.1),
                                   torch.nn.Linear(64, 16), torch.nn.Linear(16, 1))
        sd = torch.load(self.path, map_location="cpu")
        head.load_state_dict({k.replace("layers.", ""): v for k, v in sd.items()})
        clip_src = os.environ.get("CDA_CLIP_PATH") or CLIPScore.hub_id
        from cda_lite.sd.load import offline
        try:
            clip = CLIPModel.from_pretrained(clip_src, local_files_only=offline() or os.path.isdir(clip_src))
        except OSError as e:
            self._fail(e)
        self.clip = clip.eval().requires_grad_(False)
        return head.eval().requires_grad_(False)

    def score(self, images, prompts=None):
        emb = self.clip.get_image_features(pixel_values=clip_preprocess(images))
        if not isinstance(emb, torch.Tensor):
            emb = emb.pooler_output
        return self._model(F.normalize(emb, dim=-1))[:, 0]


def _needs_package(name, package, hint):
    class _Missing(_Lazy):
        def load(self):
            try:
                __import__(package)
            except ImportError as e:
                raise ImportError(f"{name} reward needs the optional package {package!r} ({hint}) and its "
                                  f"weights; set {self.env} to their local path") from e
            raise NotImplementedError(
                f"{name} reward: the {package} scorer is not wrapped differentiably in cda_lite yet; "
                f"use aesthetic/pickscore/clip or a weight-free reward")
    _Missing.name, _Missing.env, _Missing.hub_id = name, f"CDA_{name.upper()}_PATH", hint
    return _Missing


HPS = _needs_package("hps", "hpsv2", "HPSv2, open_clip ViT-H-14")
ImageReward = _needs_package("imagereward", "ImageReward", "ImageReward-v1.0")
MPS = _needs_package("mps", "open_clip", "MPS overall-preference checkpoint")


class TinyCLIPReward(torch.nn.Module):
    """A tiny randomly initialised CLIP (vision + text towers, width 32) with the interface of the
    prompt-aware rewards: 100·cos(image, prompt). A stand-in for tests; its values mean nothing."""

    needs_prompts = True
    name = "tiny_clip"

    def __init__(self, seed: int = 0, image_size: int = 32):
        super().__init__()
        from transformers import CLIPConfig, CLIPModel

        from cda_lite.sd.tiny import TINY_PROMPT_LENGTH, tiny_tokenizer

        self.tokenizer = tiny_tokenizer()
        torch.manual_seed(seed)
        cfg = CLIPConfig(
            text_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                             vocab_size=len(self.tokenizer), max_position_embeddings=TINY_PROMPT_LENGTH,
                             bos_token_id=0, eos_token_id=1, pad_token_id=1),
            vision_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                               image_size=image_size, patch_size=8),
            projection_dim=16)
        self.model = CLIPModel(cfg).eval().requires_grad_(False)
        self.image_size = image_size

    def forward(self, images, prompts=None):
        if prompts is None or len(prompts) != images.shape[0]:
            raise ValueError("tiny_clip reward: needs one prompt per image")
        m = self.model
        img = m.get_image_features(pixel_values=clip_preprocess(images, self.image_size))
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt")
        txt = m.get_text_features(input_ids=tok.input_ids)
        if not isinstance(img, torch.Tensor):
            img, txt = img.pooler_output, txt.pooler_output
        return 100.0 * F.cosine_similarity(img, txt, dim=-1)


WEIGHTED = {"aesthetic": Aesthetic, "hps": HPS, "pickscore": PickScore, "imagereward": ImageReward,
            "mps": MPS, "clip": CLIPScore, "tiny_clip": TinyCLIPReward}


def known() -> list[str]:
    return sorted(set(wf.WEIGHT_FREE) | set(WEIGHTED))


def get_reward(name: str, **kw):
    """The reward called ``name`` (nothing is loaded until it is first called)."""
    if name in wf.WEIGHT_FREE:
        if kw:
            raise ValueError(f"reward {name!r} takes no options, got {sorted(kw)}")
        return WeightFree(name)
    if name in WEIGHTED:
        return WEIGHTED[name](**kw)
    raise ValueError(f"unknown reward {name!r}; known: {known()}")


def normalizer(name: str, stats: dict | None = None) -> RewardNormalizer | None:
    """Table 7's (mean, std) for ``name`` (or ``stats[name]``); None when neither has it (raw units)."""
    table = {**wf.TABLE7_STATS, **(stats or {})}
    if name not in table:
        return None
    mean, std = table[name]
    return RewardNormalizer(float(mean), float(std))
