"""The Stable Diffusion rung on the tiny random pipeline (CPU): sampler agreement with diffusers,
constrained LoRA training (3 constraints, dual step, resume), LoRA round trip through diffusers,
composition (sampling and KL use one ε_λ), reward improvement, presets, missing weights."""
import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from cda_lite.sd import compose as C  # noqa: E402
from cda_lite.sd import lora as L  # noqa: E402
from cda_lite.sd import presets as P  # noqa: E402
from cda_lite.sd import sampling as S  # noqa: E402
from cda_lite.sd import train as T  # noqa: E402
from cda_lite.sd.registry import get_reward  # noqa: E402
from cda_lite.sd.tiny import tiny_pipeline  # noqa: E402


def small(p, **kw):
    """The tiny fig3 preset at 16 px, 2 images per step, 4 DDIM steps."""
    base = dict(images_per_step=2, micro_batch=2, height=16, width=16, sample_steps=4, grad_steps=2,
                random_truncation=False, checkpoint_every=1)
    base.update(kw)
    return replace(p, **base)


def test_sdeps_matches_diffusers_ddim():
    pipe = tiny_pipeline()
    prompts = ["a cat", "a dog"]
    eps = S.SDEps(pipe.unet, 5.0).set_prompts(pipe, prompts)
    x_T = S.initial_latents(pipe, 2, 32, 32, torch.Generator().manual_seed(0))
    from cda_lite.sampling import sample
    ours = sample(eps, S.schedule_of(pipe), x_T.shape, steps=4, eta=0.0, x_T=x_T)
    # diffusers' DDIM ends at ᾱ = 1 only with set_alpha_to_one=True (our chain's last step)
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, set_alpha_to_one=True)
    theirs = pipe(prompts, num_inference_steps=4, height=32, width=32, guidance_scale=5.0, latents=x_T.clone(),
                  eta=0.0, output_type="latent").images
    assert list(pipe.scheduler.timesteps) == list(S.make_chain(pipe, 4).ts)  # trailing: 999, 749, 499, 249
    assert torch.allclose(ours, theirs, atol=1e-3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """2 optimiser steps of the tiny fig3 preset (3 constraints, νPI/ascent dual, 2 micro-batches each)."""
    out = str(tmp_path_factory.mktemp("fig3"))
    p = small(P.get_preset("fig3", tiny=True), steps=2, images_per_step=4)
    pipe = tiny_pipeline()
    summary = T.run(pipe, p, out, progress=False)
    return pipe, p, out, summary


def test_training_three_constraints(trained):
    pipe, p, out, s = trained
    tr = s["trainer"]
    assert len(tr.constraints) == 3 and tr.step == 2 and tr.config.grad_accum == 2
    for f in ("checkpoint.pt", "log.csv", "log.jsonl", "summary.json", "lora/" + L.WEIGHT_NAME):
        assert os.path.exists(os.path.join(out, f)), f
    assert all(np.isfinite(h["loss"]) and h["kl"] >= 0 for h in tr.log)
    assert tr.log[1]["kl"] > 0  # the adapter moved, so its chain differs from the base's


def test_dual_update_with_three_constraints(trained):
    _, p, _, s = trained
    tr = s["trainer"]
    lam = np.full(3, p.lam_init)
    for k, h in enumerate(tr.log):  # projected ascent (κ_p = 0), warmed up: λ ← [λ − κ_i ρ_k s_i (E r_i − b_i)]₊
        slack = np.array([c.slack(e) for c, e in zip(tr.constraints, h["expected"])])
        ramp = min(1.0, (k + 1) / p.dual_warmup) if p.dual_warmup else 1.0
        lam = np.maximum(lam - p.dual_lr * ramp * slack, 0)
        assert np.allclose(h["lam"], lam)
    assert len(set(np.round(lam, 6))) == 3  # three different multipliers


def test_lora_roundtrip_through_diffusers(trained):
    pipe, p, out, _ = trained
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    eps = S.SDEps(pipe.unet, 5.0).set_prompts(pipe, ["a cat", "a dog"])
    with torch.no_grad():
        e_trained, e_base = eps(x, 499), S.AdapterOff(eps)(x, 499)
    fresh = tiny_pipeline()
    eps_f = S.SDEps(fresh.unet, 5.0).set_prompts(fresh, ["a cat", "a dog"])
    with torch.no_grad():
        e_fresh = eps_f(x, 499)
        fresh.load_lora_weights(os.path.join(out, "lora"))
        e_loaded = eps_f(x, 499)
    assert torch.allclose(e_fresh, e_base, atol=1e-6)
    assert (e_loaded - e_fresh).abs().max() > 1e-4  # the adapter changes the UNet's output ...
    assert torch.allclose(e_loaded, e_trained, atol=1e-5)  # ... exactly as the trained one does


def test_resume_equals_uninterrupted(tmp_path):
    p = small(P.get_preset("fig3", tiny=True), steps=2, random_truncation=True, grad_steps=3)
    a = T.run(tiny_pipeline(), p, str(tmp_path / "a"), progress=False)["trainer"]
    T.run(tiny_pipeline(), p, str(tmp_path / "b"), progress=False, max_steps=1)
    b = T.run(tiny_pipeline(), p, str(tmp_path / "b"), progress=False)["trainer"]
    assert b.step == 2
    for pa, pb in zip(a.params, b.params):
        assert torch.equal(pa, pb)
    assert np.array_equal(a.dual.lam, b.dual.lam)
    assert [h["loss"] for h in a.log] == [h["loss"] for h in b.log]


def test_reward_moves_in_the_constrained_direction(tmp_path):
    """Brightness ≥ vs ≤ (λ frozen, no KL, 3 steps): the two adapters end on opposite sides of the base
    on held-out prompts with the same noise. A broken reward gradient (e.g. the last step only at
    t = 0) leaves all three equal."""
    p = small(P.get_preset("fig3", tiny=True), steps=3, images_per_step=4, micro_batch=4, lr=0.1, kl_weight=0.0,
              fixed_weights=True, lam_init=10.0)
    res = {}
    for d in (">=", "<="):
        q = replace(p, constraints=[P.ConstraintSpec("brightness", d, 0.5)])
        pipe = tiny_pipeline()
        T.run(pipe, q, str(tmp_path / ("ge" if d == ">=" else "le")), progress=False)
        res[d] = T.evaluate(pipe, q, n=4, adapter_on=True)["brightness"]
        base = T.evaluate(pipe, q, n=4, adapter_on=False)["brightness"]
    assert res[">="] > base + 5e-3 and res["<="] < base - 5e-3


def test_composition_uses_one_product_for_sampling_and_kl():
    pipe = tiny_pipeline()
    p = replace(P.get_preset("fig5", tiny=True), height=16, width=16, dual_steps=2, batch=2)
    experts = C.make_experts(pipe, p)
    experts.set_prompts(["a cat", "a dog"])
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    lam = np.array([0.5, 0.3, 0.2])
    with torch.no_grad():
        comps = experts.components(x, 499)
        singles = []
        for n in experts.names:  # each component = the UNet with that adapter alone
            L.set_active(pipe.unet, n)
            singles.append(experts.eps(x, 499))
        prod = C.ProductEps(experts, lam)(x, 499)
    assert torch.allclose(comps, torch.stack(singles), atol=1e-6)
    assert (comps[0] - comps[1]).abs().max() > 1e-4
    assert torch.allclose(prod, sum(l * c for l, c in zip(lam, comps)), atol=1e-6)
    # KL(p_λ ‖ q_i) at a vertex λ = e_0: zero to expert 0, positive to the others (same ε_λ as sampling)
    kls = C.product_kls(experts, [1.0, 0.0, 0.0], x, S.schedule_of(pipe), 2, seed=1)
    assert kls[0] == pytest.approx(0.0, abs=1e-9) and kls[1] > 0 and kls[2] > 0
    res = C.run(pipe, experts, p)
    hist, vals = res.lam_history, res.values_history
    assert hist.shape == (3, 3) and vals.shape == (2, 3) and np.allclose(np.sum(res.lam), 1) and np.all(res.lam >= 0)
    # first dual step: λ ← Proj_Δ(1/3 + η_0 · KL) — the expert farthest away gains most weight
    assert np.argmax(hist[1]) == np.argmax(vals[0])
    # the images are samples AT the reported λ (drawn after the last dual step), with the final step's seed
    experts.set_prompts(C.round_prompts(p.prompts, p.batch, p.dual_steps))
    from cda_lite.sampling import sample
    z = sample(C.ProductEps(experts, res.lam), S.schedule_of(pipe), (p.batch, 4, 8, 8), steps=p.sample_steps,
               eta=1.0, seed=p.seed + 1000 * p.dual_steps)
    assert torch.allclose(S.decode(pipe, z), res.extra["images"], atol=1e-5)


def test_composition_samples_every_prompt():
    """fig5: a batch of 4 and 6 prompts — every prompt is sampled (they used to be prompts[i % 6], fixed)."""
    pipe = tiny_pipeline()
    p = replace(P.get_preset("fig5", tiny=True), prompts=P.get_preset("fig5").prompts, height=16, width=16,
                dual_steps=2, batch=4, kl_timesteps=1, sample_steps=2)
    assert len(p.prompts) == 6
    experts = C.make_experts(pipe, p)
    seen = []
    set_prompts = experts.set_prompts
    experts.set_prompts = lambda prompts: (seen.append(list(prompts)), set_prompts(prompts))
    C.run(pipe, experts, p, keep_images=False)
    assert set(sum(seen[:p.dual_steps], [])) == set(p.prompts)


def test_lora_experts_final_step_is_the_base():
    """The trained chain's σ = 0 step is the base model's: so it is in composition (per-sample t too)."""
    pipe = tiny_pipeline()
    p = replace(P.get_preset("fig5", tiny=True), height=16, width=16)
    experts = C.make_experts(pipe, p).align_final_step(4)  # trailing 4 steps: 999, 749, 499, 249
    experts.set_prompts(["a cat", "a dog"])
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), S.adapters_disabled(pipe.unet):
        base = experts.eps(x, 249)
    with torch.no_grad():
        tail = experts.components(x, 249)
        mixed = experts.components(x, torch.tensor([249, 499]))
        above = experts.components(x, 499)
    assert all(torch.allclose(c, base, atol=1e-6) for c in tail)
    assert (above[0] - base).abs().max() > 1e-4
    assert torch.allclose(mixed[:, 0], tail[:, 0], atol=1e-6) and torch.allclose(mixed[:, 1], above[:, 1], atol=1e-6)


