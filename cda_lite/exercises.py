"""Self-checks for the "implement a piece" exercises of the book.

A student writes a function and calls ``check(name, student_fn)``: the checker runs it on cases of
its own, compares with the library's reference implementation (or with a property the answer must
have), prints a verdict that names the first failing case with expected vs got, and returns
``True``/``False``. ``list_checks()`` lists the available checks.

Example::

    from cda_lite.exercises import check
    check("ch2.tilt_linear_gaussian", my_tilt)

Used by the exercises of Chapters 2, 3, 5 and 7. The student edition (solutions removed) is made by
``tools/strip_solutions.py`` (``make student``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["check", "list_checks", "CheckFailure"]


class CheckFailure(Exception):
    """Raised inside a check when a student's answer is wrong (message: what was expected)."""


@dataclass
class _Check:
    name: str
    description: str
    signature: str
    cases: Callable  # () -> list of (case name, runner(student_fn) raising CheckFailure)


def _fmt(x) -> str:
    return np.array2string(np.asarray(x, dtype=float), precision=6, suppress_small=True, max_line_width=100,
                           threshold=12)


def _close(got, expected, what: str, rtol: float, atol: float):
    try:
        g = np.asarray(got, dtype=float)
    except (TypeError, ValueError) as err:
        raise CheckFailure(f"{what}: could not read your answer as a float array ({err})") from None
    e = np.asarray(expected, dtype=float)
    if g.shape != e.shape:
        raise CheckFailure(f"{what}: expected shape {e.shape}, got shape {g.shape}")
    if not np.all(np.isfinite(g)):
        raise CheckFailure(f"{what}: your answer contains NaN or inf: {_fmt(g)}")
    bad = ~np.isclose(g, e, rtol=rtol, atol=atol)
    if np.any(bad):
        where = ""
        if g.size > 1:
            k = tuple(int(i) for i in np.argwhere(bad)[0])
            k_str = str(k[0]) if len(k) == 1 else str(k)
            where = f" (first mismatch at index {k_str}: expected {e[k]:.6g}, got {g[k]:.6g})"
        raise CheckFailure(f"{what}: expected {_fmt(e)}, got {_fmt(g)}{where} (tolerance rtol={rtol:g}, atol={atol:g})")


# --------------------------------------------------------------------------- ch2
def _tilt_cases():
    from cda_lite.exact import LinearReward, tilt
    from cda_lite.gmm import GaussianMixture

    problems = [
        ("1-D N(0, 1), w = 1, λ = 0.5", [0.0], [[1.0]], [1.0], 0.5),
        ("2-D correlated Σ, w = (1, 0), λ = 1", [0.0, 0.0], [[2.0, 0.8], [0.8, 1.0]], [1.0, 0.0], 1.0),
        ("2-D shifted mean, w = (0.5, -1), λ = 2", [1.0, -2.0], [[1.0, -0.3], [-0.3, 0.5]], [0.5, -1.0], 2.0),
        ("λ = 0 (no tilt)", [0.3, 0.7], [[1.5, 0.2], [0.2, 0.4]], [1.0, 1.0], 0.0),
        ("negative λ = -1.5", [0.0, 1.0], [[1.0, 0.5], [0.5, 2.0]], [1.0, -1.0], -1.5),
    ]

    def make(mean, cov, w, lam):
        def run(fn):
            mean_a, cov_a, w_a = np.array(mean), np.array(cov), np.array(w)
            ref = tilt(GaussianMixture.gaussian(mean_a, cov_a), [LinearReward(w_a)], [lam])
            out = fn(mean_a.copy(), cov_a.copy(), w_a.copy(), lam)
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise CheckFailure("return a pair (tilted_mean, tilted_cov)")
            _close(out[0], ref.means[0], "tilted mean", 1e-6, 1e-8)
            _close(out[1], ref.covs[0], "tilted covariance", 1e-6, 1e-8)
        return run

    return [(name, make(*p)) for name, *p in problems]


# --------------------------------------------------------------------------- ch3
def _dual_problems():
    from cda_lite.exact import LinearReward, QuadraticReward
    from cda_lite.gmm import GaussianMixture

    two_modes = GaussianMixture([0.5, 0.5], [[-1.5, 0.0], [1.5, 0.0]], [np.eye(2) * 0.3] * 2)
    three_modes = GaussianMixture([0.5, 0.3, 0.2], [[-1.0, 0.0], [1.0, 1.0], [0.5, -1.5]],
                                  [np.eye(2) * 0.25, np.diag([0.4, 0.2]), np.eye(2) * 0.3])
    return [
        ("single Gaussian, one linear constraint (λ* = b / wᵀΣw = 0.5)",
         GaussianMixture.gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]]), [LinearReward([1.0, 0.0])], [0.5]),
        ("two-mode mixture, one linear constraint",
         two_modes, [LinearReward([1.0, 0.0])], [1.0]),
        ("two rewards, the second constraint inactive (λ*₂ = 0)",
         three_modes, [LinearReward([1.0, 0.0]), LinearReward([0.0, 1.0])], [0.8, -2.0]),
        ("linear + quadratic reward, both active",
         three_modes, [LinearReward([0.0, 1.0]), QuadraticReward(np.eye(2), [1.0, 0.0])], [0.5, -0.8]),
    ]


