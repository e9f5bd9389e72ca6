"""Checkpoint layouts of the published reward models, read into ``transformers`` modules so that no
extra package (open_clip, the ImageReward package, torchvision) is needed to score images.

- **open_clip CLIP** (HPSv2's ``HPS_v2_compressed.pt`` / ``HPS_v2.1_compressed.pt`` hold
  ``{"state_dict": ...}`` of an open_clip ViT-H-14): :func:`openclip_config` infers the
  architecture from the tensor shapes, :func:`openclip_to_hf` renames the keys for
  ``transformers.CLIPModel`` (``in_proj`` split into q/k/v, ``proj`` matrices transposed).
- **ImageReward** (``ImageReward.pt``: ``blip.visual_encoder.*`` — a timm-style BLIP ViT —,
  ``blip.text_encoder.*`` — BLIP's BERT with cross-attention — and ``mlp.layers.*``):
  :func:`imagereward_split` returns the state dicts of ``BlipVisionModel``, ``BlipTextModel`` and the
  MLP head.
- ``random_*`` functions write checkpoints of the same layouts with tiny random tensors: the stand-ins
  of :mod:`cda_lite.sd.tiny_rewards` go through the very loaders that read the real files.

The mappings are checked in ``tests/test_sd_rewards.py`` against forward passes written from the
original layouts' definitions (not through these functions). Chapter 10.
"""
from __future__ import annotations

import re

import torch

# ---------------------------------------------------------------------------------- open_clip
_OC_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
_OC_TOP = {"token_embedding.weight": "text_model.embeddings.token_embedding.weight",
           "positional_embedding": "text_model.embeddings.position_embedding.weight",
           "ln_final.weight": "text_model.final_layer_norm.weight",
           "ln_final.bias": "text_model.final_layer_norm.bias",
           "logit_scale": "logit_scale",
           "visual.class_embedding": "vision_model.embeddings.class_embedding",
           "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
           "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
           "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
           "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
           "visual.ln_post.weight": "vision_model.post_layernorm.weight",
           "visual.ln_post.bias": "vision_model.post_layernorm.bias"}


def strip_prefix(sd: dict, prefix: str = "module.") -> dict:
    """Drop a DataParallel/DDP ``module.`` prefix where every key has it."""
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def _count_blocks(sd: dict, prefix: str) -> int:
    idx = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    if not idx:
        raise ValueError(f"state_dict: no blocks under {prefix!r} (not an open_clip CLIP checkpoint?)")
    return max(idx) + 1


def openclip_config(sd: dict, vision_head_width: int = 80, text_head_width: int = 64, hidden_act: str = "gelu"):
    """A ``transformers.CLIPConfig`` matching an open_clip ViT state dict (sizes read off the tensor
    shapes; head counts = width / head width: ViT-H-14 has 80 (vision) and 64 (text); activation GELU,
    as ViT-H-14's — OpenAI's own ViTs would need ``quick_gelu``)."""
    from transformers import CLIPConfig

    need = ("visual.conv1.weight", "visual.positional_embedding", "token_embedding.weight", "positional_embedding",
            "text_projection", "visual.proj")
    missing = [k for k in need if k not in sd]
    if missing:
        raise ValueError(f"state_dict: not an open_clip CLIP ViT checkpoint (missing {missing})")
    vw, patch = sd["visual.conv1.weight"].shape[0], sd["visual.conv1.weight"].shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    vocab, tw = sd["token_embedding.weight"].shape
    if vw % vision_head_width or tw % text_head_width:
        raise ValueError(f"head widths ({vision_head_width}, {text_head_width}) do not divide the widths ({vw}, {tw})")
    vi = "visual.transformer.resblocks.0.mlp.c_fc.weight"
    ti = "transformer.resblocks.0.mlp.c_fc.weight"
    vocab_last = vocab - 1
    return CLIPConfig(
        text_config=dict(hidden_size=tw, intermediate_size=sd[ti].shape[0], num_attention_heads=tw // text_head_width,
                         num_hidden_layers=_count_blocks(sd, "transformer.resblocks."), vocab_size=vocab,
                         max_position_embeddings=sd["positional_embedding"].shape[0], hidden_act=hidden_act,
                         bos_token_id=vocab_last - 1, eos_token_id=vocab_last, pad_token_id=0),
        vision_config=dict(hidden_size=vw, intermediate_size=sd[vi].shape[0], num_attention_heads=vw // vision_head_width,
                           num_hidden_layers=_count_blocks(sd, "visual.transformer.resblocks."), patch_size=patch,
                           image_size=grid * patch, hidden_act=hidden_act),
        projection_dim=sd["text_projection"].shape[1])


