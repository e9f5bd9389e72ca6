"""`python -m cda_lite.exact FILE.json`: one JSON object on stdout, the same λ as the library, and a
non-zero exit naming the constraint when a problem is infeasible."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from cda_lite import exact as E
from cda_lite.exact.problems import load_problem

ROOT = Path(__file__).resolve().parents[1]

ALIGN = {
    "base": {"weights": [0.5, 0.5], "means": [[0, 0], [2, 0]], "covs": [[[1, 0], [0, 1]], [[0.5, 0], [0, 0.5]]]},
    "rewards": [{"type": "linear", "w": [1, 0]}, {"type": "quadratic", "A": [[1, 0], [0, 1]], "c": [0, 1]}],
    "thresholds": [0.5, -2.0],
    "seed": 0,
}


def _iso(mean, var):
    return {"weights": [1.0], "means": [mean], "covs": [[[var, 0], [0, var]]]}


FIG2 = {"experts": [_iso([0.75, 0], 0.025),
                    {"weights": [0.5, 0.5], "means": [[-0.75, 0.75], [-0.75, -0.75]],
                     "covs": [[[0.025, 0], [0, 0.025]], [[0.025, 0], [0, 0.025]]]}]}
INFEASIBLE = dict(ALIGN, thresholds=[0.5, 0.0])  # E[−‖x−c‖²] ≥ 0 is impossible
FILES = {"align": ALIGN, "fig2": FIG2, "infeasible": INFEASIBLE}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run the CLI on every file at once (each run starts a Python with torch)."""
    d = tmp_path_factory.mktemp("problems")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    procs = {}
    for name, content in FILES.items():
        path = d / f"{name}.json"
        path.write_text(json.dumps(content))
        procs[name] = (path, subprocess.Popen([sys.executable, "-m", "cda_lite.exact", str(path)], env=env,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = {}
    for name, (path, p) in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        out[name] = (p.returncode, stdout, stderr, path)
    return out


def _single_json(stdout):
    lines = [l for l in stdout.splitlines() if l.strip()]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def test_alignment_output(runs):
    rc, stdout, stderr, path = runs["align"]
    assert rc == 0, stderr
    out = _single_json(stdout)
    assert set(out) == {"lam", "kl", "expected"}
    p = load_problem(path)
    ref = E.align_dual(p.base, p.rewards, p.thresholds)
    np.testing.assert_allclose(out["lam"], ref.lam, rtol=1e-9, atol=1e-12)
    assert out["kl"] == pytest.approx(ref.kl, rel=1e-9)
    # Independent check of KKT for the printed λ: integrate q e^{λᵀr} on a grid.
    ax = np.linspace(-9, 11, 401)
    X, Y = np.meshgrid(ax, ax, indexing="ij")
    x = np.stack([X.ravel(), Y.ravel()], 1)
    logq = logsumexp([math.log(0.5) + multivariate_normal([0, 0], np.eye(2)).logpdf(x),
                      math.log(0.5) + multivariate_normal([2, 0], 0.5 * np.eye(2)).logpdf(x)], axis=0)
    r = np.stack([x[:, 0], -(x[:, 0] ** 2 + (x[:, 1] - 1) ** 2)], 1)
    lam = np.array(out["lam"])
    lw = logq + r @ lam
    w = np.exp(lw - logsumexp(lw))
    er = w @ r
    np.testing.assert_allclose(out["expected"], er, atol=1e-7)
    b = np.array(ALIGN["thresholds"])
    assert np.all(er >= b - 1e-7)
    assert np.all((lam == 0) | (np.abs(er - b) < 1e-7))
    assert lam.max() > 0  # at least one constraint binds for the example
    log_z = logsumexp(lw) + math.log((ax[1] - ax[0]) ** 2)
    assert out["kl"] == pytest.approx(lam @ er - log_z, abs=1e-7)


def test_composition_output(runs):
    rc, stdout, stderr, path = runs["fig2"]
    assert rc == 0, stderr
    out = _single_json(stdout)
    assert set(out) == {"lam_and", "kls_and", "lam_or"}
    np.testing.assert_allclose(out["lam_or"], [1 / 3, 2 / 3], atol=1e-4)  # methods.md §4, Fig. 2
    lam = np.array(out["lam_and"])
    assert lam.shape == (2,) and np.all(lam >= 0) and lam.sum() == pytest.approx(1.0)
    assert out["kls_and"][0] == pytest.approx(out["kls_and"][1], rel=1e-5)  # both experts active
    # Independent truth: q_1^λ1 q_2^λ2 and its KLs integrated on a grid with scipy's densities, and the
    # min-max λ found by scanning λ_1 (grid step 1e-3): the CLI's λ is within a step of it, and its KLs
    # are the grid's.
    ax = np.linspace(-2.5, 2.5, 501)
    gx, gy = np.meshgrid(ax, ax, indexing="ij")
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    cov = 0.025 * np.eye(2)
    logq = np.stack([multivariate_normal([0.75, 0], cov).logpdf(pts),
                     np.logaddexp(multivariate_normal([-0.75, 0.75], cov).logpdf(pts),
                                  multivariate_normal([-0.75, -0.75], cov).logpdf(pts)) + math.log(0.5)])

    def kls(l1):
        lp = np.array([l1, 1 - l1]) @ logq
        lp = lp - logsumexp(lp)  # log of normalised cell masses
        cell = math.log((ax[1] - ax[0]) ** 2)
        return np.array([np.exp(lp) @ (lp - cell - lq) for lq in logq])

    coarse = np.linspace(0.01, 0.99, 99)
    c = coarse[np.argmin([kls(l).max() for l in coarse])]
    scan = np.linspace(c - 0.01, c + 0.01, 21)
    best = scan[np.argmin([kls(l).max() for l in scan])]
    assert abs(lam[0] - best) <= 1.5e-3
    np.testing.assert_allclose(out["kls_and"], kls(lam[0]), rtol=1e-4)


def test_infeasible_exits_nonzero_naming_constraint(runs):
    rc, stdout, stderr, _ = runs["infeasible"]
    assert rc != 0
    assert "constraint 1" in stdout + stderr


def test_malformed_file_exits_nonzero_naming_key(tmp_path, capsys):
    # In-process (the entry point is the same ``main``) to spare another interpreter start.
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(dict(ALIGN, colour="red")))
    assert E.main([str(path)]) != 0
    captured = capsys.readouterr()
    assert "colour" in captured.err and captured.out == ""
    assert E.main([str(tmp_path / "missing.json")]) != 0
