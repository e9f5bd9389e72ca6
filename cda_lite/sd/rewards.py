"""The reward scorers of the SD rung: ``reward(images, prompts=None) -> (n,)`` on images (n, 3, H, W) in
[0, 1] (never remapped here: the public code's second x·0.5+0.5 is trap 2 of the reference). They are
looked up by name with :func:`cda_lite.sd.registry.get_reward`, which also holds :func:`normalizer`
(Table 7's (mean, std) as :class:`cda_lite.constraints.RewardNormalizer` defaults).

- weight-free: brightness, global_contrast, local_contrast, saturation, colourfulness
  (:mod:`cda_lite.rewards`, defined once);
- weight-based, loaded when first called, from a local path (``path=`` or an env var) or, online,
  from the hub; every one is differentiable in the images (preprocessing in torch, frozen weights):

  ======================  ====================================================================
  ``clip``                CLIP score 100·cos (``transformers`` CLIPModel folder; ViT-L/14)
  ``pickscore``           PickScore v1: logit_scale·cos (CLIPModel folder; ViT-H-14 tokenizer)
  ``aesthetic``           LAION aesthetic v2: MLP head on normalised CLIP ViT-L/14 image embeddings
  ``hps``                 HPSv2: cos of an open_clip ViT-H-14 (``HPS_v2_compressed.pt``), read
                          into ``transformers`` by :mod:`cda_lite.sd.convert` (no open_clip needed)
  ``imagereward``         ImageReward: BLIP ViT-L + BERT cross-attention + MLP (``ImageReward.pt``),
                          read into ``transformers`` Blip classes, standardised as the package does
  ``mps``                 MPS (overall): the authors' pickled model; needs their code on the path
  ======================  ====================================================================

- ``tiny_<name>`` (:mod:`cda_lite.sd.tiny_rewards`): the same classes with tiny random checkpoints in
  the original layouts, built in memory — stand-ins for tests and the fast profile (values mean nothing).

A missing checkpoint raises :class:`cda_lite.sd.load.MissingWeightsError` naming the env var to set.
Chapter 10.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from cda_lite import rewards as wf
from cda_lite.sd.load import MissingWeightsError, offline

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LAION_H14 = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"  # tokenizer of PickScore, HPSv2 and MPS


def clip_preprocess(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Differentiable CLIP preprocessing of [0, 1] images: bicubic resize of the short side + centre
    crop + normalise with CLIP's mean/std (what CLIP/PickScore/HPSv2/ImageReward/BLIP do to a PIL image,
    up to PIL's resampling filter)."""
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


