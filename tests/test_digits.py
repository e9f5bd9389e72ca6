"""The digits rung: the data loader, the UNet ε-model, DSM on images, the classifier reward.

Truth used: scikit-learn's own arrays (loader), diffusers' DDPMScheduler (schedule), the exact
identity of ResidualEps at initialisation, central finite differences (reward gradient), and a held-out
split the classifier never saw (accuracy bar 0.93 after a short run; the full recipe reaches ~0.97).
"""
import numpy as np
import pytest
import torch

from cda_lite import digits
from cda_lite.digits.classifier import ClassLogProb, DigitClassifier, class_frequencies, train_digit_classifier
from cda_lite.digits.unet import UNetEps, digits_schedule, load_unet, save_unet
from cda_lite.models import ResidualEps
from cda_lite.sampling import sample
from cda_lite.schedules import cosine
from cda_lite.train import dsm_loss, fit

sklearn_datasets = pytest.importorskip("sklearn.datasets")
SMALL = dict(block_out_channels=(16, 32), norm_num_groups=8)


@pytest.fixture(scope="module")
def data():
    return digits.load_digits(return_labels=True)


@pytest.fixture(scope="module")
def classifier():
    return train_digit_classifier(steps=300, seed=0)


def test_loader_matches_sklearn_shape_range_and_values(data):
    x, y = data
    ref = sklearn_datasets.load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.long
    np.testing.assert_array_equal(y.numpy(), ref.target)
    np.testing.assert_allclose(x[:, 0].numpy(), ref.images / 8.0 - 1.0, atol=1e-6)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.allclose(digits.from_unit(digits.to_unit(x)), x)
    assert torch.equal(digits.load_digits(), x)


def test_to_rgb_and_ink_reward(data):
    x, _ = data
    rgb = digits.to_rgb(x[:5])
    assert rgb.shape == (5, 3, 8, 8)
    # ink = mean pixel in [0, 1] units = mean of sklearn values / 16
    ref = sklearn_datasets.load_digits().images[:5].reshape(5, -1).mean(1) / 16
    np.testing.assert_allclose(digits.reward("ink")(x[:5]).numpy(), ref, atol=1e-6)
    with pytest.raises(ValueError, match="saturation"):
        digits.reward("saturation")
    with pytest.raises(ValueError, match="x"):
        digits.to_rgb(torch.zeros(2, 3, 8, 8))


def test_split_is_disjoint_complete_and_stratified(data):
    _, y = data
    tr, te = digits.split()
    assert len(set(tr.tolist()) & set(te.tolist())) == 0 and len(tr) + len(te) == 1797
    share = torch.bincount(y[te], minlength=10).float() / torch.bincount(y, minlength=10).float()
    assert float((share - 0.2).abs().max()) < 0.01
    with pytest.raises(ValueError, match="test_fraction"):
        digits.split(1.5)


def test_image_grid_layout():
    x = torch.full((12, 1, 8, 8), 1.0)  # full ink everywhere
    g = digits.image_grid(x, nrow=5, pad=1)
    assert g.shape == (3 * 9 + 1, 5 * 9 + 1)
    assert g.sum() == pytest.approx(12 * 64)  # padding and empty cells stay 0
    with pytest.raises(ValueError, match="nrow"):
        digits.image_grid(x, nrow=0)


def test_digits_schedule_is_diffusers_capped_cosine_and_reaches_noise():
    from diffusers.schedulers.scheduling_ddpm import betas_for_alpha_bar

    s = digits_schedule()
    assert s.T == 100
    np.testing.assert_allclose(s.betas, betas_for_alpha_bar(100, max_beta=0.2).double().numpy(), rtol=1e-6)
    # identical to the uncapped cosine until the cap bites (last few steps)
    np.testing.assert_allclose(s.alphas_cumprod[:90], cosine(100).alphas_cumprod[:90], rtol=1e-12)
    assert 1e-3 < s.alphas_cumprod[-1] < 5e-3 and s.betas.max() == pytest.approx(0.2)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sampler_agrees_with_diffusers_ddim_scheduler(eta):
    """cda_lite.sampling.sample and diffusers' DDIMScheduler (same β's, trailing spacing, no clipping)
    take the same steps from the same x_T and the same injected noise."""
    from diffusers import DDIMScheduler

    s = digits_schedule()
    torch.manual_seed(3)
    m = UNetEps(s.T, **SMALL).eval()
    steps, seed, shape = 10, 4, (3, 1, 8, 8)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    ours = sample(m, s, shape, steps=steps, eta=eta, seed=seed, x_T=x_T)
    ddim = DDIMScheduler(num_train_timesteps=s.T, trained_betas=s.betas.astype(np.float32), clip_sample=False,
                         set_alpha_to_one=True, timestep_spacing="trailing", prediction_type="epsilon")
    ddim.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    x = x_T.clone()
    with torch.no_grad():
        for i, t in enumerate(ddim.timesteps):
            last = i == len(ddim.timesteps) - 1
            noise = torch.randn(shape, generator=gen) if (eta > 0 and not last) else None
            x = ddim.step(m(x, int(t)), t, x, eta=eta, variance_noise=noise).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


