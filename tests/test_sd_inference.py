"""Inference-time rivals on the tiny SD pipeline: the flat/chunked adapters agree with the plain UNet
call, DAS over latents tilts towards its reward and returns resampled particles, and the blends over
LoRA adapters satisfy their identities (DB-KLA at λ = 1 is the adapter alone; DB-MPA at w = λ is
Algorithm 3's product sampler; the corrected blend at a vertex has nothing to correct)."""
import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from cda_lite.sd import compose as Cmp  # noqa: E402
from cda_lite.sd import inference as I  # noqa: E402
from cda_lite.sd import lora as L  # noqa: E402
from cda_lite.sd import presets as P  # noqa: E402
from cda_lite.sd import sampling as S  # noqa: E402
from cda_lite.sd.registry import get_reward  # noqa: E402
from cda_lite.sd.tiny import tiny_pipeline  # noqa: E402

HW = dict(height=16, width=16)


@pytest.fixture(scope="module")
def pipe():
    p = tiny_pipeline()
    for i, name in enumerate(("a", "b")):
        L.add_lora(p.unet, 4, name=name, init="random", seed=10 + i)
    p.unet.requires_grad_(False)
    return p


def test_flat_eps_and_latent_reward_agree_with_the_unet(pipe):
    rows = ["a cat", "a dog", "an owl"]
    shape = I.latent_shape(pipe, 16, 16)
    x = torch.randn(3, int(np.prod(shape)), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = S.SDEps(pipe.unet, 5.0).set_prompts(pipe, rows)
    with torch.no_grad():
        L.set_active(pipe.unet, "a")
        want = ref(x.float().view(3, *shape), 499).reshape(3, -1)
        for chunk in (None, 2):
            got = I.FlatEps(pipe, rows, 5.0, shape, adapter="a", chunk=chunk)(x, 499)
            assert got.dtype == torch.float64 and torch.allclose(got.float(), want, atol=1e-5)
        with S.adapters_disabled(pipe.unet):
            base = ref(x.float().view(3, *shape), 499).reshape(3, -1)
        assert torch.allclose(I.FlatEps(pipe, rows, 5.0, shape, adapter="off")(x, 499).float(), base, atol=1e-5)
        assert (base - want).abs().max() > 1e-4
    # the look-ahead gradient through chunked + checkpointed calls equals the unchunked one
    r = get_reward("brightness")
    grads = []
    for chunk in (None, 2):
        xg = x.clone().requires_grad_(True)
        eps = I.FlatEps(pipe, rows, 5.0, shape, adapter="a", chunk=chunk)(xg, 499)
        val = I.LatentReward(pipe, r, rows, shape, chunk)(xg - 0.5 * eps).sum()
        grads.append(torch.autograd.grad(val, xg)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and grads[0].abs().max() > 0


def test_das_over_latents_tilts_towards_the_reward():
    """Colourfulness of the tiny VAE's images, α small: DAS's resampled particles score higher than the
    pretrained chain's with the same seed by more than the particles' spread (α = 0.002: about 3 σ;
    a sampler without the tilt, e.g. with the reward gradient or weights dropped, stays within 1 σ),
    the ESS log is per prompt, and the output has the requested size."""
    pipe = tiny_pipeline()
    r = get_reward("colourfulness")
    kw = dict(particles=6, steps=6, gamma=None, **HW, chunk=4, seed=3)
    das = I.sd_das(pipe, r, ["a cat", "a dog"], alpha=0.002, **kw)
    base = I.sd_das(pipe, r, ["a cat", "a dog"], alpha=1e6, **kw)  # α → ∞: no tilt, the pretrained chain
    assert das.images.shape == (12, 3, 16, 16) and das.prompts[:6] == ["a cat"] * 6
    assert das.smc.ess.shape == (7, 2) and das.smc.resampled[-1].all()
    assert np.all(base.smc.ess > 5.99)  # flat weights without a tilt
    assert das.smc.ess.min() < 5.0  # the tilt moved the weights
    r_das, r_base = r(das.images), r(base.images)
    assert r_das.mean() > r_base.mean() + 1.5 * r_base.std(), (r_das.mean(), r_base.mean(), r_base.std())


def test_blends_over_adapters(pipe):
    kw = dict(per_prompt=2, steps=4, **HW, seed=5)
    kla = I.sd_db_kla(pipe, "a", 1.0, ["a cat"], **kw)
    mpa_vertex = I.sd_db_mpa(pipe, ["a", "b"], [1.0, 0.0], ["a cat"], **kw)
    assert torch.allclose(kla.latents, mpa_vertex.latents, atol=1e-6)
    half = I.sd_db_mpa(pipe, ["a", "b"], [0.5, 0.5], ["a cat"], **kw)
    assert (half.latents - mpa_vertex.latents).abs().max() > 1e-3
    # DB-MPA at w = λ is the sampler of Algorithm 3's product of the same adapters
    experts = Cmp.LoraExperts(pipe, ["a", "b"], 5.0)
    experts.set_prompts(["a cat", "a cat"])
    experts.align_final_step(4)  # as sd_db_mpa: the adapters' last (σ = 0) step is the base model's
    shape = I.latent_shape(pipe, 16, 16)
    from cda_lite.sampling import sample
    prod = sample(Cmp.ProductEps(experts, [0.5, 0.5]), S.schedule_of(pipe), (2, *shape), steps=4, eta=1.0, seed=5,
                  dtype=torch.float64)
    assert torch.allclose(prod.reshape(2, -1), half.latents, atol=1e-4)
    with pytest.raises(ValueError, match="weights"):
        I.sd_db_mpa(pipe, ["a", "b"], [0.7, 0.7], ["a cat"], **kw)
    # corrected blend: at a vertex every log Z_t is 0, so no particle is ever reweighted
    vertex = I.sd_blend_corrected(pipe, ["a", "b"], [1.0, 0.0], ["a cat", "a dog"], per_prompt=3, steps=4, **HW)
    assert np.allclose(vertex.smc.ess, 3.0) and vertex.images.shape == (6, 3, 16, 16)
    mixed = I.sd_blend_corrected(pipe, ["a", "b"], [0.5, 0.5], ["a cat", "a dog"], per_prompt=3, steps=4, **HW)
    assert mixed.smc.ess.min() < 3.0 - 1e-6


def test_inference_presets_and_cli(tmp_path):
    das = P.get_preset("das")
    assert (das.particles, das.steps, das.gamma, das.eta) == (4, 100, 0.008, 1.0)
    blend = P.get_preset("blend")
    assert (blend.steps, blend.eta, blend.method) == (50, 1.0, "db_mpa")
    with pytest.raises(ValueError, match="one weight per adapter"):
        from dataclasses import replace
        P.derived(replace(blend, weights=[1.0]))
    from cda_lite.sd.__main__ import main
    assert main(["sample", "--preset", "blend", "--tiny", "--steps", "2", "--out", str(tmp_path / "b")]) == 0
    import json

    tiny = P.get_preset("blend", tiny=True)
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["preset"] == "blend" and summary["method"] == "db_mpa"
    images = torch.load(tmp_path / "b" / "images.pt")
    # one image per prompt and particle, decoded to [0, 1] at the preset's size, not all alike
    assert images.shape == (len(tiny.prompts) * tiny.particles, 3, tiny.height, tiny.width)
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 1e-3
    assert summary["prompts"] == [p for p in tiny.prompts for _ in range(tiny.particles)]  # one per image