def _features(out) -> torch.Tensor:
    """transformers 5 may return a model output where 4.x returned the tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class WeightFree:
    """Adapter of a weight-free reward to the ``(images, prompts=None)`` interface."""

    needs_prompts = False

    def __init__(self, name):
        self.name, self.fn = name, wf.get(name)

    def __call__(self, images, prompts=None):
        return self.fn(images)

    def to(self, device):  # no weights: computed wherever the images are
        return self


class LazyScorer:
    """Base of the weight-based rewards: resolves where the weights are, loads them on first call
    (:meth:`load`), checks the prompts, then scores (:meth:`score`) on the model's device."""

    name = ""
    needs_prompts = True
    env: str = ""  # env var holding the local path of the checkpoint
    hub_id: str = ""  # hub repository
    hub_file: str | None = None  # file inside it (None: the repository is a model folder)

    def __init__(self, path: str | None = None, device=None):
        self.path = path or (os.environ.get(self.env) if self.env else None)
        self.device, self._model = device, None

    def _fail(self, what: str, e: Exception | None = None):
        where = f"{self.hub_id}" + (f" ({self.hub_file})" if self.hub_file else "")
        raise MissingWeightsError(
            f"{self.name} reward: {what}{f' ({type(e).__name__}: {e})' if e else ''}. Provide the weights with "
            f"path=... or the env var {self.env} (a local copy of {where}), or go online.") from e

    def _source(self) -> tuple[str, bool]:
        """(path or hub id of a model folder, local_files_only)."""
        if self.path:
            if not os.path.exists(self.path):
                self._fail(f"{self.path!r} does not exist")
            return self.path, True
        return self.hub_id, offline()

    def _file(self) -> str:
        """Path of a single-file checkpoint: ``path``/env var, else the hub file (cached or downloaded)."""
        if self.path:
            if not os.path.isfile(self.path):
                self._fail(f"{self.path!r} is not a file")
            return self.path
        try:
            from huggingface_hub import hf_hub_download
            return hf_hub_download(self.hub_id, self.hub_file, local_files_only=offline())
        except Exception as e:  # noqa: BLE001 (network, cache miss, missing package: one clear message)
            self._fail("no local checkpoint and the hub is unreachable", e)

    def _place(self, module):
        return module.to(self.device) if self.device is not None else module

    def _modules(self) -> list:
        """The loaded networks (the Aesthetic head adds its CLIP)."""
        return [m for m in (self._model, getattr(self, "clip", None)) if isinstance(m, torch.nn.Module)]

    def to(self, device):
        """Follow the pipeline's device: the networks move now if loaded, else when they load
        (as ``nn.Module.to``; returns self). Training, DAS, evaluation and the concept metrics call it."""
        self.device = torch.device(device) if device is not None else None
        if self.device is not None:
            for m in self._modules():
                m.to(self.device)
        return self

    @property
    def model_device(self):
        return next(self._model.parameters()).device

    def __call__(self, images, prompts=None):
        if self._model is None:
            self._model = self.load()
        if self.needs_prompts and (prompts is None or isinstance(prompts, str) or len(prompts) != images.shape[0]):
            raise ValueError(f"{self.name} reward: prompts must be a list with one prompt per image")
        return self.score(images, prompts)

    def _tokens(self, prompts, max_length=None):
        tok = self.tokenizer
        return tok(list(prompts), padding="max_length", truncation=True,
                   max_length=max_length or tok.model_max_length, return_tensors="pt").to(self.model_device)


def load_tokenizer(source: str, local: bool, owner: LazyScorer, kind: str = "clip"):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError) as e:
        owner._fail(f"could not load the {kind} tokenizer from {source!r}", e)


class _CLIPLike(LazyScorer):
    """CLIP-style reward from a ``transformers`` CLIPModel folder: scale · cos(image, text)."""

    scale: float | None = 100.0  # None: the model's own logit_scale.exp()
    tokenizer_id = ""  # where the tokenizer lives when the model folder has none

    def __init__(self, path=None, device=None, tokenizer: str | None = None):
        super().__init__(path, device)
        self.tokenizer_path = tokenizer

    def load(self):
        from transformers import CLIPModel

        src, local = self._source()
        try:
            model = CLIPModel.from_pretrained(src, local_files_only=local)
        except (OSError, ValueError) as e:
            self._fail(f"could not load a CLIPModel from {src!r}", e)
        has_tok = os.path.isfile(os.path.join(str(src), "tokenizer_config.json"))
        tok_src = self.tokenizer_path or (src if has_tok or not self.tokenizer_id else self.tokenizer_id)
        self.tokenizer = load_tokenizer(tok_src, offline() or os.path.isdir(str(tok_src)), self)
        return self._place(model.float().eval().requires_grad_(False))

    def embed(self, images, prompts):
        m = self._model
        dev = self.model_device
        img = _features(m.get_image_features(pixel_values=clip_preprocess(images, m.config.vision_config.image_size).to(dev)))
        txt = _features(m.get_text_features(input_ids=self._tokens(prompts).input_ids))
        return img, txt

    def score(self, images, prompts):
        img, txt = self.embed(images, prompts)
        scale = self._model.logit_scale.exp() if self.scale is None else self.scale
        return (scale * F.cosine_similarity(img, txt, dim=-1)).to(images.dtype).to(images.device)


class CLIPScore(_CLIPLike):
    """CLIP score 100·cos(image, prompt) (Table 1's "CLIP"; openai/clip-vit-large-patch14 by default)."""

    name, env, hub_id = "clip", "CDA_CLIP_PATH", "openai/clip-vit-large-patch14"