def test_unet_eps_protocol_shapes_and_errors():
    torch.manual_seed(0)
    m = UNetEps(100, **SMALL)
    x = torch.randn(3, 1, 8, 8)
    out_int = m(x, 7)
    assert out_int.shape == x.shape
    torch.testing.assert_close(m.eps(x, torch.full((3,), 7)), out_int)
    per = m(x, torch.tensor([0, 50, 99]))
    torch.testing.assert_close(per[1:2], m(x[1:2], 50), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="x"):
        m(torch.randn(3, 64), 7)
    with pytest.raises(ValueError, match="t"):
        m(x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="block_out_channels"):
        UNetEps(100, block_out_channels=(12, 24), norm_num_groups=8)


def test_unet_save_load_roundtrip(tmp_path):
    torch.manual_seed(1)
    m = UNetEps(100, **SMALL).eval()
    save_unet(m, str(tmp_path / "u.pt"), extra={"steps": 3}, half=False)
    m2 = load_unet(str(tmp_path / "u.pt"))
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(m2(x, 3), m(x, 3), rtol=0, atol=0)
    assert m2.extra["steps"] == 3


def test_residual_eps_over_unets_starts_at_the_base():
    torch.manual_seed(2)
    base = UNetEps(100, **SMALL)
    model = ResidualEps(base, UNetEps(100, **SMALL))
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(model(x, 30), base(x, 30), rtol=0, atol=0)
    assert float(model.correction.unet.conv_out.weight.detach().abs().sum()) == 0
    assert all(not p.requires_grad for p in model.base.parameters())


def test_short_dsm_training_lowers_the_loss_and_samples_have_the_right_shape(data):
    x, _ = data
    s = digits_schedule()
    torch.manual_seed(0)
    m = UNetEps(s.T, **SMALL)
    gen = torch.Generator().manual_seed(5)
    xb = x[torch.randint(0, len(x), (256,), generator=gen)]
    t = torch.randint(0, s.T, (256,), generator=gen)

    def held_loss():
        with torch.no_grad():
            return float(dsm_loss(m.eval(), xb, s, torch.Generator().manual_seed(9), t=t))

    before = held_loss()
    m, losses = fit(m, x, s, steps=60, batch_size=64, lr=3e-3, seed=0, progress=False)
    after = held_loss()
    assert np.isfinite(losses).all() and after < 0.7 * before, (before, after)
    out = sample(m, s, (200, 1, 8, 8), steps=10, seed=0)
    assert out.shape == (200, 1, 8, 8) and torch.isfinite(out).all()
    # Even 60 steps move the samples towards the data: the mean image of 200 samples is within 0.7·‖x̄‖
    # of the data's mean image x̄ (pure noise: ≈ ‖x̄‖ = 5.2; measured 2.7–3.0 over sampling seeds 0–2).
    dist = float((out.mean(0) - x.mean(0)).norm())
    assert dist < 0.7 * float(x.mean(0).norm()), dist


def test_classifier_held_out_accuracy_and_class_frequencies(classifier, data):
    x, y = data
    assert classifier.held_out_accuracy > 0.93
    _, te = digits.split()
    freq = class_frequencies(classifier, x[te])
    assert freq.shape == (10,) and float(freq.sum()) == pytest.approx(1.0)
    true = torch.bincount(y[te], minlength=10).float() / len(te)
    assert float((freq - true).abs().max()) < 0.04


def test_class_log_prob_gradient_matches_finite_differences(classifier, data):
    x, _ = data
    r = ClassLogProb(classifier.double(), 3)
    assert r.name == "is_3"
    x0 = (x[:4].double() + 0.05 * torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0),
                                              dtype=torch.float64)).requires_grad_(True)
    val = r(x0)
    assert val.shape == (4,) and float(val.detach().max()) <= 0
    (g,) = torch.autograd.grad(val.sum(), x0)
    v = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h = 1e-5
    with torch.no_grad():
        fd = (r(x0 + h * v) - r(x0 - h * v)).sum() / (2 * h)
    assert float((g * v).sum()) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)
    assert float(g.abs().sum()) > 0
    classifier.float()