def _dual_cases():
    from cda_lite.exact import align_dual

    step_size, n_steps = 1.0, 200

    def make(gm, rewards, b):
        def run(fn):
            ref = align_dual(gm, rewards, b).lam
            got = fn(gm, list(rewards), np.array(b, dtype=float), step_size, n_steps)
            g = np.asarray(got, dtype=float)
            if g.shape == ref.shape and np.any(g < 0):
                raise CheckFailure(f"λ must stay ≥ 0 (project onto λ ≥ 0 after each step); got {_fmt(g)}")
            _close(got, ref, f"λ after {n_steps} steps of size {step_size} (vs exact λ* of align_dual)", 1e-3, 1e-3)
        return run

    return [(name, make(gm, r, b)) for name, gm, r, b in _dual_problems()]


def dual_ascent_reference(gm, rewards, thresholds, step_size: float, n_steps: int) -> np.ndarray:
    """Projected dual ascent for UR-A: λ ← max(0, λ + η (b − E_{q_λ}[r])), from λ = 0 (Chapter 3).

    The gradient of the dual D(λ) = λᵀb − log Z(λ) is b − E_{q_λ}[r], computed exactly with
    :func:`cda_lite.exact.tilt`. A reference solution of the Chapter 3 exercise.
    """
    from cda_lite.exact import expected_rewards, tilt

    rewards = list(rewards)
    b = np.asarray(thresholds, dtype=float)
    lam = np.zeros(len(rewards))
    for _ in range(int(n_steps)):
        lam = np.maximum(0.0, lam + step_size * (b - expected_rewards(tilt(gm, rewards, lam), rewards)))
    return lam


# --------------------------------------------------------------------------- ch5
def _lemma2_cases():
    from cda_lite import schedules
    from cda_lite.kl import lemma2_weights

    scheds = [
        ("linear T=100, β 1e-4 → 0.02", schedules.linear(100, 1e-4, 0.02)),
        ("linear T=10, β 1e-4 → 0.05", schedules.linear(10, 1e-4, 0.05)),
        ("cosine T=50", schedules.cosine(50)),
    ]

    def make(s):
        def run(fn):
            got = fn(s)
            ref = lemma2_weights(s)
            _close(got, ref, "weights β_t / (2(1−ᾱ_t)), t = 0..T−1", 1e-9, 0.0)
        return run

    return [(name, make(s)) for name, s in scheds]


# --------------------------------------------------------------------------- ch7
class _FixedUniform:
    """Stands in for a numpy Generator whose ``random`` always returns ``u``."""

    def __init__(self, u: float):
        self.u = u

    def random(self, shape):
        return np.full(shape, self.u)


def systematic_resampling_reference(weights, u: float) -> np.ndarray:
    """Systematic resampling with a given uniform ``u`` ∈ [0, 1): the points (u + k)/N, k = 0..N−1,
    each pick the particle whose cumulative-weight interval contains it. Wraps
    :func:`cda_lite.inference.smc.systematic_resample` (Chapter 7)."""
    from cda_lite.inference.smc import systematic_resample

    return systematic_resample(np.asarray(weights, dtype=float), _FixedUniform(float(u)))


