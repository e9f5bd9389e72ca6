"""The cases of the exercise checks (:mod:`cda_lite.exercises`), one builder per check.

Each builder returns a list of ``(case name, runner)``; ``runner(student_fn)`` calls the student's
function through :func:`~cda_lite.exercise_compare.call` and raises
:class:`~cda_lite.exercise_compare.CheckFailure` with expected vs got when the answer is wrong. Every reference below is computed another way than the library function the exercise
asks the student to re-implement (quadrature, finite differences, bisection, a plain loop), so a
check never compares a library function with itself.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from cda_lite.exercise_compare import CheckFailure, call, close, describe, fmt, to_array

__all__ = ["BUILDERS"]


# --------------------------------------------------------------------------- shared helpers
def _random_mixture(rng, k: int, dim: int = 2):
    from cda_lite.gmm import GaussianMixture

    weights = rng.dirichlet(np.ones(k) * 2)
    means = rng.normal(scale=1.5, size=(k, dim))
    covs = []
    for _ in range(k):
        a = rng.normal(size=(dim, dim)) * 0.4
        covs.append(a @ a.T + 0.1 * np.eye(dim))
    return GaussianMixture(weights, means, covs)


def _log_noised_density(gm, x, abar):
    """log p_t(x) of the noised mixture Σ π_k N(√ᾱ μ_k, ᾱΣ_k + (1−ᾱ)I), written out with numpy."""
    out = []
    for pi, mu, cov in zip(gm.weights, gm.means, gm.covs):
        C = abar * np.asarray(cov) + (1 - abar) * np.eye(len(mu))
        d = x - math.sqrt(abar) * np.asarray(mu)
        sol = np.linalg.solve(C, d.T).T
        out.append(math.log(pi) - 0.5 * np.sum(d * sol, 1) - 0.5 * np.linalg.slogdet(2 * np.pi * C)[1])
    return logsumexp(np.stack(out, 1), axis=1)


# --------------------------------------------------------------------------- ch1
def _ddpm_reference(eps_model, schedule, n, seed):
    """Ho et al. (2020) ancestral sampling, eq. 11 with σ_t² = β̃_t, x_T ~ N(0, I), float64."""
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    x = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    abar = np.cumprod(1.0 - np.asarray(schedule.betas, dtype=float))
    for t in reversed(range(len(abar))):
        beta = float(schedule.betas[t])
        prev = abar[t - 1] if t > 0 else 1.0
        x = (x - beta / math.sqrt(1 - abar[t]) * eps_model(x, t)) / math.sqrt(1 - beta)
        var = (1 - prev) / (1 - abar[t]) * beta
        if var > 0:
            x = x + math.sqrt(var) * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    return x


def ddpm_sampler_cases():
    from cda_lite import schedules
    from cda_lite.models import ExactEps

    rng = np.random.default_rng(11)
    gm = _random_mixture(rng, 3)
    lin = schedules.linear(40, 1e-4, 0.1)
    cos = schedules.cosine(25)
    cases = [
        ("ε ≡ 0.3 x + 0.01 t, linear T = 40, 7 samples, seed 0", lambda x, t: 0.3 * x + 0.01 * t, lin, 7, 0),
        ("exact ε of a 3-mode mixture, linear T = 40, 50 samples, seed 3", ExactEps(gm, lin), lin, 50, 3),
        ("exact ε of a 3-mode mixture, cosine T = 25, 20 samples, seed 9", ExactEps(gm, cos), cos, 20, 9),
    ]

    def make(model, sched, n, seed):
        def run(fn):
            ref = _ddpm_reference(model, sched, n, seed).numpy()
            close(call(fn, model, sched, n, seed), ref, f"samples (seed {seed})", 1e-6, 1e-6)
        return run

    return [(name, make(*c)) for name, *c in cases]


def tweedie_mixture_cases():
    rng = np.random.default_rng(5)
    cases = []
    for i, (k, abar) in enumerate([(1, 0.5), (2, 0.9), (3, 0.2), (4, 0.02)]):
        gm = _random_mixture(rng, k)
        comp = rng.choice(k, size=30, p=gm.weights)
        x0 = np.stack([rng.multivariate_normal(gm.means[j], gm.covs[j]) for j in comp])
        xt = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * rng.normal(size=x0.shape)
        cases.append((f"{k}-component mixture, ᾱ = {abar}, 30 points", gm, xt, abar))

    def make(gm, xt, abar):
        def run(fn):
            # Tweedie: E[x0 | xt] = (xt + (1 − ᾱ) ∇log p_t(xt)) / √ᾱ, the score by central differences.
            h = 1e-5
            grad = np.stack([(_log_noised_density(gm, xt + h * e, abar) - _log_noised_density(gm, xt - h * e, abar))
                             / (2 * h) for e in np.eye(2)], 1)
            ref = (xt + (1 - abar) * grad) / math.sqrt(abar)
            close(call(fn, gm, xt.copy(), abar), ref, "posterior mean E[x0 | xt]", 1e-5, 1e-6)
        return run

    return [(name, make(*c)) for name, *c in cases]


# --------------------------------------------------------------------------- ch2
def _tilted_gaussian_quadrature(mean, cov, w, lam, n=60):
    """Mean and covariance of ∝ e^{λ wᵀx} N(x; μ, Σ) by Gauss–Hermite quadrature (no closed form)."""
    z, wz = np.polynomial.hermite_e.hermegauss(n)
    d = len(mean)
    grids = np.meshgrid(*([z] * d), indexing="ij")
    pts = np.stack([g.ravel() for g in grids], 1)
    logw = sum(np.log(np.meshgrid(*([wz] * d), indexing="ij")[i].ravel()) for i in range(d))
    x = mean + pts @ np.linalg.cholesky(cov).T
    logw = logw + lam * x @ w
    p = np.exp(logw - logw.max())
    p /= p.sum()
    m = p @ x
    c = (x - m).T @ ((x - m) * p[:, None])
    return m, c


def tilt_cases():
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
            ref_m, ref_c = _tilted_gaussian_quadrature(mean_a, cov_a, w_a, lam)
            out = call(fn, mean_a.copy(), cov_a.copy(), w_a.copy(), lam)
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise CheckFailure(f"your function returned {describe(out)}, expected a pair (tilted_mean, tilted_cov)")
            close(out[0], ref_m, "tilted mean", 1e-6, 1e-8)
            close(out[1], ref_c, "tilted covariance", 1e-6, 1e-8)
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
        ("two-mode mixture, one linear constraint", two_modes, [LinearReward([1.0, 0.0])], [1.0]),
        ("two rewards, the second constraint inactive (λ*₂ = 0)",
         three_modes, [LinearReward([1.0, 0.0]), LinearReward([0.0, 1.0])], [0.8, -2.0]),
        ("linear + quadratic reward, both active",
         three_modes, [LinearReward([0.0, 1.0]), QuadraticReward(np.eye(2), [1.0, 0.0])], [0.5, -0.8]),
    ]


DUAL_ETA, DUAL_STEPS = 0.2, 1000


def dual_cases():
    from cda_lite.exact import align_dual

    def make(gm, rewards, b):
        def run(fn):
            ref = align_dual(gm, rewards, b).lam  # L-BFGS-B + Newton: another algorithm than ascent
            got = call(fn, gm, list(rewards), np.array(b, dtype=float), DUAL_ETA, DUAL_STEPS)
            if isinstance(got, tuple) and len(got) == 2:  # (λ, history), as in the chapter
                got = got[0]
            g = to_array(got, "λ")
            if g.shape == ref.shape and np.any(g < 0):
                raise CheckFailure(f"λ must stay ≥ 0 (project onto λ ≥ 0 after each step); got {fmt(g)}")
            close(g, ref, f"λ after at most {DUAL_STEPS} steps of size {DUAL_ETA} (vs the exact λ*)", 1e-3, 1e-3)
        return run

    return [(name, make(gm, r, b)) for name, gm, r, b in _dual_problems()]


def _empirical_dual_max(R, b):
    """argmax_{λ≥0} λᵀb − log mean_i e^{λᵀR_i} by L-BFGS-B (the fixed point of sample-based ascent)."""
    from scipy.optimize import minimize

    def neg(lam):
        z = R @ lam
        p = np.exp(z - z.max())
        p /= p.sum()
        return -(lam @ b - (logsumexp(z) - math.log(len(z)))), -(b - p @ R)

    res = minimize(neg, np.zeros(R.shape[1]), jac=True, method="L-BFGS-B", bounds=[(0, None)] * R.shape[1],
                   options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10_000})
    return res.x


def snis_dual_cases():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 2)) @ np.array([[1.0, 0.3], [0.0, 0.8]])
    R1 = x[:, :1]
    R2 = np.stack([x[:, 0], -((x - [0.5, 0.0]) ** 2).sum(1)], 1)
    cases = [
        ("one linear reward, b = 0.6", R1, np.array([0.6])),
        ("linear + quadratic reward, both active", R2, np.array([0.4, -1.6])),
        ("second constraint inactive (λ₂ = 0)", R2, np.array([0.5, -10.0])),
    ]
    eta, steps = 0.1, 3000

    def make(R, b):
        def run(fn):
            ref = _empirical_dual_max(R, b)
            got = call(fn, R.copy(), b.copy(), eta, steps)
            close(got, ref, f"λ after {steps} steps of size {eta} (vs the maximiser of the sample dual)", 1e-3, 1e-3)
        return run

    return [(name, make(R, b)) for name, R, b in cases]


# --------------------------------------------------------------------------- ch4
def warmup_dual_cases():
    rng = np.random.default_rng(4)
    cases = [("warm-up 10, lr 0.4, 3 constraints, 25 steps", 3, 0.4, 10, 25),
             ("warm-up 1 (no ramp), lr 0.1, 2 constraints", 2, 0.1, 1, 10),
             ("warm-up 0 (off), lr 0.05, 1 constraint", 1, 0.05, 0, 10),
             ("warm-up 50 longer than the run, lr 1", 4, 1.0, 50, 15)]

    def make(m, lr, warmup, steps):
        slacks = rng.normal(size=(steps, m))
        start = np.abs(rng.normal(size=m)) * 0.2

        def run(fn):
            lam = start.copy()
            for k, s in enumerate(slacks):
                ramp = 1.0 if warmup == 0 else min(1.0, (k + 1) / warmup)
                expected = lam - ramp * lr * s
                expected[expected < 0] = 0.0
                got = call(fn, lam.copy(), s.copy(), k, lr, warmup)
                close(got, expected, f"λ after dual step k = {k}", 1e-10, 1e-12)
                lam = expected
        return run

    return [(name, make(*c)) for name, *c in cases]


def _ddim_mean(x, eps, ab_t, ab_s, sigma):
    x0 = (x - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
    return math.sqrt(ab_s) * x0 + math.sqrt(max(1 - ab_s - sigma**2, 0.0)) * eps


def ddim_kl_weight_cases():
    from cda_lite import schedules

    s = schedules.linear(100, 1e-4, 0.02)
    ab = s.alphas_cumprod
    pairs = [(ab[99], ab[94]), (ab[50], ab[45]), (ab[10], ab[5]), (ab[4], 1.0)]
    cases = [(f"η = {eta}, ᾱ_t = {a_t:.4f} → ᾱ_s = {a_s:.4f}", a_t, a_s, eta)
             for eta in (1.0, 0.5) for a_t, a_s in pairs]

    def make(ab_t, ab_s, eta):
        def run(fn):
            var = eta**2 * (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)  # DDIM's σ_t² (Song et al. 2021, eq. 16)
            sigma = math.sqrt(max(var, 0.0))
            # KL between the two steps' Gaussians per unit ‖δ‖²: c_t is the step mean's slope in ε.
            c = _ddim_mean(0.0, 1.0, ab_t, ab_s, sigma) - _ddim_mean(0.0, 0.0, ab_t, ab_s, sigma)
            ref = c * c / (2 * var) if var > 0 else 0.0
            close(call(fn, float(ab_t), float(ab_s), eta), ref, "w_t = c_t² / (2σ_t²)", 1e-8, 1e-12)
        return run

    return [(name, make(*c)) for name, *c in cases]


# --------------------------------------------------------------------------- ch5
def lemma2_cases():
    from cda_lite import schedules

    scheds = [("linear T=100, β 1e-4 → 0.02", schedules.linear(100, 1e-4, 0.02)),
              ("linear T=10, β 1e-4 → 0.05", schedules.linear(10, 1e-4, 0.05)),
              ("cosine T=50", schedules.cosine(50))]

    def make(s):
        def run(fn):
            ref, keep = [], 1.0
            for beta in s.betas:  # ᾱ_t as a running product, written out
                keep *= 1.0 - beta
                ref.append(beta / (2 * (1 - keep)))
            close(call(fn, s), ref, "weights β_t / (2(1−ᾱ_t)), t = 0..T−1", 1e-9, 0.0)
        return run

    return [(name, make(s)) for name, s in scheds]


# --------------------------------------------------------------------------- ch7
def _systematic_loop(w_hat, u):
    """Systematic resampling written as a two-pointer walk over the cumulative weights."""
    n = len(w_hat)
    out, j, cum = [], 0, w_hat[0]
    for k in range(n):
        point = (u + k) / n
        while j < n - 1 and point >= cum:
            j += 1
            cum += w_hat[j]
        out.append(j)
    return np.array(out)


def resampling_cases():
    rng = np.random.default_rng(7)
    w_rand = rng.gamma(0.5, size=12)
    w_rand /= w_rand.sum()
    w_zero = np.array([0.0, 3.0, 0.0, 1.0, 0.0, 4.0]) / 8
    cases = [
        ("equal weights, N = 5, u = 0.3 (must be the identity)", np.full(5, 0.2), 0.3),
        ("equal weights, N = 4, u = 0: points on interval ends [a, b) pick the next particle",
         np.full(4, 0.25), 0.0),
        ("one particle has all the weight", np.array([0.0, 0.0, 1.0, 0.0]), 0.9),
        ("random normalised weights, N = 12, u = 0.05", w_rand, 0.05),
        ("random normalised weights, N = 12, u = 0.95", w_rand, 0.95),
        ("zero-weight particles, u = 0.5", w_zero, 0.5),
    ]

    def make(w, u):
        def run(fn):
            ref = _systematic_loop(w, u)
            got = call(fn, np.array(w, dtype=float), u)
            if hasattr(got, "detach"):
                got = got.detach().cpu().numpy()
            got = np.asarray(got)
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
        w, n = w_rand, len(w_rand)
        target = n * w
        grid = (np.arange(2000) + 0.5) / 2000
        counts = np.array([np.bincount(np.asarray(call(fn, w.copy(), u)).astype(int), minlength=n)[:n] for u in grid])
        low, high = np.floor(target - 1e-9), np.ceil(target + 1e-9)
        bad = np.argwhere((counts < low) | (counts > high))
        if len(bad):
            k, j = bad[0]
            raise CheckFailure(f"with u = {grid[k]:.4f}, particle {j} was copied {counts[k, j]} times; systematic "
                               f"resampling copies it ⌊Nŵ⌋ = {low[j]:g} or ⌈Nŵ⌉ = {high[j]:g} times")
        close(counts.mean(0), target, "mean copies per particle over u ∈ [0, 1) (must be N·ŵ)", 0.0, 2e-3)

    out.append(("unbiasedness: E_u[copies of j] = N ŵ_j, each draw ⌊N ŵ_j⌋ or ⌈N ŵ_j⌉", unbiased))
    return out


# --------------------------------------------------------------------------- ch11
def _project_simplex_bisection(v):
    """Proj_Δ(v) = max(v − τ, 0) with τ found by bisection so that the entries sum to 1."""
    lo, hi = v.min() - 1.0, v.max()
    for _ in range(200):
        tau = 0.5 * (lo + hi)
        if np.maximum(v - tau, 0).sum() > 1:
            lo = tau
        else:
            hi = tau
    return np.maximum(v - 0.5 * (lo + hi), 0)


def simplex_step_cases():
    cases = [
        ("the exercise: λ = (1/3, 1/3, 1/3), KLs (0.9, 0.5, 0.4), η = 0.1", np.full(3, 1 / 3), [0.9, 0.5, 0.4], 0.1),
        ("a large step: one weight is clipped to 0", np.array([0.5, 0.3, 0.2]), [2.0, 0.1, 0.0], 1.0),
        ("all weight ends on one expert", np.array([0.25, 0.25, 0.25, 0.25]), [10.0, 0.0, 0.1, 0.2], 1.0),
        ("two experts, equal KLs (no move)", np.array([0.7, 0.3]), [0.4, 0.4], 0.5),
        ("five experts, random", np.random.default_rng(2).dirichlet(np.ones(5)), [0.3, 1.2, 0.05, 0.6, 0.9], 0.3),
    ]

    def make(lam, kls, lr):
        def run(fn):
            ref = _project_simplex_bisection(np.asarray(lam) + lr * np.asarray(kls))
            close(call(fn, np.array(lam), np.array(kls, dtype=float), lr), ref, "λ after one dual step", 1e-8, 1e-10)
        return run

    return [(name, make(*c)) for name, *c in cases]


# name: (description, signature, what the function returns, case builder)
BUILDERS = {
    "ch1.ddpm_sampler": (
        "DDPM ancestral sampling as a loop of reverse steps, x_T first, noise only where β̃_t > 0",
        "fn(eps_model, schedule, n, seed)", "samples (n, 2)", ddpm_sampler_cases),
    "ch1.tweedie_mixture": (
        "posterior mean E[x0 | xt] of a Gaussian mixture from the per-component Gaussian conditionals",
        "fn(gm, x_t (n, 2), abar)", "posterior means (n, 2)", tweedie_mixture_cases),
    "ch2.tilt_linear_gaussian": (
        "tilt N(μ, Σ) by r(x) = wᵀx with weight λ: return (tilted mean, tilted covariance)",
        "fn(mean, cov, w, lam)", "a pair (mean (d,), cov (d, d))", tilt_cases),
    "ch3.dual_ascent": (
        "projected dual ascent for UR-A, λ ← max(0, λ + η(b − E_{q_λ}[r])) from λ = 0; compared with λ*",
        f"fn(q, rewards, b, eta, max_steps), called with eta={DUAL_ETA}, max_steps={DUAL_STEPS}",
        "λ (m,), or the chapter's pair (λ, history)", dual_cases),
    "ch3.snis_dual_ascent": (
        "projected dual ascent with E_{q_λ}[r] estimated by self-normalised importance weights",
        "fn(R (N, m) rewards of base samples, b (m,), eta, n_steps)", "λ (m,)", snis_dual_cases),
    "ch4.warmup_dual_step": (
        "one dual step of Algorithm 1 with the warm-up ramp min(1, (k+1)/K_w) (K_w = 0: no ramp)",
        "fn(lam (m,), slack (m,), k, lr, warmup)", "the new λ (m,)", warmup_dual_cases),
    "ch4.ddim_kl_weight": (
        "Lemma 1's weight c_t² / (2σ_t²) of a DDIM step ᾱ_t → ᾱ_s (0 where σ_t = 0)",
        "fn(ab_t, ab_s, eta)", "a float", ddim_kl_weight_cases),
    "ch5.lemma2_weights": (
        "Lemma 2's per-step weights β_t / (2(1 − ᾱ_t)) for t = 0..T−1 of a schedule",
        "fn(schedule)", "weights (T,)", lemma2_cases),
    "ch7.systematic_resampling": (
        "systematic resampling: indices picked by the points (u + k)/N from normalised weights",
        "fn(w_hat (N,) summing to 1, u in [0, 1))", "integer indices (N,)", resampling_cases),
    "ch11.simplex_step": (
        "one projected dual step on the simplex, λ ← Proj_Δ(λ + η · KL)",
        "fn(lam (n,), kls (n,), lr)", "the new λ (n,)", simplex_step_cases),
}
