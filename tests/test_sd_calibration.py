"""Calibration to the paper (our Lemma 2 / path-wise KLs vs the public code's unweighted per-dimension sums)
and the presets' provenance: every value marked paper / derived / guess / ours; derived values equal what
cda_lite.sd.calibration computes; Tables 1/4 draw their random prompt sets with a fixed seed."""
import math

import numpy as np
import pytest
import torch

from cda_lite.kl import pointwise_kl
from cda_lite.schedules import timesteps
from cda_lite.sd import calibration as K
from cda_lite.sd import presets as P
from cda_lite.sd import provenance as V


class Shift(torch.nn.Module):
    """ε(x, t) = x + δ: two of them differ by a constant per-dimension error at every t (flat profile)."""

    def __init__(self, delta):
        super().__init__()
        self.delta = delta

    def forward(self, x, t):
        return x + self.delta


@pytest.mark.parametrize("k", [10, 25])
def test_composition_ratio_matches_the_two_estimators(k):
    """ρ = D Σ w_t / k, checked by running our Lemma 2 estimator (every t) and, written out here, the public
    code's form Σ_{t ∈ sampler steps} mean((ε_p − ε_q)²) on the same flat error profile."""
    s = K.sd_schedule()
    x0 = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    delta = 0.3
    ours = pointwise_kl(Shift(delta), Shift(0.0), s, x0, weighted=True)
    public = sum(float(((Shift(delta)(x0, t) - Shift(0.0)(x0, t)) ** 2).mean()) for t in timesteps(s, k, "trailing"))
    assert ours / public == pytest.approx(K.composition_ratio(16, k), rel=1e-9)


def test_schedule_weights_and_ratios():
    from cda_lite.kl import lemma2_weights
    w = lemma2_weights(K.sd_schedule())
    assert w[0] == pytest.approx(0.5) and 6.4 < w.sum() < 6.6  # β_0/(2β_0); Σ_t w_t on SD's schedule
    assert K.latent_dims(512, 512) == 16384
    assert K.composition_ratio(16384, 25) == pytest.approx(16384 * w.sum() / 25)


def test_presets_use_the_derived_values():
    D = K.latent_dims(512, 512)
    assert P.get_preset("fig5").dual_lr == pytest.approx(K.dual_lr(P.PAPER["dual_lr"]["fig5"], D, 25), rel=1e-3)
    for t in ("table1", "table4"):
        assert P.get_preset(t).dual_lr == pytest.approx(K.dual_lr(0.05, D, 10), rel=1e-3)
    for n, steps in (("fig3", 15), ("fig4", 15), ("table2", 50)):
        p = P.get_preset(n)
        assert p.sample_steps == steps and p.kl_weight == pytest.approx(K.kl_weight(0.1, D, steps), rel=1e-3)
        assert p.dual_warmup == 10 and p.dual_every == 1
    assert P.get_preset("table1").model_id == P.SD14 and P.get_preset("fig5").model_id == P.SD15
    tiny = P.get_preset("fig5", tiny=True)
    assert tiny.dual_lr == pytest.approx(K.dual_lr(1.0, K.latent_dims(32, 32, 2), tiny.sample_steps))


def test_every_preset_value_has_a_provenance():
    labels = set()
    for n in P.names():
        for tiny in (False, True):
            prov = V.provenance(P.get_preset(n, tiny))
            labels |= {lab for lab, why in prov.values() if why}
    assert labels == {"paper", "derived", "guess", "ours"}
    md = V.table()
    assert md.count("\n") > 100 and "| fig4 | `constraints` |" in md and "guess" in md
    assert V.provenance(P.get_preset("fig4"))["constraints"][0] == "guess"


def test_concept_sets_are_random_fixed_and_distinct():
    from cda_lite.sd.concepts import prompt_sets
    p = P.get_preset("table4")
    sets = prompt_sets(p)
    assert len(sets) == 50 and all(len(s) == 3 and len(set(s)) == 3 for s in sets)
    assert sets == prompt_sets(p) and len({tuple(s) for s in sets}) > 40
    assert set(sum(sets, [])) <= set(p.concept_pool)
    assert math.comb(len(p.concept_pool), 3) > 1000


def test_refit_stats_on_the_base_model():
    pytest.importorskip("diffusers")
    from dataclasses import replace

    from cda_lite.sd.tiny import tiny_pipeline
    pipe = tiny_pipeline()
    p = replace(P.get_preset("fig3", tiny=True), height=16, width=16, sample_steps=2,
                constraints=[P.ConstraintSpec("brightness", ">=", 0.0)])
    stats = K.refit_stats(pipe, p, n=4, seed=0, batch=2)
    mean, std = stats["brightness"]
    assert np.isfinite(mean) and std > 0
    from cda_lite.sd.registry import normalizer
    assert normalizer("brightness", stats).mean == mean


def test_concepts_cli_on_the_tiny_pipeline(tmp_path):
    pytest.importorskip("diffusers")
    import json

    from cda_lite.sd.__main__ import main
    assert main(["concepts", "--preset", "table1", "--tiny", "--sets", "2", "--images", "2", "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["sets"] == 2 and set(s["mean_min"]) == {"combined prompt", "equal weights", "constrained"}
    assert all(np.isfinite(v) for m in s["mean_min"].values() for v in m.values())
    assert s["per_set"][0]["prompts"] != s["per_set"][1]["prompts"]
