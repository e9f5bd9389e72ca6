"""Weight-free rewards against hand-computed values and finite differences; the reward registry."""
import math

import pytest
import torch

from cda_lite import rewards as R

Y = (0.2126, 0.7152, 0.0722)


def const(rgb, n=2, h=6, w=6):
    return torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1).expand(n, 3, h, w).clone()


def two_colour():
    x = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    x[0, 0, :, :2] = 1.0  # left half red
    x[0, 2, :, 2:] = 1.0  # right half blue
    return x


def test_constant_image():
    rgb = (0.6, 0.3, 0.15)
    x = const(rgb)
    y = sum(c * v for c, v in zip(Y, rgb))
    assert torch.allclose(R.brightness(x), torch.full((2,), y, dtype=torch.float64))
    assert torch.allclose(R.global_contrast(x), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(R.local_contrast(x), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(R.saturation(x), torch.full((2,), (0.6 - 0.15) / 0.6, dtype=torch.float64))
    rg, yb = 0.6 - 0.3, 0.45 - 0.15
    assert torch.allclose(R.colourfulness(x), torch.full((2,), 0.3 * math.hypot(rg, yb), dtype=torch.float64),
                          atol=1e-6)


def test_two_colour_image():
    x = two_colour()
    assert R.brightness(x).item() == pytest.approx((Y[0] + Y[2]) / 2)
    assert R.global_contrast(x).item() == pytest.approx(abs(Y[0] - Y[2]) / 2)
    assert R.saturation(x).item() == pytest.approx(1.0)
    # rg ∈ {1, 0}: mean 1/2, var 1/4;  yb ∈ {1/2, −1}: mean −1/4, var 9/16
    want = math.sqrt(0.25 + 9 / 16) + 0.3 * math.sqrt(0.25 + 1 / 16)
    assert R.colourfulness(x).item() == pytest.approx(want, abs=1e-6)


def test_local_contrast_single_pixel():
    g = torch.exp(-torch.arange(-2, 3, dtype=torch.float64) ** 2 / 2)
    kc = (1 / g.sum()) ** 2  # centre weight of the normalised 5×5 kernel
    assert R.gaussian_kernel(5, 1.0, torch.float64).sum().item() == pytest.approx(1.0)
    assert R.gaussian_kernel(5, 1.0, torch.float64)[2, 2].item() == pytest.approx(kc.item())
    x = torch.zeros(1, 3, 9, 9, dtype=torch.float64)
    x[0, :, 4, 4] = 1.0  # white pixel: Y = 1 there
    # |Y − blur| = 1 − k_c at the centre and k_ij at the 24 neighbours (which sum to 1 − k_c)
    assert R.local_contrast(x).item() == pytest.approx(2 * (1 - kc.item()) / 81)


@pytest.mark.parametrize("name", sorted(R.WEIGHT_FREE))
def test_gradients_match_finite_differences(name):
    torch.manual_seed(0)
    x = (0.1 + 0.8 * torch.rand(2, 3, 7, 7, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(R.get(name), (x,), eps=1e-6, atol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="images"):
        R.brightness(torch.zeros(2, 4, 5, 5))
    with pytest.raises(ValueError, match="size"):
        R.gaussian_kernel(4)
    with pytest.raises(ValueError, match="unknown"):
        R.get("sharpness")


def test_registry_and_normalizer():
    from cda_lite.sd import registry as SR

    with pytest.raises(ValueError, match="known: .*aesthetic.*brightness"):
        SR.get_reward("beauty")
    x = two_colour()
    assert SR.get_reward("saturation")(x).item() == pytest.approx(1.0)
    n = SR.normalizer("saturation")
    assert (n.mean, n.std) == (0.106, 0.0706)
    assert SR.normalizer("brightness") is None
    with pytest.raises(FileNotFoundError, match="CDA_AESTHETIC_PATH"):
        SR.get_reward("aesthetic", path="/nonexistent/head.pth")(x)
