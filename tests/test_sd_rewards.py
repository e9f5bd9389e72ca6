"""Reward scorers of the SD rung and the concept-composition metrics, without any download.

The checkpoint converters are checked against forward passes written here from the original
layouts' definitions (open_clip's CLIP, timm's/BLIP's ViT) — not through the converters. (Once, outside
CI, they were also compared with the real open_clip 3.3.0 and timm 1.0.29 modules: max abs
difference 5e-7.) The tiny stand-ins go through the real loaders with tiny checkpoints in the original
file layouts."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from cda_lite.sd import concepts as K  # noqa: E402
from cda_lite.sd import convert as C  # noqa: E402
from cda_lite.sd import registry as REG  # noqa: E402
from cda_lite.sd import rewards as R  # noqa: E402
from cda_lite.sd import tiny_rewards as TR  # noqa: E402
from cda_lite.sd.load import MissingWeightsError  # noqa: E402


# ------------------------------------------------------------------ forward passes from the layouts
def _ln(x, sd, p, eps):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)


def _attention(x, w_qkv, b_qkv, w_o, b_o, heads, mask=None):
    n, L, D = x.shape
    q, k, v = (x @ w_qkv.T + b_qkv).split(D, -1)
    q, k, v = (t.reshape(n, L, heads, D // heads).transpose(1, 2) for t in (q, k, v))
    a = q @ k.transpose(-1, -2) / (D // heads) ** 0.5
    if mask is not None:
        a = a + mask
    return (a.softmax(-1) @ v).transpose(1, 2).reshape(n, L, D) @ w_o.T + b_o


def _block(x, sd, p, n, heads, eps, mask=None):
    """Pre-LN transformer block; ``n`` names (ln1, qkv weight, qkv bias, out, ln2, fc1, fc2)."""
    h = _ln(x, sd, p + n[0], eps)
    x = x + _attention(h, sd[p + n[1]], sd[p + n[2]], sd[p + n[3] + ".weight"], sd[p + n[3] + ".bias"], heads, mask)
    h = F.gelu(_ln(x, sd, p + n[4], eps) @ sd[p + n[5] + ".weight"].T + sd[p + n[5] + ".bias"])
    return x + h @ sd[p + n[6] + ".weight"].T + sd[p + n[6] + ".bias"]


OC = ("ln_1", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
TIMM = ("norm1", "attn.qkv.weight", "attn.qkv.bias", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")


def openclip_image(sd, x, heads, patch):
    """open_clip VisionTransformer: patchify, [class] + positions, ln_pre, blocks, ln_post([class]) @ proj."""
    z = F.conv2d(x, sd["visual.conv1.weight"], stride=patch).flatten(2).transpose(1, 2)
    z = torch.cat([sd["visual.class_embedding"].expand(z.shape[0], 1, -1), z], 1) + sd["visual.positional_embedding"]
    z = _ln(z, sd, "visual.ln_pre", 1e-5)
    for i in range(2):
        z = _block(z, sd, f"visual.transformer.resblocks.{i}.", OC, heads, 1e-5)
    return _ln(z[:, 0], sd, "visual.ln_post", 1e-5) @ sd["visual.proj"]


def openclip_text(sd, ids, heads):
    """open_clip text tower: causal blocks, ln_final, the end-of-text token (largest id) @ text_projection."""
    z = sd["token_embedding.weight"][ids] + sd["positional_embedding"]
    L = ids.shape[1]
    mask = torch.full((L, L), float("-inf")).triu(1)
    for i in range(2):
        z = _block(z, sd, f"transformer.resblocks.{i}.", OC, heads, 1e-5, mask)
    z = _ln(z, sd, "ln_final", 1e-5)
    return z[torch.arange(len(ids)), ids.argmax(-1)] @ sd["text_projection"]


def test_openclip_checkpoint_reads_into_transformers_clip():
    sd = C.random_openclip_state_dict(seed=0, vocab=600, context=16)
    model = C.load_openclip_as_hf(sd, 8, 8)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ids = torch.randint(1, 590, (3, 16), generator=torch.Generator().manual_seed(2))
    ids[:, 0] = 598
    for row, end in enumerate((5, 9, 15)):  # end-of-text (599, the largest id), then padding 0
        ids[row, end] = 599
        ids[row, end + 1:] = 0
    with torch.no_grad():
        img = R._features(model.get_image_features(pixel_values=x))
        txt = R._features(model.get_text_features(input_ids=ids))
        ref_img, ref_txt = openclip_image(sd, x, heads=4, patch=8), openclip_text(sd, ids, heads=4)
    assert torch.allclose(img, ref_img, atol=1e-5) and ref_img.abs().mean() > 0.1
    assert torch.allclose(txt, ref_txt, atol=1e-5) and ref_txt.abs().mean() > 0.1
    with pytest.raises(ValueError, match="unexpected open_clip key"):
        C.openclip_to_hf({**sd, "visual.head.weight": torch.zeros(1)})


def test_imagereward_checkpoint_reads_into_blip():
    vision, text = TR.TINY_BLIP_VISION, dict(vocab_size=50, hidden_size=32, encoder_hidden_size=32,
                                             intermediate_size=64, num_attention_heads=4, num_hidden_layers=1)
    sd = C.random_imagereward_state_dict(3, vision, text)
    assert any(k.startswith("blip.visual_encoder.blocks.1.attn.qkv") for k in sd)
    v, t, mlp = C.imagereward_split(sd)
    m = R.ImageRewardModel(vision, text).eval()
    m.visual.load_state_dict(v)
    m.mlp.load_state_dict(mlp)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    raw = {k[len("blip.visual_encoder."):]: w for k, w in sd.items() if k.startswith("blip.visual_encoder.")}
    # timm/BLIP ViT: patchify (+bias), [class] + positions, blocks, final norm on every token
    z = F.conv2d(x, raw["patch_embed.proj.weight"], raw["patch_embed.proj.bias"], stride=8).flatten(2).transpose(1, 2)
    z = torch.cat([raw["cls_token"].expand(2, 1, -1), z], 1) + raw["pos_embed"]
    for i in range(2):
        z = _block(z, raw, f"blocks.{i}.", TIMM, 4, 1e-6)
    z = _ln(z, raw, "norm", 1e-6)
    with torch.no_grad():
        assert torch.allclose(m.visual(pixel_values=x).last_hidden_state, z, atol=1e-5)
        # the MLP head has no activations: it is one affine map
        f = torch.randn(4, 32)
        W, b = torch.eye(32), torch.zeros(32)
        for i in (0, 2, 4, 6, 7):
            W, b = mlp[f"{i}.weight"] @ W, mlp[f"{i}.weight"] @ b + mlp[f"{i}.bias"]
        assert torch.allclose(m.mlp(f), f @ W.T + b, atol=1e-5)
    with pytest.raises(ValueError, match="not an ImageReward"):
        C.imagereward_split({"mlp.layers.0.weight": torch.zeros(1)})


TINY = ["tiny_clip_score", "tiny_pickscore", "tiny_aesthetic", "tiny_hps", "tiny_imagereward", "tiny_mps"]


@pytest.fixture(scope="module")
def scorers():
    return {name: REG.get_reward(name) for name in TINY}


@pytest.mark.parametrize("name", TINY)
def test_tiny_scorers_interface(scorers, name):
    """Same interface as the real rewards: (images in [0,1], prompts) → (n,), differentiable, per image
    (a batch scores as its images one by one), prompt-aware where the reward is."""
    r = scorers[name]
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    prompts = ["a cat", "a dog", "an owl"]
    v = r(x, prompts)
    assert v.shape == (3,) and torch.isfinite(v).all()
    (g,) = torch.autograd.grad(v.sum(), x)
    assert g.abs().sum() > 0
    with torch.no_grad():
        one = torch.cat([r(x[i:i + 1], prompts[i:i + 1]) for i in range(3)])
        assert torch.allclose(v, one, rtol=1e-4, atol=1e-5)
        if r.needs_prompts:
            other = r(x, ["a dog", "an owl", "a cat"])
            assert (other - v).abs().max() > 1e-6
            with pytest.raises(ValueError, match="one prompt per image"):
                r(x, prompts[:2])


def test_tiny_clip_score_is_100_cos_of_the_transformers_towers(scorers):
    """The value, not just the shape: 100·cos(image, text) with the towers of the same seeded tiny CLIPModel
    called through transformers directly (CLIP's published pixel mean/std, the 32-px stand-in needs no
    resize, the tokenizer's own padding)."""
    r = scorers["tiny_clip_score"]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = ["a cat", "a dog on a sofa"]
    m, tok = TR.tiny_clip_model(0)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        img = m.get_image_features(pixel_values=(x - mean) / std)
        txt = m.get_text_features(**tok(prompts, padding=True, return_tensors="pt"))
        img, txt = (f if torch.is_tensor(f) else f.pooler_output for f in (img, txt))
        torch.testing.assert_close(r(x, prompts), 100 * F.cosine_similarity(img, txt), rtol=1e-5, atol=1e-4)


def test_imagereward_standardisation(scorers):
    r = scorers["tiny_imagereward"]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tok = r._tokens(["a cat", "a dog"], 35)
        raw = r._model(R.clip_preprocess(x, 32), tok.input_ids, tok.attention_mask)  # mean 0, std 1
        # ImageReward's own standardisation constants (ImageReward/ImageReward.py in THUDM/ImageReward)
        assert (C.IMAGEREWARD_MEAN, C.IMAGEREWARD_STD) == (0.16717362830052426, 1.0333394966054072)
        assert torch.allclose(r(x, ["a cat", "a dog"]), (raw - 0.16717362830052426) / 1.0333394966054072, atol=1e-6)
    assert tok.input_ids.shape[1] == 35  # ImageReward pads prompts to 35 tokens


@pytest.mark.parametrize("name,env", [("hps", "CDA_HPS_PATH"), ("imagereward", "CDA_IMAGEREWARD_PATH"),
                                      ("pickscore", "CDA_PICKSCORE_PATH"), ("clip", "CDA_CLIP_PATH"),
                                      ("mps", "CDA_MPS_PATH"), ("aesthetic", "CDA_AESTHETIC_PATH")])
def test_missing_weights_name_the_env_var(name, env, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("CDA_HPS_PATH", "CDA_IMAGEREWARD_PATH", "CDA_PICKSCORE_PATH", "CDA_CLIP_PATH", "CDA_MPS_PATH",
                "CDA_AESTHETIC_PATH"):
        monkeypatch.delenv(var, raising=False)
    r = REG.get_reward(name)
    with pytest.raises(MissingWeightsError, match=env):
        r(torch.rand(1, 3, 32, 32), ["a cat"])
    with pytest.raises(MissingWeightsError, match="does not exist|not a file|not found"):
        REG.get_reward(name, path=str(tmp_path / "nothing.pt"))(torch.rand(1, 3, 32, 32), ["a cat"])


def test_table7_normalisers():
    table = {"aesthetic": (5.1488, 0.439), "hps": (0.2669, 0.0057), "mps": (5.2365, 3.5449),
             "pickscore": (21.1547, 0.6551), "local_contrast": (0.0086, 0.0032), "saturation": (0.106, 0.0706)}
    for name, (m, s) in table.items():
        n = REG.normalizer(name)
        assert (n.mean, n.std) == (m, s)
        assert n(m + 0.5 * s) == pytest.approx(0.5)
    assert REG.normalizer("imagereward") is None and REG.normalizer("tiny_hps") is None
    assert set(TINY) <= set(REG.known())


class _Fixed:
    """A scorer with known values: s(image i, prompt) = table[prompt][i]."""

    def __init__(self, table):
        self.table = table

    def __call__(self, images, prompts):
        assert len(set(prompts)) == 1
        return torch.as_tensor(self.table[prompts[0]][:len(images)], dtype=torch.float64)


def test_concept_scores_min_over_prompts():
    table = {"a cat": [0.9, 0.2, 0.5], "a dog": [0.1, 0.8, 0.6]}
    s = K.prompt_scores(_Fixed(table), torch.zeros(3, 3, 8, 8), ["a cat", "a dog"])
    assert np.allclose(s.per_prompt, [[0.9, 0.1], [0.2, 0.8], [0.5, 0.6]])
    assert np.allclose(s.min_per_image, [0.1, 0.2, 0.5])
    assert s.mean_min == pytest.approx(0.8 / 3)
    assert s.min_of_means == pytest.approx(1.5 / 3) and s.weakest_prompt == "a dog"
    assert s.min_of_means >= s.mean_min
    with pytest.raises(ValueError, match="prompts"):
        K.prompt_scores(_Fixed(table), torch.zeros(3, 3, 8, 8), "a cat")


def test_concept_metrics_with_tiny_clip_and_blip2():
    clip, blip = TR.tiny_clip_score(), TR.tiny_blip2_itm()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = ["a cat", "a dog"]
    m = K.concept_metrics(x, prompts, {"clip": clip, "blip": blip}, batch=3)
    with torch.no_grad():
        for j, p in enumerate(prompts):
            assert np.allclose(m["clip"].per_prompt[:, j], clip(x, [p] * 4).numpy(), atol=1e-5)
    itm = m["blip"].per_prompt
    assert itm.shape == (4, 2) and np.all((itm > 0) & (itm < 1))  # a probability of "match"
    itc = K.prompt_scores(TR.tiny_blip2_itm(mode="itc"), x, prompts).per_prompt
    assert np.all(np.abs(itc) <= 1 + 1e-6) and not np.allclose(itc, itm)  # a cosine
    with pytest.raises(ValueError, match="mode"):
        K.Blip2ITM(mode="cosine")
