"""Denoising score matching: a small MLP learns a 2-component mixture; the loss behaves as theory says."""
import math

import numpy as np
import pytest
import torch

from cda_lite import sampling as SM
from cda_lite import schedules as S
from cda_lite import train as TR
from cda_lite.gmm import GaussianMixture
from cda_lite.models import ExactEps, MLPEps

GM = GaussianMixture([0.35, 0.65], [[-2.0, 0.0], [2.0, 1.0]], [0.4 * np.eye(2), [[0.5, 0.15], [0.15, 0.3]]])
SCHED = S.cosine(100)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = MLPEps(SCHED.T, dim=2, hidden=128, layers=3)
    states = [(s.step, s.loss, s.model) for s in
              TR.train_dsm(model, GM.sample(20_000, seed=0), SCHED, steps=800, batch_size=512, seed=0)]
    return model, states


def test_generator_yields_increasing_steps_and_finite_losses(trained):
    model, states = trained
    steps = [s for s, _, _ in states]
    assert steps == list(range(1, 801))
    assert all(math.isfinite(l) for _, l, _ in states)
    assert all(m is model for _, _, m in states)
    assert not model.training  # the generator puts the model in eval mode when it finishes


def test_loss_decreases(trained):
    _, states = trained
    losses = np.array([l for _, l, _ in states])
    assert losses[:50].mean() > losses[-100:].mean() + 0.05
    # And it ends near the Bayes-optimal level, the loss of the exact ε on the same kind of batches.
    gen = torch.Generator().manual_seed(11)
    x0 = torch.as_tensor(GM.sample(100_000, seed=12), dtype=torch.float64)
    floor = TR.dsm_loss(ExactEps(GM, SCHED), x0, SCHED, gen).item()
    # (the lower margin allows for the Monte-Carlo error of both averages, about 0.003 each)
    assert floor - 0.01 < losses[-100:].mean() < floor + 0.03


def test_learned_model_samples_the_mixture(trained):
    model, _ = trained
    x = SM.sample_ddpm(model, SCHED, 3000, seed=1)
    assert np.all(np.isfinite(x))
    near = np.argmin(((x[:, None, :] - GM.means[None]) ** 2).sum(-1), axis=1)
    masses = np.bincount(near, minlength=2) / len(x)
    np.testing.assert_allclose(masses, GM.weights, atol=0.05)
    for k in range(2):
        assert np.linalg.norm(x[near == k].mean(0) - GM.means[k]) < 0.15
    assert np.linalg.norm(x.mean(0) - GM.mean()) < 0.15


def test_untrained_model_fails_the_same_check():
    torch.manual_seed(0)
    x = SM.sample_ddpm(MLPEps(SCHED.T, 2, 128, 3), SCHED, 1000, seed=1)
    near = np.argmin(((x[:, None, :] - GM.means[None]) ** 2).sum(-1), axis=1)
    bad = np.abs(np.bincount(near, minlength=2) / len(x) - GM.weights).max() > 0.05 or any(
        np.linalg.norm(x[near == k].mean(0) - GM.means[k]) >= 0.15 for k in range(2) if np.any(near == k))
    assert bad


def test_dsm_loss_values():
    x0 = torch.as_tensor(GM.sample(50_000, seed=1), dtype=torch.float64)
    t = torch.full((len(x0),), 50)
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    # Predicting 0 costs E ε² = 1 per coordinate.
    l0 = TR.dsm_loss(zero, x0, SCHED, torch.Generator().manual_seed(0), t=t).item()
    assert abs(l0 - 1.0) < 4 * math.sqrt(2 / (2 * len(x0)))
    # The exact ε is the minimiser: perturbing it (same noise draws) can only increase the loss.
    exact = ExactEps(GM, SCHED)
    base = TR.dsm_loss(exact, x0, SCHED, torch.Generator().manual_seed(0), t=t).item()
    for pert in (lambda x, t: 1.1 * exact(x, t), lambda x, t: exact(x, t) + 0.05):
        assert TR.dsm_loss(pert, x0, SCHED, torch.Generator().manual_seed(0), t=t).item() > base
    assert base < l0


def test_callable_data_and_bad_data():
    calls = []

    def data(n, gen):
        calls.append(n)
        return torch.randn(n, 2, generator=gen)

    states = list(TR.train_dsm(MLPEps(SCHED.T, 2, 16, 1), data, SCHED, steps=3, batch_size=32, seed=0))
    assert [s.step for s in states] == [1, 2, 3] and calls == [32, 32, 32]
    with pytest.raises(ValueError, match="data"):
        next(TR.train_dsm(MLPEps(SCHED.T, 2, 16, 1), np.zeros(5), SCHED, steps=1))