def test_class_log_prob_probabilities_sum_to_one_and_bad_input(classifier, data):
    x, _ = data
    lp = torch.stack([ClassLogProb(classifier, d)(x[:6]) for d in range(10)], 1)
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(6), rtol=1e-5, atol=1e-5)
    for bad in (10, -1, 3.0, "3", True):
        with pytest.raises(ValueError, match="digit"):
            ClassLogProb(classifier, bad)
    with pytest.raises(ValueError, match="x"):
        ClassLogProb(classifier, 3)(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="x"):
        DigitClassifier()(torch.zeros(2, 64))


def test_train_functions_reject_bad_steps():
    from cda_lite.digits.unet import train_digits_unet

    with pytest.raises(ValueError, match="steps"):
        train_digit_classifier(steps=0)
    with pytest.raises(ValueError, match="steps"):
        train_digits_unet(steps=0)


def test_train_digits_unet_ema_decay_zero_is_the_last_iterate_and_bad_decay():
    from cda_lite.digits.unet import BATCH_SIZE, DEFAULT_ARCH, LR, train_digits_unet
    from cda_lite.train import train_dsm

    # The iterates θ_0..θ_K of the shared DSM loop, snapshotted here; the EMA with decay d is then the
    # closed form d^K θ_0 + Σ_k (1 − d) d^{K−k} θ_k (not the library's running lerp): d = 0 is θ_K.
    s = digits_schedule()
    torch.manual_seed(1)
    ref = UNetEps(s.T, **DEFAULT_ARCH)
    snaps = [[p.detach().clone() for p in ref.parameters()]]
    ref_losses = []
    for st in train_dsm(ref, digits.load_digits(), s, steps=3, batch_size=BATCH_SIZE, lr=LR, seed=1):
        ref_losses.append(st.loss)
        snaps.append([p.detach().clone() for p in ref.parameters()])
    K = len(snaps) - 1
    for d in (0.0, 0.5):
        model, losses = train_digits_unet(3, seed=1, ema_decay=d)
        assert losses == ref_losses and not model.training
        coef = [d**K] + [(1 - d) * d ** (K - k) for k in range(1, K + 1)]
        assert sum(coef) == pytest.approx(1.0)
        for i, a in enumerate(model.parameters()):
            expected = sum(c * snap[i] for c, snap in zip(coef, snaps))
            torch.testing.assert_close(a.detach(), expected, rtol=1e-6, atol=1e-7 if d else 0.0)
    assert any(not torch.equal(a, b) for a, b in zip(snaps[0], snaps[-1]))  # training moved the weights
    with pytest.raises(ValueError, match="ema_decay"):
        train_digits_unet(3, ema_decay=1.0)


def test_committed_checkpoint_loads_safely_and_denoises_better_than_the_best_gaussian(data):
    from cda_lite.gmm import GaussianMixture
    from cda_lite.digits.unet import CHECKPOINT, DEFAULT_ARCH, FULL_STEPS
    from cda_lite.models import ExactEps
    from cda_lite.paths import data_path

    path = data_path(*CHECKPOINT)
    if not path.exists():
        pytest.skip("no committed checkpoint in this checkout")
    assert path.stat().st_size < 3e6
    torch.load(str(path))  # weights_only (the default): plain tensors, numbers and strings only
    m = load_unet(str(path))
    assert m.config["block_out_channels"] == list(DEFAULT_ARCH["block_out_channels"])
    assert m.extra["steps"] == FULL_STEPS and len(m.extra["losses"]) == FULL_STEPS
    x, _ = data
    s = digits_schedule()
    flat = x.flatten(1).double().numpy()
    gauss = ExactEps(GaussianMixture.gaussian(flat.mean(0), np.cov(flat.T) + 1e-4 * np.eye(64)), s)

    class Flat(torch.nn.Module):
        def forward(self, xx, t):
            return gauss(xx.flatten(1).double(), t).float().reshape(xx.shape)

    def loss(model):
        with torch.no_grad():
            return float(dsm_loss(model, x[:600], s, torch.Generator().manual_seed(3)))

    assert loss(m) < 0.8 * loss(Flat())