def openclip_to_hf(sd: dict) -> dict:
    """Rename an open_clip CLIP state dict to ``transformers.CLIPModel`` keys.

    ``attn.in_proj_weight`` (3W, W) stacks q, k, v (in that order) and is split; ``text_projection``
    and ``visual.proj`` are (W, E) matrices applied as x @ P, so the Linear weights are their transposes.
    Keys with no counterpart (e.g. HPSv2's training-only heads) raise, so nothing is silently dropped.
    """
    sd = strip_prefix(sd)
    out = {}
    for k, v in sd.items():
        if k in _OC_TOP:
            out[_OC_TOP[k]] = v
            continue
        if k == "text_projection":
            out["text_projection.weight"] = v.t().contiguous()
            continue
        if k == "visual.proj":
            out["visual_projection.weight"] = v.t().contiguous()
            continue
        m = re.match(r"(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$", k)
        if not m:
            raise ValueError(f"state_dict: unexpected open_clip key {k!r}")
        tower = "vision_model" if m.group(1) else "text_model"
        base = f"{tower}.encoder.layers.{m.group(2)}."
        rest = m.group(3)
        if rest.startswith("attn.in_proj_"):
            kind = rest.rsplit("_", 1)[1]  # weight | bias
            for name, part in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, dim=0)):
                out[f"{base}self_attn.{name}.{kind}"] = part.contiguous()
            continue
        mod, _, kind = rest.rpartition(".")
        if mod not in _OC_BLOCK:
            raise ValueError(f"state_dict: unexpected open_clip block key {k!r}")
        out[f"{base}{_OC_BLOCK[mod]}.{kind}"] = v
    return out


def load_openclip_as_hf(sd: dict, vision_head_width: int = 80, text_head_width: int = 64,
                        eos_token_id: int | None = None):
    """``transformers.CLIPModel`` (eval, frozen, fp32) holding the open_clip weights ``sd``. The text
    embedding is read at the first ``eos_token_id`` (default: the last vocabulary id, open_clip's
    end-of-text token, which is also where open_clip's ``argmax`` pooling reads it)."""
    from transformers import CLIPModel

    sd = strip_prefix(sd)
    cfg = openclip_config(sd, vision_head_width, text_head_width)
    if eos_token_id is not None:
        cfg.text_config.eos_token_id = int(eos_token_id)
    model = CLIPModel(cfg)
    missing, unexpected = model.load_state_dict(openclip_to_hf(sd), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"open_clip → CLIPModel: missing {missing}, unexpected {unexpected}")
    return model.float().eval().requires_grad_(False)


