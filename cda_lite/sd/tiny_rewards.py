"""Tiny randomly initialised stand-ins of the weight-based rewards, built in memory — never a download.

Each function writes a tiny checkpoint **in the original file layout** (open_clip state dict for HPSv2,
``ImageReward.pt`` keys, a LAION head ``.pth``, a ``transformers`` CLIP folder, a pickled MPS-like
model, a BLIP-2 retrieval folder) into a temporary folder, loads it with the real scorer class of
:mod:`cda_lite.sd.rewards` / :mod:`cda_lite.sd.concepts`, and deletes the folder. So a test of a
stand-in runs the same loader and scoring code as the real weights; only the sizes differ (width 32,
images 32 px, the byte-level tokenizer of :mod:`cda_lite.sd.tiny`). Their values mean nothing.
Chapters 10 and 11.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import torch

from cda_lite.sd import convert as C
from cda_lite.sd import rewards as R
from cda_lite.sd.tiny import TINY_PROMPT_LENGTH, tiny_tokenizer

IMAGE = 32  # the tiny scorers' input resolution (the tiny pipeline makes 32 px images)


def _quiet(fn):
    """Run a stand-in builder without transformers' progress bars and config warnings (tiny vocabularies
    trip its token-id checks); the previous settings are restored."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from transformers.utils import logging as tl

        level, bars = tl.get_verbosity(), tl.is_progress_bar_enabled()
        tl.set_verbosity_error()
        tl.disable_progress_bar()
        try:
            return fn(*args, **kwargs)
        finally:
            tl.set_verbosity(level)
            if bars:
                tl.enable_progress_bar()
    return wrapper


def _loaded(scorer, folder):
    try:
        scorer._model = scorer.load()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return scorer


def tiny_clip_model(seed: int = 0, projection_dim: int = 16):
    """A tiny ``transformers.CLIPModel`` (both towers width 32, 2 layers) for the tiny tokenizer."""
    from transformers import CLIPConfig, CLIPModel

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                         vocab_size=len(tok), max_position_embeddings=TINY_PROMPT_LENGTH, bos_token_id=0,
                         eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                           image_size=IMAGE, patch_size=8),
        projection_dim=projection_dim)
    return CLIPModel(cfg).eval(), tok


def _clip_folder(seed):
    folder = tempfile.mkdtemp(prefix="cda-tiny-clip-")
    model, tok = tiny_clip_model(seed)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@_quiet
def tiny_clip_score(seed: int = 0, device=None) -> R.CLIPScore:
    """:class:`~cda_lite.sd.rewards.CLIPScore` on a tiny CLIP folder."""
    folder = _clip_folder(seed)
    return _loaded(R.CLIPScore(path=folder, device=device), folder)


@_quiet
def tiny_pickscore(seed: int = 1, device=None) -> R.PickScore:
    """:class:`~cda_lite.sd.rewards.PickScore` (logit_scale·cos) on a tiny CLIP folder."""
    folder = _clip_folder(seed)
    return _loaded(R.PickScore(path=folder, device=device, tokenizer=folder), folder)


@_quiet
def tiny_aesthetic(seed: int = 2, device=None) -> R.Aesthetic:
    """:class:`~cda_lite.sd.rewards.Aesthetic`: a random LAION-layout head (``layers.*``) on a tiny CLIP."""
    folder = _clip_folder(seed)
    head = os.path.join(folder, "head.pth")
    torch.save({"layers." + k: v for k, v in C.random_reward_mlp_state_dict(16, seed).items()}, head)
    return _loaded(R.Aesthetic(path=head, clip_path=folder, device=device), folder)


@_quiet
def tiny_hps(seed: int = 3, device=None) -> R.HPS:
    """:class:`~cda_lite.sd.rewards.HPS` on a random open_clip-layout checkpoint ``{"state_dict": ...}``."""
    folder = tempfile.mkdtemp(prefix="cda-tiny-hps-")
    tok = tiny_tokenizer()
    tok.save_pretrained(folder)
    sd = C.random_openclip_state_dict(seed, vocab=len(tok), context=TINY_PROMPT_LENGTH, image_size=IMAGE)
    path = os.path.join(folder, "HPS_tiny.pt")
    torch.save({"state_dict": sd}, path)
    return _loaded(R.HPS(path=path, tokenizer=folder, head_widths=(8, 8), device=device), folder)


TINY_BLIP_VISION = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                        image_size=IMAGE, patch_size=8, layer_norm_eps=1e-6, hidden_act="gelu")


def tiny_bert_tokenizer():
    """A BERT WordPiece tokenizer with a small in-memory vocabulary (letters, a few words)."""
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz") + \
        ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + ["a", "an", "of", "photo", "cat", "dog", "owl", "and"]
    vocab = {}
    for w in words:
        vocab.setdefault(w, len(vocab))
    return BertTokenizer(vocab=vocab)