def test_evaluate_samples_the_trained_chain():
    """evaluate() draws from the chain training runs (LoRA on stochastic steps, base on the σ = 0 step)."""
    from cda_lite.differentiable import sample_differentiable
    pipe = tiny_pipeline()
    with torch.no_grad():  # a random adapter that changes ε visibly
        for p_ in L.add_lora(pipe.unet, 4, name="default", init="random", seed=0):
            p_.mul_(30.0)
    q = small(P.get_preset("fig3", tiny=True), constraints=[P.ConstraintSpec("brightness", ">=", 0.0)],
              eval_images=2, eval_seed=7)
    got = T.evaluate(pipe, q)["brightness"]
    eps = S.SDEps(pipe.unet, q.guidance).set_prompts(pipe, q.eval_prompts[:2])
    chain = S.make_chain(pipe, q.sample_steps, q.eta)

    def chain_mean(final_step_model):  # the training chain, written out: sample_batch's call
        gen = torch.Generator().manual_seed(7)
        x_T = S.initial_latents(pipe, 2, q.height, q.width, gen)
        with torch.no_grad():
            x0 = sample_differentiable(eps, chain, x_T, generator=gen, deterministic_model=final_step_model).x0
            return float(get_reward("brightness")(S.decode(pipe, x0)).mean())

    trained, lora_everywhere = chain_mean(S.AdapterOff(eps)), chain_mean(None)
    gap = abs(trained - lora_everywhere)  # the two chains differ (the adapter acts on the last step too)
    assert gap > 1e-5 and abs(got - trained) < gap / 20


