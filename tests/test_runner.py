"""The one Algorithm 1 driver (cda_lite.runner) against truth computed by hand."""
import numpy as np
import pytest
import torch

from cda_lite.runner import fit_normalizers, normalized_constraints


def test_levels_in_sigma_units_equal_raw_over_hand_fitted_std():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(500, 2, generator=g, dtype=torch.float64) * torch.tensor([1.5, 0.7]) + 0.3
    rewards = [lambda y: y[:, 0], lambda y: -(y ** 2).sum(1)]
    levels = [0.9, -1.2]
    norms = fit_normalizers(rewards, x)
    cons = normalized_constraints(rewards, levels, norms, directions=[">=", "<="])
    for r, b, c in zip(rewards, levels, cons):
        v = r(x).numpy()
        m, s = v.sum() / len(v), np.sqrt(((v - v.sum() / len(v)) ** 2).sum() / (len(v) - 1))
        assert c.level == pytest.approx((b - m) / s, rel=1e-12)
        assert c.raw_level() == pytest.approx(b, rel=1e-12)
    assert [c.direction for c in cons] == [">=", "<="]
    same = normalized_constraints(rewards, [c.level for c in cons], norms, units="sigma")
    assert [c.level for c in same] == [c.level for c in cons]
    with pytest.raises(ValueError, match="units"):
        normalized_constraints(rewards, levels, norms, units="nats")
    with pytest.raises(ValueError, match="levels"):
        normalized_constraints(rewards, [1.0], norms)


def test_run_alignment_fixed_raw_weights_become_w_times_hand_sigma_and_report_both_units():
    from cda_lite.align import AlignConfig
    from cda_lite.models import MLPEps
    from cda_lite.pretrained import default_schedule
    from cda_lite.runner import run_alignment

    schedule = default_schedule()
    torch.manual_seed(0)
    base = MLPEps(schedule.T, dim=1, hidden=16, layers=1)
    x = 0.3 + 1.5 * torch.randn(400, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    v = x[:, 0].numpy()
    s_hand = float(np.sqrt(((v - v.mean()) ** 2).sum() / (len(v) - 1)))
    cfg = AlignConfig(steps=2, batch_size=8, sample_steps=5, dual_every=1, seed=0)
    out = run_alignment(base, schedule, [lambda y: y[:, 0]], [0.8], cfg, (1,), x, fixed_weights_raw=[0.4])
    assert out.trainer.config.fixed_weights == pytest.approx([0.4 * s_hand], rel=1e-12)
    assert out.trainer.lam_raw() == pytest.approx([0.4], rel=1e-9)
    summ = out.summary(expected_raw=[v.mean()], kl=0.0)
    assert summ["levels_raw"] == pytest.approx([0.8]) and summ["levels_sigma"] == pytest.approx([(0.8 - v.mean()) / s_hand])
    assert summ["expected_sigma"] == pytest.approx([0.0], abs=1e-12)  # the pretrained mean is 0 σ
    assert summ["slack_sigma"] == pytest.approx([-(0.8 - v.mean()) / s_hand])
    with pytest.raises(ValueError, match="fixed_weights_raw"):
        run_alignment(base, schedule, [lambda y: y[:, 0]], [0.8], cfg, (1,), x, fixed_weights_raw=[0.4, 1.0])
