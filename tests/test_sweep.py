"""The sweep bench (issue 12): rows, summary, figure and CLI errors without training; the committed
sweep JSONs shown in Chapters 4-5 checked against the random families and the exact solvers they
claim to come from (recomputed here, not read back)."""
import json
import os
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from cda_lite.bench import align2d, sweep
from cda_lite.bench.__main__ import main
from cda_lite.exact import align_dual, product_dual
from cda_lite.exact.problems import random_alignment, random_composition, save_problem

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "data" / "sweeps"


def test_decompose_adds_up_and_relative_error():
    d = align2d.decompose([1.0, 2.0], [1.1, 1.8], [1.2, 1.9])
    np.testing.assert_allclose(np.add(d["gap_pretraining"], d["gap_optimisation"]), [0.2, -0.1])
    assert d["rel_error"] == pytest.approx(np.hypot(0.2, 0.1) / np.hypot(1, 2))
    assert d["rel_pretraining"] == pytest.approx(np.hypot(0.1, 0.2) / np.hypot(1, 2))
    assert d["rel_optimisation"] == pytest.approx(np.hypot(0.1, 0.1) / np.hypot(1, 2))
    assert "lam_sampler" not in align2d.decompose([1.0], None, [1.0])
    d = align2d.decompose([1.0, 2.0], [1.1, 1.8], [1.2, 1.9], [1.15, 1.85])  # learned → refined → λ*(q̂)
    np.testing.assert_allclose(np.add(d["gap_dual"], d["gap_primal"]), d["gap_optimisation"])
    assert d["rel_dual"] == pytest.approx(np.hypot(0.05, 0.05) / np.hypot(1, 2))
    assert d["rel_error_refined"] == pytest.approx(np.hypot(0.15, 0.15) / np.hypot(1, 2))


def _fake_align_row(seed, profile, n_sampler, primal="pathwise"):
    lam = [1.0 + seed, 0.5]
    return {"seed": seed, "components": 2, "primal_step": primal, "lam_exact": lam, "lam_sampler": [l * 1.01 for l in lam],
            "lam_learned": [l * (1 + 0.01 * seed) for l in lam], "error": 0.01 * seed, "pretraining": 0.01,
            "optimisation": 0.01 * seed, "slack_sigma": [0.0, 0.1], "worst_slack_sigma": -0.01 * seed,
            "kl_exact": 0.3, "kl_path": 0.31, "seconds": 10.0 + seed, "seconds_algorithm": 5.0,
            "lam_chain": None, "sampler": None, "network": None}