class PickScore(_CLIPLike):
    """PickScore v1 (Kirstain et al. 2023): the fine-tuned ViT-H-14 CLIP's logit_scale·cos."""

    name, env, hub_id, scale, tokenizer_id = "pickscore", "CDA_PICKSCORE_PATH", "yuvalkirstain/PickScore_v1", None, LAION_H14


class Aesthetic(LazyScorer):
    """LAION aesthetic predictor v2: MLP head on L2-normalised CLIP ViT-L/14 image embeddings.
    ``path`` = the head's state dict (``sac+logos+ava1-l14-linearMSE.pth``, keys ``layers.*``);
    ``clip_path`` = a CLIPModel folder (default ``$CDA_CLIP_PATH`` or openai/clip-vit-large-patch14)."""

    name, env, needs_prompts = "aesthetic", "CDA_AESTHETIC_PATH", False
    hub_id = "sac+logos+ava1-l14-linearMSE.pth (LAION improved-aesthetic-predictor)"

    def __init__(self, path=None, device=None, clip_path: str | None = None):
        super().__init__(path, device)
        self.clip_path = clip_path or os.environ.get("CDA_CLIP_PATH") or CLIPScore.hub_id

    def load(self):
        from transformers import CLIPModel

        from cda_lite.sd.convert import reward_mlp

        if not self.path or not os.path.isfile(self.path):
            raise MissingWeightsError(f"aesthetic reward: the LAION head {self.path!r} was not found; set "
                                      f"{self.env} or path= to {self.hub_id}")
        sd = torch.load(self.path, map_location="cpu", weights_only=True)
        sd = {k.replace("layers.", ""): v for k, v in sd.items()}
        head = reward_mlp(sd["0.weight"].shape[1])
        head.load_state_dict(sd)
        local = offline() or os.path.isdir(self.clip_path)
        try:
            clip = CLIPModel.from_pretrained(self.clip_path, local_files_only=local)
        except (OSError, ValueError) as e:
            self._fail(f"could not load CLIP from {self.clip_path!r} (set CDA_CLIP_PATH)", e)
        self.clip = self._place(clip.float().eval().requires_grad_(False))
        return self._place(head.float().eval().requires_grad_(False))

    def score(self, images, prompts=None):
        c = self.clip
        emb = _features(c.get_image_features(
            pixel_values=clip_preprocess(images, c.config.vision_config.image_size).to(self.model_device)))
        return self._model(F.normalize(emb, dim=-1))[:, 0].to(images.dtype).to(images.device)


class HPS(LazyScorer):
    """HPSv2 (Wu et al. 2023): cos(image, prompt) of an open_clip ViT-H-14 fine-tuned on human preferences
    (HPSv2's ``score``: the diagonal of image_features @ text_features.T, no logit scale).

    ``path``: ``HPS_v2_compressed.pt`` (v2.0, the ``hpsv2`` package's default) or ``HPS_v2.1_compressed.pt``
    (``{"state_dict": ...}`` of open_clip), read by :func:`cda_lite.sd.convert.load_openclip_as_hf`;
    ``tokenizer``: a folder/hub id with open_clip's BPE (laion/CLIP-ViT-H-14-laion2B-s32B-b79K).
    """

    name, env, hub_id, hub_file = "hps", "CDA_HPS_PATH", "xswu/HPSv2", "HPS_v2_compressed.pt"

    def __init__(self, path=None, device=None, tokenizer: str | None = None, head_widths=(80, 64)):
        super().__init__(path, device)
        self.tokenizer_path = tokenizer or os.environ.get("CDA_HPS_TOKENIZER") or LAION_H14
        self.head_widths = tuple(head_widths)

    def load(self):
        from cda_lite.sd.convert import load_openclip_as_hf

        ckpt = torch.load(self._file(), map_location="cpu", weights_only=True)
        sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
        self.tokenizer = load_tokenizer(self.tokenizer_path, offline() or os.path.isdir(self.tokenizer_path), self)
        model = load_openclip_as_hf(sd, *self.head_widths, eos_token_id=self.tokenizer.eos_token_id)
        return self._place(model)

    def score(self, images, prompts):
        m = self._model
        img = _features(m.get_image_features(
            pixel_values=clip_preprocess(images, m.config.vision_config.image_size).to(self.model_device)))
        txt = _features(m.get_text_features(input_ids=self._tokens(prompts).input_ids))
        return F.cosine_similarity(img, txt, dim=-1).to(images.dtype).to(images.device)