@_quiet
def tiny_imagereward(seed: int = 4, device=None) -> R.ImageReward:
    """:class:`~cda_lite.sd.rewards.ImageReward` on a random checkpoint in ``ImageReward.pt``'s layout."""
    folder = tempfile.mkdtemp(prefix="cda-tiny-ir-")
    tok = tiny_bert_tokenizer()
    tok.save_pretrained(folder)
    text = dict(vocab_size=len(tok), hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=64, layer_norm_eps=1e-12,
                hidden_act="gelu")
    path = os.path.join(folder, "ImageReward.pt")
    torch.save(C.random_imagereward_state_dict(seed, TINY_BLIP_VISION, text), path)
    return _loaded(R.ImageReward(path=path, tokenizer=folder, vision=TINY_BLIP_VISION, text=text, device=device),
                   folder)


class _TinyMPSTowers(torch.nn.Module):
    """MPS's CLIP interface: token features (projected) and the pooled prompt embedding."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def get_text_features(self, input_ids):
        out = self.clip.text_model(input_ids=input_ids)
        return self.clip.text_projection(out.last_hidden_state), self.clip.text_projection(out.pooler_output)

    def get_image_features(self, pixel_values):
        h = self.clip.vision_model(pixel_values=pixel_values).last_hidden_state
        return self.clip.visual_projection(self.clip.vision_model.post_layernorm(h))


class TinyCrossModel(torch.nn.Module):
    """Image tokens attend to prompt tokens (additive ``mask`` (b, image tokens, text tokens)), residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(dim, dim) for _ in range(3))

    def forward(self, image_tokens, text_tokens, mask):
        a = self.q(image_tokens) @ self.k(text_tokens).transpose(1, 2) / image_tokens.shape[-1] ** 0.5 + mask
        return image_tokens + torch.softmax(a, dim=-1) @ self.v(text_tokens)


class TinyMPSNet(torch.nn.Module):
    """A tiny model with the attributes MPS's inference uses (``model``, ``cross_model``, ``logit_scale``)."""

    def __init__(self, seed: int = 5):
        super().__init__()
        clip, _ = tiny_clip_model(seed)
        self.model = _TinyMPSTowers(clip)
        self.cross_model = TinyCrossModel(clip.config.projection_dim)
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.6052))


@_quiet
def tiny_mps(seed: int = 5, device=None) -> R.MPS:
    """:class:`~cda_lite.sd.rewards.MPS` on a pickled :class:`TinyMPSNet` (MPS ships a pickled model)."""
    folder = tempfile.mkdtemp(prefix="cda-tiny-mps-")
    tiny_tokenizer().save_pretrained(folder)
    path = os.path.join(folder, "MPS_tiny.pth")
    torch.save(TinyMPSNet(seed), path)
    return _loaded(R.MPS(path=path, tokenizer=folder, image_size=IMAGE, device=device), folder)


@_quiet
def tiny_blip2_itm(seed: int = 6, mode: str = "itm", device=None):
    """:class:`~cda_lite.sd.concepts.Blip2ITM` on a tiny random ``Blip2ForImageTextRetrieval`` folder."""
    from transformers import Blip2Config, Blip2ForImageTextRetrieval

    from cda_lite.sd.concepts import Blip2ITM

    tok = tiny_bert_tokenizer()
    torch.manual_seed(seed)
    cfg = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=1,
                           image_size=IMAGE, patch_size=8),
        qformer_config=dict(vocab_size=len(tok), hidden_size=32, num_attention_heads=4, num_hidden_layers=1,
                            intermediate_size=64, encoder_hidden_size=32, max_position_embeddings=64,
                            use_qformer_text_input=True),
        text_config=dict(model_type="opt", vocab_size=8, hidden_size=16, num_hidden_layers=1, ffn_dim=16,
                         num_attention_heads=2, word_embed_proj_dim=16),
        num_query_tokens=4, image_text_hidden_size=16)
    folder = tempfile.mkdtemp(prefix="cda-tiny-blip2-")
    Blip2ForImageTextRetrieval(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return _loaded(Blip2ITM(path=folder, mode=mode, device=device), folder)


class TinyCLIPReward(torch.nn.Module):
    """A tiny randomly initialised CLIP (vision + text towers, width 32) with the interface of the
    prompt-aware rewards: 100·cos(image, prompt). A stand-in for tests; its values mean nothing."""

    needs_prompts = True
    name = "tiny_clip"

    def __init__(self, seed: int = 0, image_size: int = 32):
        super().__init__()
        from transformers import CLIPConfig, CLIPModel

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
        dev = next(m.parameters()).device
        img = R._features(m.get_image_features(pixel_values=R.clip_preprocess(images, self.image_size).to(dev)))
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt")
        txt = R._features(m.get_text_features(input_ids=tok.input_ids.to(dev)))
        return (100.0 * torch.nn.functional.cosine_similarity(img, txt, dim=-1)).to(images.device)


def tiny_clip(seed: int = 0, image_size: int = IMAGE) -> TinyCLIPReward:
    """``get_reward("tiny_clip")``: :class:`TinyCLIPReward`."""
    return TinyCLIPReward(seed, image_size)