def test_prompt_experts_batch_one_call():
    pipe = tiny_pipeline()
    p = replace(P.get_preset("table1", tiny=True), height=16, width=16)
    ex = C.make_experts(pipe, p)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        comps = ex.components(x, 300)
        for i, prompt in enumerate(p.prompts):
            single = S.SDEps(pipe.unet, p.guidance).set_prompts(pipe, [prompt] * 2)(x, 300)
            assert torch.allclose(comps[i], single, atol=1e-5)


def test_presets_and_cli(tmp_path, capsys):
    # every preset's derived numbers are consistent with its own fields (the latent is the image size
    # over the VAE factor: 8 for SD 1.5, 2 for the tiny pipeline)
    for n in P.names():
        for tiny in (False, True):
            p = P.get_preset(n, tiny)
            d = P.derived(p)
            if "latent" in d:
                f = 2 if tiny else 8
                assert d["latent"] == (p.height // f, p.width // f) and p.height % f == 0
            if isinstance(p, P.AlignPreset):
                assert d["images_total"] == p.steps * p.images_per_step
                assert d["grad_accum"] * p.micro_batch == p.images_per_step
                assert d["dual_steps"] == (0 if p.fixed_weights else p.steps)
                assert d["constraints"] == len(p.constraints)
            elif isinstance(p, P.ComposePreset):
                assert d["experts"] >= 2 and d["images_total"] == p.dual_steps * p.batch
                assert d["final_dual_lr"] == pytest.approx(p.dual_lr * p.dual_decay ** (p.dual_steps - 1))
    f3 = P.get_preset("fig3")
    assert f3.grad_accum * f3.micro_batch == 64 and f3.sample_steps == 15 and f3.lam_init == 0.2
    assert not set(f3.train_prompts) & set(f3.eval_prompts)
    with pytest.raises(ValueError, match="known"):
        P.get_preset("fig9")
    with pytest.raises(ValueError, match="multiple"):
        P.derived(replace(f3, micro_batch=5))
    from cda_lite.sd.__main__ import main
    assert main(["compose", "--preset", "table4", "--tiny", "--steps", "1", "--out", str(tmp_path / "c")]) == 0
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    # one dual step of Algorithm 3 from λ = 1/m: λ on the simplex, the farthest expert (largest KL) gains most
    lam, h = np.array(summary["lam"]), np.array(summary["kl_history"])  # KLs of each dual step
    assert summary["preset"] == "table4" and len(h) == 1 and len(lam) == len(summary["experts"])
    assert np.all(lam >= 0) and lam.sum() == pytest.approx(1.0)
    assert np.argmax(lam) == np.argmax(h[0])


def test_missing_weights_error(tmp_path, monkeypatch):
    from cda_lite.sd.load import MissingWeightsError, load_sd15

    monkeypatch.setenv("CDA_SD_PATH", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="CDA_SD_PATH"):
        load_sd15()
    monkeypatch.delenv("CDA_SD_PATH")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError, match="huggingface-cli download"):
        load_sd15()