class ImageRewardModel(torch.nn.Module):
    """ImageReward's network on ``transformers`` Blip classes: BLIP ViT → BERT with cross-attention over
    the image tokens → [CLS] feature → MLP → (r − mean)/std."""

    def __init__(self, vision_cfg: dict, text_cfg: dict):
        super().__init__()
        from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

        from cda_lite.sd.convert import reward_mlp

        self.visual = BlipVisionModel(BlipVisionConfig(**vision_cfg))
        self.text = BlipTextModel(BlipTextConfig(**text_cfg), add_pooling_layer=False)
        self.mlp = reward_mlp(text_cfg["hidden_size"])
        self.image_size = vision_cfg["image_size"]

    def forward(self, pixel_values, input_ids, attention_mask, mean=0.0, std=1.0):
        img = self.visual(pixel_values=pixel_values).last_hidden_state
        out = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=img,
                        encoder_attention_mask=torch.ones(img.shape[:2], dtype=torch.long, device=img.device))
        return (self.mlp(out.last_hidden_state[:, 0]).squeeze(-1) - mean) / std


class ImageReward(LazyScorer):
    """ImageReward v1.0 (Xu et al. 2023), as its ``score``: prompt tokens (BERT, padded to 35) attend to the
    BLIP image tokens; the [CLS] feature goes through the MLP; standardised with the package's mean/std.

    ``path``: ``ImageReward.pt`` (read by :func:`cda_lite.sd.convert.imagereward_split`);
    ``tokenizer``: bert-base-uncased (BLIP's extra [DEC]/[ENC] tokens are not used by the score).
    """

    name, env, hub_id, hub_file = "imagereward", "CDA_IMAGEREWARD_PATH", "THUDM/ImageReward", "ImageReward.pt"
    max_length = 35

    def __init__(self, path=None, device=None, tokenizer: str | None = None, vision: dict | None = None,
                 text: dict | None = None, mean: float | None = None, std: float | None = None):
        from cda_lite.sd import convert as C

        super().__init__(path, device)
        self.tokenizer_path = tokenizer or os.environ.get("CDA_IMAGEREWARD_TOKENIZER") or "google-bert/bert-base-uncased"
        self.vision_cfg, self.text_cfg = vision or C.IMAGEREWARD_VISION, text or C.IMAGEREWARD_TEXT
        self.mean = C.IMAGEREWARD_MEAN if mean is None else float(mean)
        self.std = C.IMAGEREWARD_STD if std is None else float(std)

    def load(self):
        from cda_lite.sd.convert import imagereward_split

        ckpt = torch.load(self._file(), map_location="cpu", weights_only=True)
        vision, text, mlp = imagereward_split(ckpt)
        model = ImageRewardModel(self.vision_cfg, self.text_cfg)
        for part, sd in ((model.visual, vision), (model.text, text), (model.mlp, mlp)):
            missing, unexpected = part.load_state_dict(sd, strict=False)
            missing = [k for k in missing if not k.endswith("position_ids")]
            if missing or unexpected:
                raise ValueError(f"imagereward: checkpoint does not match the architecture: missing {missing[:5]}, "
                                 f"unexpected {unexpected[:5]}")
        self.tokenizer = load_tokenizer(self.tokenizer_path, offline() or os.path.isdir(self.tokenizer_path),
                                         self, "BERT")
        return self._place(model.float().eval().requires_grad_(False))

    def score(self, images, prompts):
        m = self._model
        tok = self._tokens(prompts, self.max_length)
        r = m(clip_preprocess(images, m.image_size).to(self.model_device), tok.input_ids, tok.attention_mask,
              self.mean, self.std)
        return r.to(images.dtype).to(images.device)