def test_affine_skip_starts_as_the_plain_network_and_represents_affine_maps_exactly():
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    t = torch.arange(7) * 13
    torch.manual_seed(3)
    plain = MLPEps(100, 2, hidden=32, layers=2)
    torch.manual_seed(3)
    skip = MLPEps(100, 2, hidden=32, layers=2, affine=True)
    with torch.no_grad():
        torch.testing.assert_close(skip(x, t), plain(x, t))  # the skip is zero at initialisation
        # With the MLP's output zeroed and the skip's bias set, the network is x ↦ A x + b for every t
        skip.out.weight.zero_(); skip.out.bias.zero_(); skip.affine.weight.zero_()
        A, b = torch.tensor([[1.5, -0.5], [0.25, 2.0]]), torch.tensor([0.3, -0.7])
        skip.affine.bias.copy_(torch.cat([A.reshape(-1), b]))
        torch.testing.assert_close(skip(x, t), x @ A.T + b)
        torch.testing.assert_close(skip(x, 5), x @ A.T + b)  # one shared t


def test_affine_skip_extrapolates_a_gaussian_score_into_its_tail():
    """DSM sees few samples 3σ out; there the plain MLP's ε strays and the affine skip's follows the
    exact (affine) ε of the Gaussian. Both are measured against the closed form."""
    gm = GaussianMixture.gaussian([0.5, -0.2], [[0.06, 0.02], [0.02, 0.03]])
    sched = S.linear(100, 1e-4, 0.1)
    data = gm.sample(20_000, seed=0)
    errors = {}
    for affine in (False, True):
        torch.manual_seed(0)
        model = MLPEps(sched.T, 2, hidden=64, layers=2, affine=affine)
        for _ in TR.train_dsm(model, data, sched, steps=600, batch_size=512, seed=0):
            pass
        ab = sched.alphas_cumprod
        err = []
        with torch.no_grad():
            for t in (2, 5, 10):  # small noise: the data's own spread, not the noise, sets the tail
                # points 3 standard deviations out along the covariance's principal axes
                w, V = np.linalg.eigh(ab[t] * gm.covs[0] + (1 - ab[t]) * np.eye(2))
                pts = np.sqrt(ab[t]) * gm.means[0] + 3 * np.concatenate([V * np.sqrt(w), -V * np.sqrt(w)], 1).T
                x = torch.as_tensor(pts, dtype=torch.float32)
                err.append(float((model(x, t) - ExactEps(gm, sched)(x, t)).norm(dim=1).mean()))
        errors[affine] = np.mean(err)
    assert errors[True] < 0.5 * errors[False], errors


def test_sigma_conditioned_network_is_sigma_times_its_score_head_and_checks_its_levels():
    sched = S.linear(100, 1e-4, 0.1)
    sig = sched.sigma(np.arange(sched.T))
    net = MLPEps(sched.T, 2, hidden=32, layers=2, affine=True, sigmas=sig)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(x, 7)
        net.score_output = False  # the head F alone: ε = σ_t · F(x, σ_t)
        head = net(x, 7)
        net.score_output = True
        torch.testing.assert_close(out, float(sig[7]) * head)
        t = torch.tensor([0, 3, 50, 99, 7])
        torch.testing.assert_close(net(x, t)[4], out[4])  # per-sample timesteps take the same path
    with pytest.raises(ValueError, match="sigmas"):
        MLPEps(sched.T, 2, sigmas=sig[:50])
    with pytest.raises(ValueError, match="sigmas"):
        MLPEps(3, 2, sigmas=[0.1, 0.0, 0.5])
    with pytest.raises(ValueError, match="sigmas"):
        MLPEps(2, 2, sigmas=[0.1, float("nan")])


def test_sigma_conditioned_score_network_learns_the_small_noise_score():
    """Under DSM's ε-loss a network with DDPM's timestep embedding learns ε to ~0.02 at every t, which
    is a score error ~0.02/σ_t where σ_t is 0.01–0.03 (t ≤ 2). Conditioned on σ_t through slow features
    and predicting ε = σ_t·F, the small noise levels share their neighbours' samples. Both against the
    exact score of the Gaussian, on its own (noised) samples, same data, steps and seed."""
    gm = GaussianMixture.gaussian([0.5, -0.2], [[0.3, 0.1], [0.1, 0.2]])
    sched = S.linear(100, 1e-4, 0.1)
    data = gm.sample(20_000, seed=0)
    exact = ExactEps(gm, sched)
    x0 = torch.as_tensor(gm.sample(2000, seed=1), dtype=torch.float32)
    errors = {}
    for sigma in (False, True):
        torch.manual_seed(0)
        model = MLPEps(sched.T, 2, hidden=64, layers=2, affine=True,
                       sigmas=sched.sigma(np.arange(sched.T)) if sigma else None)
        for _ in TR.train_dsm(model, data, sched, steps=800, batch_size=512, seed=0):
            pass
        ab, err = sched.alphas_cumprod, []
        with torch.no_grad():
            for t in (0, 1, 2):
                xt = float(np.sqrt(ab[t])) * x0 + float(np.sqrt(1 - ab[t])) * torch.randn(x0.shape, generator=torch.Generator().manual_seed(t))
                err.append(float((model(xt, t) - exact(xt, t)).norm(dim=1).mean()) / float(np.sqrt(1 - ab[t])))
        errors[sigma] = np.mean(err)
    assert errors[True] < 0.3 * errors[False], errors
