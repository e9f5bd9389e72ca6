"""A tiny random Stable Diffusion pipeline (a few MB) built entirely in memory: the same diffusers
classes as SD 1.5 (UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTokenizer, DDIM), so every
code path of the SD rung runs on CPU in tests and in Chapter 10's fast profile.

UNet block_out_channels (32, 64) with cross-attention, a 2-level VAE (latent 16×16 ↔ image 32×32),
a 2-layer CLIP text encoder of width 32, and a byte-level CLIP tokenizer whose vocabulary (512 byte
tokens plus a few merges) is written here, so no file is read. Weights are random (seeded).
"""
from __future__ import annotations

import torch

TINY_PROMPT_LENGTH = 16  # tokens per prompt (SD 1.5: 77)


def _byte_chars() -> list[str]:
    """GPT-2/CLIP's reversible byte → printable unicode map (the 256 base symbols of byte-level BPE)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def tiny_tokenizer(max_length: int = TINY_PROMPT_LENGTH):
    """A CLIPTokenizer with a byte-level vocabulary (every byte, alone and word-final) and a few merges."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    chars = _byte_chars()
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges = []
    for word in ("cat", "dog", "owl"):  # a few merges so that BPE is exercised, not only bytes
        a, b = word[0], word[1]
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        merges.append((a + b, word[2] + "</w>"))
        vocab.setdefault(word + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def tiny_components(seed: int = 0) -> dict:
    """The pipeline's modules, randomly initialised with ``seed``."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
        norm_num_groups=32)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, sample_size=32, norm_num_groups=32)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tok),
        max_position_embeddings=TINY_PROMPT_LENGTH, projection_dim=32))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                              timestep_spacing="trailing")
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tok, "scheduler": scheduler}


def tiny_pipeline(seed: int = 0):
    """A diffusers ``StableDiffusionPipeline`` with tiny random modules (fp32, CPU, eval mode)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**tiny_components(seed), safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