MPS_CONDITION = ("light, color, clarity, tone, style, ambiance, artistry, shape, face, hair, hands, limbs, "
                 "structure, instance, texture, quantity, attributes, position, number, location, word, things.")


class MPS(LazyScorer):
    """MPS, overall preference (Zhang et al., CVPR 2024), as its published inference:
    prompt tokens are compared with the "condition" words; image tokens attend (``cross_model``) only to
    prompt tokens whose similarity to some condition word exceeds 0.3 of the maximum; the score is
    logit_scale · cos(attended image [0] token, prompt embedding).

    ``path``: ``MPS_overall_checkpoint.pth`` — a pickled model object, so the authors' code
    (``trainer.models.*`` of the MPS repository) must be importable: put the repository on
    ``PYTHONPATH`` or set ``CDA_MPS_CODE`` to it. Loading unpickles: only load a file you trust.
    The similarity normalisation is per sample (the published script scores one prompt at a time, where
    per-sample and per-batch agree). ``model``: an already built object with the same interface
    (``.model.get_text_features(ids) -> (tokens, pooled)``, ``.model.get_image_features(pixels) -> tokens``,
    ``.cross_model(image_tokens, text_tokens, mask)``, ``.logit_scale``) — the tiny stand-in uses it.
    """

    name, env, hub_id = "mps", "CDA_MPS_PATH", "MPS_overall_checkpoint.pth (Kwai-Kolors/MPS, Google Drive)"

    def __init__(self, path=None, device=None, tokenizer: str | None = None, model=None, tokenizer_obj=None,
                 image_size: int = 224, condition: str = MPS_CONDITION):
        super().__init__(path, device)
        self.tokenizer_path = tokenizer or os.environ.get("CDA_MPS_TOKENIZER") or LAION_H14
        self.condition, self.image_size = condition, int(image_size)
        if model is not None:
            self._model, self.tokenizer = self._place(model.float().eval().requires_grad_(False)), tokenizer_obj

    def load(self):
        import sys

        code = os.environ.get("CDA_MPS_CODE")
        if code and code not in sys.path:
            sys.path.insert(0, code)
        if not self.path or not os.path.isfile(self.path):
            self._fail(f"checkpoint {self.path!r} not found")
        try:
            model = torch.load(self.path, map_location="cpu", weights_only=False)
        except ModuleNotFoundError as e:
            raise ImportError("mps reward: the checkpoint is a pickled model; put the MPS repository "
                              "(its trainer/ package) on PYTHONPATH or set CDA_MPS_CODE") from e
        self.tokenizer = load_tokenizer(self.tokenizer_path, offline() or os.path.isdir(self.tokenizer_path), self)
        return self._place(model.float().eval().requires_grad_(False))

    def score(self, images, prompts):
        m = self._model
        ids = self._tokens(prompts).input_ids
        cond_ids = self._tokens([self.condition]).input_ids.expand(ids.shape[0], -1)
        text_tok, text_emb = m.model.get_text_features(ids)
        cond_tok, _ = m.model.get_text_features(cond_ids)
        img_tok = m.model.get_image_features(clip_preprocess(images, self.image_size).to(self.model_device))
        sim = torch.einsum("bid,bjd->bji", text_tok, cond_tok).amax(dim=1, keepdim=True)  # (b, 1, text tokens)
        sim = sim / sim.amax(dim=-1, keepdim=True)
        mask = torch.where(sim > 0.3, 0.0, float("-inf")).to(img_tok.dtype).expand(-1, img_tok.shape[1], -1)
        img = m.cross_model(img_tok, text_tok, mask)[:, 0]
        s = m.logit_scale.exp() * F.cosine_similarity(img, text_emb, dim=-1)
        return s.to(images.dtype).to(images.device)


def follow(reward, device):
    """Move ``reward``'s networks to ``device`` (the pipeline's): every reward here has ``.to``; a plain
    callable is returned as is. ``device=None`` leaves it where it is."""
    if device is not None and hasattr(reward, "to"):
        reward.to(device)
    return reward