def test_published_numbers_match_presets_and_table7():
    """data/published/khalafi2025.json (the chapters' reference tables) agrees with the presets and with
    the Table 7 statistics the normalisers use."""
    from cda_lite.rewards import TABLE7_STATS

    pub = P.published()
    assert {k: tuple(v) for k, v in pub["table7"]["stats"].items()} == TABLE7_STATS
    f3, s3 = P.get_preset("fig3"), pub["fig3"]["settings"]
    assert [[c.reward, c.direction, c.level] for c in f3.constraints] == pub["fig3"]["constraints"]
    assert (f3.sample_steps, f3.guidance, f3.images_per_step, f3.steps, f3.grad_steps, f3.lam_init, f3.lr,
            f3.lora_rank, f3.dual_lr) == (s3["ddim_steps"], s3["guidance"], s3["images_per_step"],
                                          s3["optimizer_steps"], s3["truncation_K"], s3["lam_init"], s3["lr"],
                                          s3["lora_rank"], s3["kappa_i"])
    t1, s1 = P.get_preset("table1"), pub["table1"]["settings"]
    # the composition dual steps are the paper's, recalibrated to our KL (cda_lite.sd.calibration)
    assert (t1.sample_steps, t1.guidance, t1.kl_guidance, t1.dual_steps, P.PAPER["dual_lr"]["table1"], t1.lam_average) == \
        (s1["ddim_steps"], s1["guidance"], s1["guidance_in_kl"], s1["dual_steps"], s1["dual_lr"], 5)
    f5, s5 = P.get_preset("fig5"), pub["fig5"]["settings"]
    assert (f5.dual_steps, P.PAPER["dual_lr"]["fig5"], f5.dual_decay, f5.sample_steps, f5.batch) == \
        (s5["dual_steps"], s5["dual_lr"], s5["dual_lr_decay"], s5["ddim_steps"], s5["batch"])
    assert f5.adapters == pub["table2"]["adapters"]
    das = P.get_preset("das")
    assert (das.particles, das.steps, das.gamma) == tuple(pub["rivals"]["das"][k] for k in ("particles", "steps", "gamma"))
    for t in ("table1", "table4"):  # constrained ≥ equal weights on min CLIP (the tables' claim)
        rows = pub[t]["rows"]
        assert rows["constrained"]["min_clip"] > rows["equal weights"]["min_clip"] > rows["combined prompt"]["min_clip"]
    with pytest.raises(ValueError, match="known"):
        P.published("fig9")
