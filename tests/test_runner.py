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