def _resampling_cases():
    rng = np.random.default_rng(7)
    w_rand = rng.gamma(0.5, size=12)
    w_zero = np.array([0.0, 3.0, 0.0, 1.0, 0.0, 4.0])
    cases = [
        ("equal weights, N = 5, u = 0.3 (must be the identity)", np.ones(5), 0.3),
        ("equal weights, N = 4, u = 0: points on interval ends [a, b) pick the next particle",
         np.ones(4), 0.0),
        ("one particle has all the weight", np.array([0.0, 0.0, 1.0, 0.0]), 0.9),
        ("random weights (not normalised), N = 12, u = 0.05", w_rand, 0.05),
        ("random weights (not normalised), N = 12, u = 0.95", w_rand, 0.95),
        ("zero-weight particles, u = 0.5", w_zero, 0.5),
    ]

    def make(w, u):
        def run(fn):
            ref = systematic_resampling_reference(w, u)
            got = np.asarray(fn(np.array(w, dtype=float), u))
            if got.shape != ref.shape:
                raise CheckFailure(f"expected {ref.shape[0]} indices, got shape {got.shape}")
            if not np.issubdtype(got.dtype, np.integer):
                raise CheckFailure(f"indices must be integers, got dtype {got.dtype}")
            if not np.array_equal(got, ref):
                raise CheckFailure(f"indices: expected {ref.tolist()}, got {got.tolist()}")
        return run

    out = [(name, make(w, u)) for name, w, u in cases]

    def unbiased(fn):
        # Averaged over a fine grid of u, particle j is copied N ŵ_j times, and every single draw
        # copies it ⌊N ŵ_j⌋ or ⌈N ŵ_j⌉ times.
        w = w_rand
        N = len(w)
        target = N * w / w.sum()
        grid = (np.arange(2000) + 0.5) / 2000
        counts = np.array([np.bincount(np.asarray(fn(w.copy(), u)).astype(int), minlength=N)[:N] for u in grid])
        low, high = np.floor(target - 1e-9), np.ceil(target + 1e-9)
        bad = np.argwhere((counts < low) | (counts > high))
        if len(bad):
            k, j = bad[0]
            raise CheckFailure(f"with u = {grid[k]:.4f}, particle {j} was copied {counts[k, j]} times; systematic "
                               f"resampling copies it ⌊Nŵ⌋ = {low[j]:g} or ⌈Nŵ⌉ = {high[j]:g} times")
        _close(counts.mean(0), target, "mean copies per particle over u ∈ [0, 1) (must be N·ŵ)", 0.0, 2e-3)

    out.append(("unbiasedness: E_u[copies of j] = N ŵ_j, each draw ⌊N ŵ_j⌋ or ⌈N ŵ_j⌉", unbiased))
    return out


# --------------------------------------------------------------------------- registry
_CHECKS = {c.name: c for c in [
    _Check("ch2.tilt_linear_gaussian",
           "tilt N(μ, Σ) by r(x) = wᵀx with weight λ: return (tilted mean, tilted covariance)",
           "fn(mean, cov, w, lam) -> (mean, cov)", _tilt_cases),
    _Check("ch3.dual_ascent",
           "projected dual ascent for UR-A, λ ← max(0, λ + η(b − E_{q_λ}[r])) from λ = 0; compared with λ*",
           "fn(gm, rewards, thresholds, step_size, n_steps) -> lam (m,); called with step_size=1, n_steps=200",
           _dual_cases),
    _Check("ch5.lemma2_weights",
           "Lemma 2's per-step weights β_t / (2(1 − ᾱ_t)) for t = 0..T−1 of a schedule",
           "fn(schedule) -> weights (T,)", _lemma2_cases),
    _Check("ch7.systematic_resampling",
           "systematic resampling: indices picked by the points (u + k)/N from (unnormalised) weights",
           "fn(weights (N,), u in [0, 1)) -> integer indices (N,)", _resampling_cases),
]}


def list_checks(verbose: bool = True) -> dict[str, str]:
    """Names of the available checks with one-line descriptions (printed unless ``verbose=False``)."""
    if verbose:
        for c in _CHECKS.values():
            print(f"{c.name:28s} {c.description}\n{'':28s} signature: {c.signature}")
    return {c.name: c.description for c in _CHECKS.values()}


def check(name: str, student_fn: Callable, verbose: bool = True) -> bool:
    """Run the check ``name`` on ``student_fn``; print a verdict and return True if every case passes.

    The verdict names the first failing case and shows expected vs got (or the exception raised).
    """
    if name not in _CHECKS:
        raise ValueError(f"name: unknown check {name!r}; available: {', '.join(_CHECKS)}")
    if not callable(student_fn):
        raise ValueError(f"student_fn: expected a function, got {type(student_fn).__name__}")
    c = _CHECKS[name]
    cases = c.cases()
    for i, (case, run) in enumerate(cases, 1):
        try:
            run(student_fn)
        except CheckFailure as err:
            if verbose:
                print(f"✗ {name}: case {i}/{len(cases)} failed: {case}\n  {err}")
            return False
        except Exception as err:  # the student's code raised: report it with the case
            if verbose:
                print(f"✗ {name}: case {i}/{len(cases)} failed: {case}\n  your function raised "
                      f"{type(err).__name__}: {err}\n  (expected signature: {c.signature})")
            return False
    if verbose:
        print(f"✓ {name}: all {len(cases)} cases passed")
    return True
