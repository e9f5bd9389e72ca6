"""The SD rung on a second device, without a GPU: training, evaluation, composition (prompts and LoRA
experts), DAS, the three blends and the concept metrics run with the tiny pipeline on the pretend
device of :mod:`fake_device`, where any operation mixing a device tensor with a CPU tensor fails as it
would on CUDA (a CPU timestep, CPU step noise, CPU tokens, a CPU generator for device noise). Every
weight-based reward that scores must have its networks on that device (the pipeline's)."""
from dataclasses import replace

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from fake_device import DEV, DeviceMixError, FakeDevice, on_device  # noqa: E402

from cda_lite.sampling import sample  # noqa: E402
from cda_lite.sd import compose as C  # noqa: E402
from cda_lite.sd import concepts as K  # noqa: E402
from cda_lite.sd import inference as I  # noqa: E402
from cda_lite.sd import presets as P  # noqa: E402
from cda_lite.sd import rewards as R  # noqa: E402
from cda_lite.sd import sampling as S  # noqa: E402
from cda_lite.sd import tiny_rewards as TR  # noqa: E402
from cda_lite.sd import train as T  # noqa: E402
from cda_lite.sd.tiny import tiny_pipeline  # noqa: E402

HW = dict(height=16, width=16)


@pytest.fixture
def device_pipe(monkeypatch):
    """The tiny pipeline on the pretend device; every weight-based reward must score on that device."""
    scored = []
    call = R.LazyScorer.__call__

    def checked(self, images, prompts=None):
        out = call(self, images, prompts)
        assert self.model_device == DEV, f"{self.name} reward scored on {self.model_device}, not the pipeline's device"
        scored.append(self.name)
        return out

    monkeypatch.setattr(R.LazyScorer, "__call__", checked)
    # gradient checkpointing recomputes in the backward pass outside the mode; it only saves memory
    monkeypatch.setattr(I, "_checkpoint", lambda fn, *args, use_reentrant=False: fn(*args))
    torch.manual_seed(0)
    pipe = tiny_pipeline()
    with FakeDevice() as fd:
        fd.place(pipe.unet, pipe.vae, pipe.text_encoder)
        yield pipe, scored


def test_fake_device_catches_mixing():
    with FakeDevice():
        a = torch.ones(3).to(DEV)
        assert on_device(a) and a.device == DEV and on_device(a * 2) and not on_device(a.cpu())
        with pytest.raises(DeviceMixError):
            a + torch.ones(3)
        with pytest.raises(DeviceMixError):
            torch.randn(3, generator=torch.Generator(), device=DEV)
        assert on_device(a + torch.tensor(1.0))  # a 0-d CPU scalar is allowed, as on CUDA


def test_training_and_evaluation_on_the_device(device_pipe):
    pipe, scored = device_pipe
    p = replace(P.get_preset("fig3", tiny=True), steps=1, images_per_step=2, micro_batch=2, sample_steps=3,
                grad_steps=2, random_truncation=False, eval_images=2, **HW,
                constraints=[P.ConstraintSpec("tiny_clip", ">=", 0.0), P.ConstraintSpec("tiny_aesthetic", ">=", 0.0),
                             P.ConstraintSpec("saturation", "<=", 0.0)])
    trainer = T.build(pipe, p)[0]
    for _ in trainer.run():
        pass
    assert trainer.step == 1 and all(on_device(q) for q in trainer.params)
    out = T.evaluate(pipe, p)
    assert set(out) == {"tiny_clip", "tiny_aesthetic", "saturation"} and "aesthetic" in scored


@pytest.mark.parametrize("name", ["table4", "fig5"])
def test_composition_on_the_device(device_pipe, name):
    pipe, _ = device_pipe
    p = replace(P.get_preset(name, tiny=True), dual_steps=1, batch=2, kl_timesteps=1, sample_steps=2, **HW)
    experts = C.make_experts(pipe, p)
    res = C.run(pipe, experts, p)
    assert on_device(res.extra["images"]) and res.lam_history.shape == (2, len(res.extra["names"]))
    # Chapter 11 samples the product and the combined prompt from x_T on the device (the core sampler)
    x_T = S.initial_latents(pipe, 2, 16, 16, torch.Generator().manual_seed(0), device=DEV)
    experts.set_prompts(p.prompts[:2])
    combined = S.SDEps(pipe.unet, p.guidance).set_prompts(pipe, ["a cat and a dog"] * 2)
    for model in (C.ProductEps(experts, res.lam), combined):
        assert on_device(sample(model, S.schedule_of(pipe), x_T.shape, steps=2, eta=1.0, x_T=x_T))


def test_das_blends_and_concepts_on_the_device(device_pipe):
    pipe, scored = device_pipe
    kw = dict(steps=3, chunk=2, **HW)
    das = I.sd_das(pipe, TR.tiny_pickscore(), ["a cat"], particles=2, gamma=None, **kw)
    assert das.images.shape == (2, 3, 16, 16) and "pickscore" in scored
    names = I.L.attach_adapters(pipe, ["a", "b"], tiny=True)
    I.sd_db_mpa(pipe, names, [0.5, 0.5], ["a cat"], **kw)
    I.sd_db_kla(pipe, names[0], 0.5, ["a cat"], **kw)
    I.sd_blend_corrected(pipe, names, [0.5, 0.5], ["a cat"], per_prompt=2, **kw)
    images = torch.rand(2, 3, 16, 16).to(DEV)
    s = K.prompt_scores(TR.tiny_clip_score(), images, ["a cat", "a dog"])
    assert s.per_prompt.shape == (2, 2) and "clip" in scored


def test_precision_policy():
    import contextlib

    from cda_lite.sd.device import precision, randn
    assert isinstance(precision("cpu"), contextlib.nullcontext) and isinstance(precision(None), contextlib.nullcontext)
    assert isinstance(precision("cuda", mixed=False), contextlib.nullcontext)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(randn((2, 3), g1), torch.randn((2, 3), generator=g2))  # the CPU stream, unchanged