def random_openclip_state_dict(seed: int = 0, width: int = 32, layers: int = 2, heads_width: int = 8, patch: int = 8,
                               image_size: int = 32, vocab: int = 600, context: int = 16, embed: int = 16) -> dict:
    """Random tensors in open_clip's CLIP layout (both towers ``width`` wide): a tiny HPSv2 stand-in."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05):
        return torch.randn(shape, generator=g) * scale

    def ln(prefix):
        return {f"{prefix}.weight": 1 + r(width, scale=0.1), f"{prefix}.bias": r(width)}

    def blocks(prefix):
        out = {}
        for i in range(layers):
            p = f"{prefix}.resblocks.{i}"
            out.update(ln(f"{p}.ln_1"))
            out.update({f"{p}.attn.in_proj_weight": r(3 * width, width, scale=width ** -0.5),
                        f"{p}.attn.in_proj_bias": r(3 * width), f"{p}.attn.out_proj.weight": r(width, width),
                        f"{p}.attn.out_proj.bias": r(width)})
            out.update(ln(f"{p}.ln_2"))
            out.update({f"{p}.mlp.c_fc.weight": r(4 * width, width, scale=width ** -0.5), f"{p}.mlp.c_fc.bias": r(4 * width),
                        f"{p}.mlp.c_proj.weight": r(width, 4 * width), f"{p}.mlp.c_proj.bias": r(width)})
        return out

    grid = image_size // patch
    sd = {"positional_embedding": r(context, width), "text_projection": r(width, embed, scale=width ** -0.5),
          "logit_scale": torch.tensor(4.6052), "token_embedding.weight": r(vocab, width, scale=0.5),
          "visual.class_embedding": r(width, scale=0.5), "visual.positional_embedding": r(grid * grid + 1, width),
          "visual.proj": r(width, embed, scale=width ** -0.5), "visual.conv1.weight": r(width, 3, patch, patch, scale=0.1)}
    sd.update(ln("visual.ln_pre"))
    sd.update(blocks("visual.transformer"))
    sd.update(ln("visual.ln_post"))
    sd.update(blocks("transformer"))
    sd.update(ln("ln_final"))
    return sd


# ---------------------------------------------------------------------------------- ImageReward
_IR_VISION = {"cls_token": "embeddings.class_embedding", "pos_embed": "embeddings.position_embedding",
              "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
              "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
              "norm.weight": "post_layernorm.weight", "norm.bias": "post_layernorm.bias"}
_IR_BLOCK = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
             "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}

# ImageReward's published architecture: BLIP ViT-L/16 at 224 px and BLIP's BERT-base (med_config.json)
IMAGEREWARD_VISION = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                          image_size=224, patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu")
IMAGEREWARD_TEXT = dict(vocab_size=30524, hidden_size=768, encoder_hidden_size=1024, intermediate_size=3072,
                        num_attention_heads=12, num_hidden_layers=12, max_position_embeddings=512,
                        layer_norm_eps=1e-12, hidden_act="gelu")
IMAGEREWARD_MEAN, IMAGEREWARD_STD = 0.16717362830052426, 1.0333394966054072  # its own standardisation


def imagereward_split(sd: dict) -> tuple[dict, dict, dict]:
    """(BlipVisionModel, BlipTextModel, MLP head) state dicts of an ``ImageReward.pt`` state dict.

    The BLIP ViT's timm names map one to one (``blocks.i.attn.qkv`` keeps q, k, v fused, as
    ``BlipAttention.qkv`` does); BLIP's BERT already uses ``transformers``' BERT names."""
    sd = strip_prefix(sd)
    vision, text, mlp = {}, {}, {}
    for k, v in sd.items():
        if k.startswith("blip.visual_encoder."):
            rest = k[len("blip.visual_encoder."):]
            if rest in _IR_VISION:
                vision[_IR_VISION[rest]] = v
                continue
            m = re.match(r"blocks\.(\d+)\.(.+)\.(weight|bias)$", rest)
            if not m or m.group(2) not in _IR_BLOCK:
                raise ValueError(f"state_dict: unexpected ImageReward vision key {k!r}")
            vision[f"encoder.layers.{m.group(1)}.{_IR_BLOCK[m.group(2)]}.{m.group(3)}"] = v
        elif k.startswith("blip.text_encoder."):
            rest = k[len("blip.text_encoder."):]
            if not rest.endswith("position_ids"):
                text[rest] = v
        elif k.startswith("mlp.layers."):
            mlp[k[len("mlp.layers."):]] = v
        # anything else (e.g. the unused text_decoder of full BLIP checkpoints) is not part of the reward
    if not vision or not text or not mlp:
        raise ValueError("state_dict: not an ImageReward checkpoint (needs blip.visual_encoder.*, "
                         "blip.text_encoder.* and mlp.layers.*)")
    return vision, text, mlp


def reward_mlp(in_features: int) -> torch.nn.Sequential:
    """ImageReward's and the LAION aesthetic predictor's head: 5 linear layers (1024, 128, 64, 16, 1)
    with dropouts at indices 1, 3, 5 and no activations — the layout of their ``layers.*`` keys."""
    return torch.nn.Sequential(torch.nn.Linear(in_features, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128),
                               torch.nn.Dropout(0.2), torch.nn.Linear(128, 64), torch.nn.Dropout(0.1),
                               torch.nn.Linear(64, 16), torch.nn.Linear(16, 1))


def random_reward_mlp_state_dict(in_features: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in reward_mlp(in_features).state_dict().items()}


def random_imagereward_state_dict(seed: int = 0, vision: dict | None = None, text: dict | None = None) -> dict:
    """Random tensors in ImageReward's layout for the (tiny) configs ``vision``/``text``."""
    from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

    torch.manual_seed(seed)
    vm = BlipVisionModel(BlipVisionConfig(**vision))
    tm = BlipTextModel(BlipTextConfig(**text), add_pooling_layer=False)
    with torch.no_grad():  # BERT's 0.02-std init makes a tiny model nearly blind to the image: widen it
        for m in (vm, tm):
            for name, w in m.named_parameters():
                if w.ndim >= 2 and "embedding" not in name:
                    w.normal_(0.0, w[0].numel() ** -0.5)
    inv_v = {v: k for k, v in _IR_VISION.items()}
    inv_b = {v: k for k, v in _IR_BLOCK.items()}
    sd = {}
    for k, v in vm.state_dict().items():
        if k in inv_v:
            sd["blip.visual_encoder." + inv_v[k]] = v.clone()
            continue
        m = re.match(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", k)
        sd[f"blip.visual_encoder.blocks.{m.group(1)}.{inv_b[m.group(2)]}.{m.group(3)}"] = v.clone()
    for k, v in tm.state_dict().items():
        if not k.endswith("position_ids"):
            sd["blip.text_encoder." + k] = v.clone()
    for k, v in random_reward_mlp_state_dict(text["hidden_size"], seed + 1).items():
        sd["mlp.layers." + k] = v
    return sd