def test_sweep_rows_summary_figure(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sweep, "_align_row", _fake_align_row)
    fig = tmp_path / "f.png"
    assert main(["sweep", "align2d", "--n", "5", "--seed", "3", "--figure", str(fig), "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == [3, 4, 5, 6, 7] and [r["seed"] for r in out["rows"]] == out["seeds"]
    s = out["summary"]
    assert s["median_error"] == pytest.approx(0.05) and s["worst_error"] == pytest.approx(0.07)
    assert s["worst_seed"] == 7 and s["worst_slack_sigma"] == pytest.approx(-0.07)
    assert s["median_seconds"] == pytest.approx(15.0) and s["max_seconds"] == pytest.approx(17.0)
    assert fig.stat().st_size > 1000
    assert "median error" in sweep.format(out)


def test_sweep_cli_errors(capsys):
    assert main(["sweep", "align2d", "--n", "0"]) == 2
    assert "--n" in capsys.readouterr().err
    assert main(["sweep", "images"]) == 2  # not a sweep: argparse's one-line error


def test_align2d_infeasible_fails_before_training(monkeypatch, tmp_path, capsys):
    """Infeasible levels: exit 2 with one line naming the constraint and its best reachable level,
    decided by the exact solver before anything is trained (pretraining would raise here)."""
    p = random_alignment(1)
    p.thresholds = np.array([p.thresholds[0], 0.5])  # −(x−c)ᵀA(x−c) ≥ 0.5 is impossible
    path = tmp_path / "bad.json"
    save_problem(p, path)

    def boom(*a, **k):
        raise AssertionError("trained before checking feasibility")

    monkeypatch.setattr(align2d, "pretrain_2d", boom)
    assert main(["align2d", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "constraint 1" in err[0] and "0" in err[0]
    # jointly infeasible: E wᵀx ≥ wᵀc + 3 forces E (x−c)ᵀA(x−c) ≥ 0.3·9 (Jensen, A ⪰ 0.3 I), above the 0.1 asked
    p.thresholds = np.array([float(p.rewards[0].w @ p.rewards[1].c) + 3.0, -0.1])
    save_problem(p, path)
    assert main(["align2d", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "best reachable" in err[0]


# ------------------------------------------------------------------ committed sweep results
def _committed(name):
    path = RESULTS / name
    if not path.exists():
        pytest.skip(f"{path} not committed")
    return json.loads(path.read_text())


@pytest.mark.parametrize("name, primal", [("align2d_fast.json", "pathwise"),
                                          ("align2d_fast_tilted_dsm.json", "tilted_dsm")])
def test_committed_align_sweep_is_consistent(name, primal):
    res = _committed(name)
    assert res["family"] == "align2d" and res["profile"] == "fast"
    assert res.get("primal_step", "pathwise") == primal  # saved before the option: the path-wise primal
    assert all(r.get("primal_step", "pathwise") == primal for r in res["rows"])
    seeds = res["seeds"]
    assert seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) >= 8  # the first N, none skipped
    assert [r["seed"] for r in res["rows"]] == seeds
    for r in res["rows"]:
        p = random_alignment(r["seed"])
        star = align_dual(p.base, p.rewards, p.thresholds).lam  # recomputed: the rows belong to these problems
        np.testing.assert_allclose(r["lam_exact"], star, rtol=1e-6, atol=1e-9)
        assert r["components"] == p.base.n_components
        d = align2d.decompose(r["lam_exact"], r["lam_sampler"], r["lam_learned"])
        assert r["error"] == pytest.approx(d["rel_error"])
        assert r["pretraining"] == pytest.approx(d["rel_pretraining"])
        assert r["optimisation"] == pytest.approx(d["rel_optimisation"])
        assert r["error"] <= r["pretraining"] + r["optimisation"] + 1e-12  # triangle inequality
        if r.get("lam_refined") is not None:
            d = align2d.decompose(r["lam_exact"], r["lam_sampler"], r["lam_learned"], r["lam_refined"])
            assert r["error_refined"] == pytest.approx(d["rel_error_refined"])
            assert (r["dual"], r["primal"]) == pytest.approx((d["rel_dual"], d["rel_primal"]))
            assert r["optimisation"] <= r["dual"] + r["primal"] + 1e-12
        assert r["worst_slack_sigma"] == pytest.approx(min(r["slack_sigma"]))
        assert 0 < r["seconds_algorithm"] <= r["seconds"]
    assert res["summary"] == pytest.approx(sweep.summarize("align2d", res["rows"]))


def test_committed_compose_sweep_is_consistent():
    res = _committed("compose2d_fast.json")
    assert res["family"] == "compose2d" and res["profile"] == "fast"
    seeds = res["seeds"]
    assert seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) >= 8
    from cda_lite.compose import product_kls

    for r in res["rows"]:
        c = random_composition(r["seed"])
        star = product_dual(c.experts)
        np.testing.assert_allclose(r["lam_exact"], star.lam, atol=1e-6)
        assert r["max_kl_exact"] == pytest.approx(star.max_kl, rel=1e-6)
        kls = product_kls(c.experts, np.asarray(r["lam_learned"]))
        np.testing.assert_allclose(r["kls_at_lam_learned"], kls, rtol=1e-6)
        assert r["max_kl_at_lam_learned"] >= star.max_kl * (1 - 1e-6)  # λ* minimises the max-KL
        assert r["error"] == pytest.approx(np.abs(np.subtract(r["lam_learned"], r["lam_exact"])).max())
        if "lam_exact_kls" in r:  # the chain λ* → exact-KL dual → exact experts → learned, recomputed
            from cda_lite.bench.compose2d import default_config
            from cda_lite.bench.sweep import _profile
            from cda_lite.compose import and_dual_exact_kls, run_rounds

            with _profile("fast"):  # the sweep's settings: the bench's Algorithm 2 dual
                cfg = default_config(seed=r["seed"])
            dual = run_rounds(and_dual_exact_kls(c.experts, cfg), cfg.average_last).lam
            np.testing.assert_allclose(r["lam_exact_kls"], dual, atol=1e-9)
            dist = lambda a, b: np.abs(np.subtract(a, b)).max()  # noqa: E731
            assert r["error_dual_schedule"] == pytest.approx(dist(dual, r["lam_exact"]))
            assert r["error_estimates"] == pytest.approx(dist(r["lam_exact_experts"], dual))
            assert r["error_experts"] == pytest.approx(dist(r["lam_learned"], r["lam_exact_experts"]))
            assert r["error"] <= r["error_dual_schedule"] + r["error_estimates"] + r["error_experts"] + 1e-12
    assert res["summary"] == pytest.approx(sweep.summarize("compose2d", res["rows"]))


def test_sweep_rows_file_resumes(monkeypatch, tmp_path):
    """Rows are appended as each problem finishes and reused by the next run (an interrupted sweep
    resumes); rows of another profile are not reused."""
    calls = []
    monkeypatch.setattr(sweep, "_align_row", lambda s, p, n, m: calls.append(s) or _fake_align_row(s, p, n, m))
    rows = tmp_path / "rows.jsonl"
    first = sweep.sweep("align2d", range(3), "fast", rows_file=str(rows))
    assert calls == [0, 1, 2] and len(rows.read_text().splitlines()) == 3
    second = sweep.sweep("align2d", range(5), "fast", rows_file=str(rows))
    assert calls == [0, 1, 2, 3, 4]
    assert second["rows"][:3] == first["rows"]
    sweep.sweep("align2d", range(1), "full", rows_file=str(rows))
    assert calls[-1] == 0 and len(calls) == 6
    # nor rows of the other primal step
    other = sweep.sweep("align2d", range(2), "fast", rows_file=str(rows), primal="tilted_dsm")
    assert calls[-2:] == [0, 1] and other["primal_step"] == "tilted_dsm"
    assert all(r["primal_step"] == "tilted_dsm" for r in other["rows"])
    # rows written before the option existed count as "pathwise", the preset's
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text(json.dumps({"family": "align2d", "profile": "fast", **_fake_align_row(0, "fast", 0)}
                                 ).replace(', "primal_step": "pathwise"', "") + "\n")
    n = len(calls)
    sweep.sweep("align2d", range(1), "fast", rows_file=str(legacy))
    assert len(calls) == n


def test_cost_of_lambda_against_monte_carlo():
    """The exact tilt at a learned λ: its KL against KL* agrees with a Monte-Carlo KL from the mixtures'
    own log-densities (independent of the closed form), and at λ* itself the excess is 0 and the
    active level is met exactly."""
    p = random_alignment(1)
    star = align_dual(p.base, p.rewards, p.thresholds)
    at_star = align2d.cost_of_lambda(p, star.lam)
    assert abs(at_star["kl_excess"]) < 1e-8 and abs(at_star["exact_worst_slack_sigma"]) < 1e-6
    lam = star.lam * np.array([1.2, 0.9])
    from cda_lite.exact import tilt
    t = tilt(p.base, p.rewards, lam)
    x = t.sample(400_000, seed=3)
    kl_mc = float(np.mean(t.log_prob(x) - p.base.log_prob(x)))
    cost = align2d.cost_of_lambda(p, lam)
    assert cost["kl_excess"] == pytest.approx(kl_mc / star.kl - 1, abs=0.01)
    assert abs(cost["kl_excess"]) > 0.02  # away from λ* the cost shows
