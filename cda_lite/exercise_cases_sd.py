"""Cases of the Stable Diffusion rung's "implement a piece" checks (Chapters 10 and 11).

Kept apart from :mod:`cda_lite.exercise_cases` (same format: ``BUILDERS`` maps a check name to its
description, signature, return value and case builder). The references never call the library
function the exercise re-implements: the HPSv2 score is rebuilt from the CLIP towers of a tiny random
``transformers.CLIPModel`` with a per-image loop, and the CFG mixture from a stand-in UNet's outputs
written out by hand.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from cda_lite.exercise_compare import call, close

__all__ = ["BUILDERS"]


# --------------------------------------------------------------------------- ch10
def _tiny_clip(seed: int, image_size: int = 16):
    from transformers import CLIPConfig, CLIPModel
    from transformers.utils import logging as tl

    verbosity = tl.get_verbosity()
    tl.set_verbosity_error()
    try:
        cfg = CLIPConfig(
            text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                             vocab_size=64, max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
                             pad_token_id=2),
            vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                               image_size=image_size, patch_size=8),
            projection_dim=8)
        torch.manual_seed(seed)
        return CLIPModel(cfg).eval()
    finally:
        tl.set_verbosity(verbosity)


def _hps_reference(model, pixel_values, input_ids):
    """cos(image embedding_i, text embedding_i), one image at a time, no logit scale (HPSv2)."""
    out = []
    with torch.no_grad():
        for i in range(len(pixel_values)):
            v = model.vision_model(pixel_values=pixel_values[i:i + 1]).pooler_output[0]
            a = torch.mv(model.visual_projection.weight, v)
            w = model.text_model(input_ids=input_ids[i:i + 1]).pooler_output[0]
            b = torch.mv(model.text_projection.weight, w)
            out.append(float(torch.dot(a, b) / (a.norm() * b.norm())))
    return np.array(out)


def hps_score_cases():
    def make(seed, n, length):
        def run(fn):
            model = _tiny_clip(seed)
            g = torch.Generator().manual_seed(100 + seed)
            px = torch.randn(n, 3, 16, 16, generator=g)
            ids = torch.randint(3, 64, (n, length), generator=g)
            ids[:, 0], ids[:, -1] = 0, 1  # bos ... eos (the text tower pools at the eos token)
            ref = _hps_reference(model, px, ids)
            with torch.no_grad():
                got = call(fn, model, px, ids)
            if isinstance(got, torch.Tensor):
                got = got.detach().cpu().numpy()
            close(got, ref, "per-image HPS (cosine, no logit scale)", 1e-4, 1e-5)
        return run

    return [(f"tiny random CLIP (seed {s}), {n} images, {L} tokens", make(s, n, L))
            for s, n, L in [(0, 2, 6), (1, 3, 8), (2, 1, 5)]]


# --------------------------------------------------------------------------- ch11
class _StandInUNet(torch.nn.Module):
    """A UNet-shaped callable: ``unet(x, t, encoder_hidden_states=c).sample``, nonlinear in (x, t, c)."""

    def __init__(self, seed: int, channels: int, dim: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = torch.randn(channels, dim, generator=g)

    def forward(self, x, t, encoder_hidden_states):
        c = encoder_hidden_states.mean(1) @ self.A.T  # (n, channels)
        t = float(torch.as_tensor(t).flatten()[0])
        return SimpleNamespace(sample=torch.tanh(x * (1 + c[:, :, None, None]) + 1e-3 * t) + c[:, :, None, None] ** 2)


def cfg_mixture_cases():
    def make(seed, g_scale, lam, n):
        def run(fn):
            unet = _StandInUNet(seed, 4, 12)
            gen = torch.Generator().manual_seed(200 + seed)
            x = torch.randn(n, 4, 8, 8, generator=gen)
            unc, c1, c2 = (torch.randn(1, 5, 12, generator=gen) for _ in range(3))
            t = 300
            ref = torch.empty_like(x)
            with torch.no_grad():
                for i in range(n):  # one sample at a time, the formula term by term
                    eu, e1, e2 = (unet(x[i:i + 1], t, encoder_hidden_states=c).sample[0] for c in (unc, c1, c2))
                    ref[i] = (1 - g_scale) * eu + g_scale * lam * e1 + g_scale * (1 - lam) * e2
                got = call(fn, unet, x, t, unc, c1, c2, g_scale, lam)
            close(got.detach() if isinstance(got, torch.Tensor) else got, ref.numpy(),
                  "ε_λ = ε_u + g[λε_c1 + (1−λ)ε_c2 − ε_u]", 1e-4,
                  1e-5 * float(ref.abs().max()))  # float32 round-off of the cancelling terms
        return run

    return [(f"stand-in UNet (seed {s}), g = {g}, λ = {lam}, {n} latents", make(s, g, lam, n))
            for s, g, lam, n in [(0, 7.5, 0.3, 2), (1, 3.0, 0.8, 3), (2, 5.0, 0.5, 1), (3, 1.0, 0.0, 2)]]


BUILDERS = {
    "ch10.hps_score": (
        "HPSv2 from its definition: cosine of the projected CLIP image and text embeddings, no logit scale",
        "fn(model (transformers CLIPModel), pixel_values (n, 3, H, W), input_ids (n, L))", "scores (n,)",
        hps_score_cases),
    "ch11.cfg_mixture": (
        "classifier-free guidance towards a mixed condition, one UNet call per condition",
        "fn(unet, x (n, 4, h, w), t, unc, c1, c2 (1, L, D) embeddings, guidance, lam)", "ε_λ like x",
        cfg_mixture_cases),
}
