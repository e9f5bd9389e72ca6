"""Schedules and timestep spacings against diffusers' schedulers (an independent implementation)."""
import numpy as np
import pytest

from cda_lite import schedules as S

diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("T", [1000, 100])
@pytest.mark.parametrize(
    "ours,kw",
    [
        (lambda T: S.linear(T), dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)),
        (lambda T: S.scaled_linear(T), dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)),
        (lambda T: S.cosine(T), dict(beta_schedule="squaredcos_cap_v2")),
        (lambda T: S.linear(T, 1e-4, 0.05), dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.05)),
    ],
    ids=["linear", "scaled_linear", "cosine", "linear-0.05"],
)
def test_alphas_cumprod_match_diffusers(T, ours, kw):
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, **kw)
    sched = ours(T)
    assert sched.T == T
    # diffusers computes in float32.
    np.testing.assert_allclose(sched.betas, ref.betas.double().numpy(), rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(sched.alphas_cumprod, ref.alphas_cumprod.double().numpy(), rtol=2e-6, atol=1e-9)


def test_by_name_and_sigma():
    sched = S.by_name("cosine", 50)
    # by name = diffusers' scheduler of that name (not our own cosine(), which would be its twin)
    ref = diffusers.DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2")
    np.testing.assert_allclose(sched.alphas_cumprod, ref.alphas_cumprod.double().numpy(), rtol=2e-6, atol=1e-9)
    lin = S.by_name("linear", 30, beta_start=1e-3, beta_end=0.05)
    np.testing.assert_allclose(lin.betas, np.linspace(1e-3, 0.05, 30), rtol=1e-12)
    np.testing.assert_allclose(sched.sigma([0, 49]), np.sqrt(1 - sched.alphas_cumprod[[0, 49]]))
    # ᾱ_t is the running product of 1 − β_t (computed here by a plain loop).
    ab, acc = [], 1.0
    for b in sched.betas:
        acc *= 1 - b
        ab.append(acc)
    np.testing.assert_allclose(sched.alphas_cumprod, ab, rtol=1e-14)
    with pytest.raises(ValueError, match="schedule"):
        S.by_name("sigmoid")


@pytest.mark.parametrize("T,steps", [(1000, 50), (1000, 100), (1000, 7), (100, 100), (100, 30), (200, 1)])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_timesteps_match_ddim(T, steps, spacing):
    ref = diffusers.DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    ref.set_timesteps(steps)
    ts = S.timesteps(S.linear(T), steps, spacing)
    np.testing.assert_array_equal(ts, ref.timesteps.numpy())
    assert np.all(np.diff(ts) < 0) and len(ts) == steps


def test_full_chain_visits_every_step():
    for spacing in ("leading", "trailing"):
        np.testing.assert_array_equal(S.timesteps(S.linear(100), None, spacing), np.arange(99, -1, -1))


def test_bad_inputs():
    with pytest.raises(ValueError, match="betas"):
        S.Schedule(np.array([0.1, 1.0]))
    with pytest.raises(ValueError, match="betas"):
        S.Schedule(np.array([[0.1]]))
    with pytest.raises(ValueError, match="steps"):
        S.timesteps(S.linear(10), 11)
    with pytest.raises(ValueError, match="spacing"):
        S.timesteps(S.linear(10), 5, "linspace")


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("seed", range(3))
def test_q_sample_matches_diffusers_add_noise(name, seed):
    """The one forward-noising primitive against diffusers' DDPMScheduler.add_noise, on random data,
    per-sample timesteps (images) and one shared index (2-D points)."""
    import torch

    T = 100
    kw = {"linear": dict(beta_start=1e-4, beta_end=0.02), "scaled_linear": dict(beta_start=0.00085, beta_end=0.012),
          "cosine": {}}[name]
    sched = S.by_name(name, T, **kw)
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule={"cosine": "squaredcos_cap_v2"}.get(name, name),
                                  **kw)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(7, 1, 8, 8, generator=gen, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    t = torch.randint(0, T, (7,), generator=gen)
    ref.alphas_cumprod = ref.alphas_cumprod.double()
    np.testing.assert_allclose(S.q_sample(x0, t, noise, sched).numpy(), ref.add_noise(x0, noise, t).numpy(),
                               rtol=1e-6, atol=1e-6)
    pts, eps = x0.flatten(1)[:, :2], noise.flatten(1)[:, :2]
    t0 = int(t[0])
    np.testing.assert_allclose(S.q_sample(pts, t0, eps, sched).numpy(),
                               ref.add_noise(pts, eps, torch.full((7,), t0)).numpy(), rtol=1e-6, atol=1e-6)
