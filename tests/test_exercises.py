"""Self-checks of cda_lite.exercises: each passes the library's reference and fails wrong answers,
naming the failing case, against references computed independently; tools/strip_solutions.py removes solutions
and keeps everything else."""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cda_lite import exercises as ex
from cda_lite.constraints import DualAscent, project_simplex
from cda_lite.exact import LinearReward, expected_rewards, tilt
from cda_lite.gmm import GaussianMixture
from cda_lite.inference.smc import systematic_resample
from cda_lite.kl import lemma2_weights
from cda_lite.sampling import sample

ROOT = Path(__file__).resolve().parent.parent


def _strip_tool():
    """tools/strip_solutions.py (a script, not a package module) loaded from its file."""
    spec = importlib.util.spec_from_file_location("strip_solutions", ROOT / "tools" / "strip_solutions.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(name, fn, capsys):
    ok = ex.check(name, fn)
    return ok, capsys.readouterr().out


# ------------------------------------------------------------------ ch2.tilt_linear_gaussian
def tilt_right(mean, cov, w, lam):
    return mean + lam * cov @ w, cov


def tilt_no_cov(mean, cov, w, lam):  # forgets Σ: right only when Σ = I
    return mean + lam * w, cov


def tilt_wrong_sign(mean, cov, w, lam):
    return mean - lam * cov @ w, cov


def tilt_shrinks_cov(mean, cov, w, lam):  # a linear tilt does not change the covariance
    return mean + lam * cov @ w, cov / (1 + lam ** 2)


def test_tilt_check(capsys):
    ok, out = run("ch2.tilt_linear_gaussian", tilt_right, capsys)
    assert ok and "all 5 cases passed" in out
    ok, out = run("ch2.tilt_linear_gaussian", tilt_no_cov, capsys)
    assert not ok and "case 2/5" in out and "correlated" in out and "tilted mean" in out
    ok, out = run("ch2.tilt_linear_gaussian", tilt_wrong_sign, capsys)
    assert not ok and "case 1/5" in out and "expected [0.5], got [-0.5]" in out
    ok, out = run("ch2.tilt_linear_gaussian", tilt_shrinks_cov, capsys)
    assert not ok and "case 1/5" in out and "tilted covariance" in out


# ------------------------------------------------------------------ ch1
def ddpm_step(x, eps, t, s):
    ab = s.alphas_cumprod
    prev = ab[t - 1] if t > 0 else 1.0
    return (x - s.betas[t] / math.sqrt(1 - ab[t]) * eps) / math.sqrt(s.alphas[t]), math.sqrt((1 - prev) / (1 - ab[t]) * s.betas[t])


def my_ddpm(eps_model, schedule, n, seed, noise_last=False, float32=False):
    dtype = torch.float32 if float32 else torch.float64
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=gen, dtype=dtype)
    for t in range(schedule.T - 1, -1, -1):
        mean, std = ddpm_step(x, eps_model(x, t), t, schedule)
        if std > 0 or noise_last:
            x = mean + std * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        else:
            x = mean
    return x


def test_ddpm_sampler_check(capsys):
    ok, out = run("ch1.ddpm_sampler", my_ddpm, capsys)
    assert ok and "all 3 cases passed" in out
    # The library's sampler (η = 1) is another implementation and passes too.
    lib = lambda m, s, n, seed: sample(m, s, (n, 2), eta=1.0, seed=seed, dtype=torch.float64)
    assert run("ch1.ddpm_sampler", lib, capsys)[0]
    # Drawing noise at t = 0 as well shifts the generator: every sample differs.
    ok, out = run("ch1.ddpm_sampler", lambda *a: my_ddpm(*a, noise_last=True), capsys)
    assert ok  # std = 0 at t = 0, so the extra draw adds 0: the same samples (a harmless variant)
    # DDIM (η = 0) instead of DDPM: wrong samples.
    ddim = lambda m, s, n, seed: sample(m, s, (n, 2), eta=0.0, seed=seed, dtype=torch.float64)
    ok, out = run("ch1.ddpm_sampler", ddim, capsys)
    assert not ok and "case 1/3" in out and "samples (seed 0)" in out
    # Another seed order (noise first, then x_T) fails.
    def swapped(m, s, n, seed):
        return my_ddpm(m, s, n, seed + 1)
    assert not run("ch1.ddpm_sampler", swapped, capsys)[0]


def posterior_mean(gm, xt, a):
    p = gm.noised(a)
    resp = p.responsibilities(xt)
    post = np.zeros_like(xt)
    for k in range(gm.n_components):
        C = a * gm.covs[k] + (1 - a) * np.eye(2)
        gain = math.sqrt(a) * gm.covs[k] @ np.linalg.inv(C)
        post += resp[:, [k]] * (gm.means[k] + (xt - math.sqrt(a) * gm.means[k]) @ gain.T)
    return post


def test_tweedie_mixture_check(capsys):
    ok, out = run("ch1.tweedie_mixture", posterior_mean, capsys)
    assert ok and "all 4 cases passed" in out
    # The library's Tweedie estimate from the exact ε passes (another route to the same mean).
    from cda_lite.sampling import tweedie_x0

    def via_eps(gm, xt, a):
        x = torch.from_numpy(xt)
        eps = -math.sqrt(1 - a) * torch.from_numpy(gm.noised(a).score(xt))
        return tweedie_x0(x, eps, a).numpy()
    assert run("ch1.tweedie_mixture", via_eps, capsys)[0]
    # Prior weights instead of responsibilities: right only for one component (case 2 fails).
    def prior_weights(gm, xt, a):
        post = np.zeros_like(xt)
        for k in range(gm.n_components):
            C = a * gm.covs[k] + (1 - a) * np.eye(2)
            gain = math.sqrt(a) * gm.covs[k] @ np.linalg.inv(C)
            post += gm.weights[k] * (gm.means[k] + (xt - math.sqrt(a) * gm.means[k]) @ gain.T)
        return post
    ok, out = run("ch1.tweedie_mixture", prior_weights, capsys)
    assert not ok and "case 2/4" in out and "posterior mean" in out
    # xt / √ᾱ (no shrinkage towards the prior) fails at once.
    ok, out = run("ch1.tweedie_mixture", lambda gm, xt, a: xt / math.sqrt(a), capsys)
    assert not ok and "case 1/4" in out


# ------------------------------------------------------------------ ch3.dual_ascent
def ascent(gm, rewards, b, eta, n, project=True, sign=1.0, tilted=True):
    lam = np.zeros(len(rewards))
    for _ in range(n):
        q = tilt(gm, rewards, lam) if tilted else gm
        lam = lam + sign * eta * (b - expected_rewards(q, rewards))
        if project:
            lam = np.maximum(lam, 0.0)
    return lam


def chapter_dual_ascent(q, rewards, b, eta=0.05, max_steps=5000, tol=1e-10):
    """Chapter 3's function, signature and return value (λ, history) as printed in the book."""
    lam, history = np.zeros(len(rewards)), [np.zeros(len(rewards))]
    for _ in range(max_steps):
        new = np.maximum(lam + eta * (b - expected_rewards(tilt(q, rewards, lam), rewards)), 0.0)
        history.append(new)
        if np.abs(new - lam).max() < tol:
            break
        lam = new
    return new, np.array(history)


def test_dual_ascent_check(capsys):
    ok, out = run("ch3.dual_ascent", chapter_dual_ascent, capsys)
    assert ok and "all 4 cases passed" in out
    assert run("ch3.dual_ascent", ascent, capsys)[0]
    # Without the projection the inactive constraint's multiplier goes negative (case 3).
    ok, out = run("ch3.dual_ascent", lambda *a: ascent(*a, project=False), capsys)
    assert not ok and "case 3/4" in out and "inactive" in out and "λ must stay ≥ 0" in out
    # Descent instead of ascent: stuck at λ = 0 on case 1, whose λ* = 0.5.
    ok, out = run("ch3.dual_ascent", lambda *a: ascent(*a, sign=-1.0), capsys)
    assert not ok and "case 1/4" in out and "expected [0.5], got [0.]" in out
    # Gradient from the base q instead of q_λ: λ grows without bound (never converges).
    ok, out = run("ch3.dual_ascent", lambda *a: ascent(*a, tilted=False), capsys)
    assert not ok and "case 1/4" in out
    # Something the checker cannot read as λ: blamed on the return value, not on the student raising.
    ok, out = run("ch3.dual_ascent", lambda *a: {"lam": 1.0}, capsys)
    assert not ok and "your function returned dict" in out and "expected an array" in out
    assert "raised" not in out


def snis_ascent(R, b, eta, n, normalise=True):
    lam = np.zeros(R.shape[1])
    for _ in range(n):
        logw = R @ lam
        w = np.exp(logw - logw.max())
        est = w @ R / (w.sum() if normalise else len(w))
        lam = np.maximum(lam + eta * (b - est), 0.0)
    return lam


def test_snis_dual_ascent_check(capsys):
    ok, out = run("ch3.snis_dual_ascent", snis_ascent, capsys)
    assert ok and "all 3 cases passed" in out
    ok, out = run("ch3.snis_dual_ascent", lambda *a: snis_ascent(*a, normalise=False), capsys)
    assert not ok and "case 1/3" in out
    # No importance weights at all (E_q r instead of E_{q_λ} r): λ runs away.
    ok, out = run("ch3.snis_dual_ascent", lambda R, b, eta, n: np.maximum(n * eta * (b - R.mean(0)), 0), capsys)
    assert not ok and "case 1/3" in out


# ------------------------------------------------------------------ ch4
def dual_step(lam, slack, k, lr, warmup):
    ramp = min(1.0, (k + 1) / warmup) if warmup else 1.0
    return np.maximum(lam - ramp * lr * slack, 0.0)


def test_warmup_dual_step_check(capsys):
    ok, out = run("ch4.warmup_dual_step", dual_step, capsys)
    assert ok and "all 4 cases passed" in out
    # The library's DualAscent, replayed step by step, passes too.
    def lib(lam, slack, k, lr, warmup):
        d = DualAscent(len(lam), lr=lr, warmup=warmup)
        d.lam, d.step = lam.copy(), k
        return d.update(slack)
    assert run("ch4.warmup_dual_step", lib, capsys)[0]
    ok, out = run("ch4.warmup_dual_step", lambda l, s, k, lr, w: dual_step(l, s, k + 1, lr, w), capsys)  # ramp off by one
    assert not ok and "case 1/4" in out and "k = 0" in out
    ok, out = run("ch4.warmup_dual_step", lambda l, s, k, lr, w: l - lr * s, capsys)  # no ramp, no projection
    assert not ok and "case 1/4" in out
    ok, out = run("ch4.warmup_dual_step", lambda l, s, k, lr, w: np.maximum(l + lr * s, 0), capsys)  # wrong sign
    assert not ok


def kl_weight(ab_t, ab_s, eta):
    sig = eta * math.sqrt((1 - ab_s) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_s) if ab_s < 1 else 0.0
    c = math.sqrt(max(1 - ab_s - sig**2, 0.0)) - math.sqrt(ab_s) * math.sqrt(1 - ab_t) / math.sqrt(ab_t)
    return c * c / (2 * sig * sig) if sig > 0 else 0.0


def test_ddim_kl_weight_check(capsys):
    ok, out = run("ch4.ddim_kl_weight", kl_weight, capsys)
    assert ok and "all 8 cases passed" in out
    ok, out = run("ch4.ddim_kl_weight", lambda a, s, e: 2 * kl_weight(a, s, e), capsys)  # no factor ½
    assert not ok and "case 1/8" in out
    def c_without_sigma(ab_t, ab_s, eta):  # drops σ² under the square root of c_t
        sig = eta * math.sqrt((1 - ab_s) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_s) if ab_s < 1 else 0.0
        c = math.sqrt(1 - ab_s) - math.sqrt(ab_s) * math.sqrt(1 - ab_t) / math.sqrt(ab_t)
        return c * c / (2 * sig * sig) if sig > 0 else 0.0
    ok, out = run("ch4.ddim_kl_weight", c_without_sigma, capsys)
    assert not ok and "w_t" in out
    # Last step (ᾱ_s = 1, σ = 0) must give 0, not inf or an error.
    ok, out = run("ch4.ddim_kl_weight", lambda a, s, e: kl_weight(a, min(s, 1 - 1e-12), e), capsys)
    assert not ok and "case 4/8" in out


# ------------------------------------------------------------------ ch5.lemma2_weights
def lemma2_loop(s):
    """β_t / (2(1 − ᾱ_t)) with ᾱ_t = ∏_{s≤t}(1 − β_s) as a running product (written independently of
    cda_lite.kl, whose lemma2_weights is the checker's reference: passing this validates both)."""
    out, ab = [], 1.0
    for beta in s.betas.tolist():
        ab *= 1.0 - beta
        out.append(beta / (2.0 * (1.0 - ab)))
    return np.array(out)


def test_lemma2_check(capsys):
    ok, out = run("ch5.lemma2_weights", lemma2_loop, capsys)
    assert ok
    ok, out = run("ch5.lemma2_weights", lemma2_weights, capsys)  # the library's: another implementation
    assert ok and "all 3 cases passed" in out
    ok, out = run("ch5.lemma2_weights", lambda s: s.betas / (2 * (1 - s.alphas)), capsys)  # α instead of ᾱ
    assert not ok and "case 1/3" in out and "first mismatch at index 1: expected 0.375343, got 0.5" in out
    shifted = lambda s: s.betas / (2 * (1 - np.concatenate([[s.alphas_cumprod[0]], s.alphas_cumprod[:-1]])))
    ok, out = run("ch5.lemma2_weights", shifted, capsys)  # off by one in ᾱ (first weight still 0.5)
    assert not ok and "case 1/3" in out and "weights β_t" in out
    ok, out = run("ch5.lemma2_weights", lambda s: s.betas / (1 - s.alphas_cumprod), capsys)  # no factor 2
    assert not ok and "case 1/3" in out
    ok, out = run("ch5.lemma2_weights", lambda s: (s.betas / (2 * (1 - s.alphas_cumprod)))[1:], capsys)
    assert not ok and "expected shape (100,), got shape (99,)" in out


# ------------------------------------------------------------------ ch7.systematic_resampling
def systematic(w, u):
    w = np.asarray(w, float) / np.sum(w)
    c = np.cumsum(w)
    c[-1] = 1.0
    return np.searchsorted(c, (u + np.arange(len(w))) / len(w), side="right")


def multinomial_like(w, u):  # independent-looking points: not systematic, not floor/ceil
    w = np.asarray(w, float) / np.sum(w)
    c = np.cumsum(w)
    c[-1] = 1.0
    pts = np.random.default_rng(int(u * 1e6)).random(len(w))
    return np.minimum(np.searchsorted(c, pts, side="right"), len(w) - 1)


def systematic_loop(w, u):
    """Systematic resampling by walking the cumulative weights with a pointer (no searchsorted): the
    k-th point (u + k)/N picks the first particle j with w_0 + … + w_j > point."""
    w = [float(v) for v in w]
    total, n = sum(w), len(w)
    out, j, cum = [], 0, w[0] / total
    for k in range(n):
        point = (u + k) / n
        while cum <= point and j < n - 1:
            j += 1
            cum += w[j] / total
        out.append(j)
    return np.array(out)


def test_resampling_check(capsys):
    # The book's solution (normalised weights, as Exercise 7.2 promises) and the library's.
    ok, out = run("ch7.systematic_resampling", systematic, capsys)
    assert ok and "all 7 cases passed" in out
    class FixedUniform:
        def __init__(self, u):
            self.u = u

        def random(self, shape):
            return np.full(shape, self.u)
    assert run("ch7.systematic_resampling", lambda w, u: systematic_resample(w, FixedUniform(u)), capsys)[0]
    assert run("ch7.systematic_resampling", systematic_loop, capsys)[0]  # a pointer walk, written apart
    # Forgot to divide u by N: the points u + k/N run past 1 (last index clipped to N−1 by the student).
    ok, out = run("ch7.systematic_resampling",
                  lambda w, u: np.minimum(systematic(w, u * len(w)), len(w) - 1), capsys)
    assert not ok and "case 1/7" in out and "expected [0, 1, 2, 3, 4]" in out
    # Points u + k without dividing by N: all past the end of the cumulative sum.
    def no_divide(w, u):
        c = np.cumsum(w)
        return np.minimum(np.searchsorted(c, u + np.arange(len(w)), side="right"), len(w) - 1)
    ok, out = run("ch7.systematic_resampling", no_divide, capsys)
    assert not ok and "case 1/7" in out and "got [1, 4, 4, 4, 4]" in out
    # side="left": a point on an interval's end picks the particle before it.
    def left(w, u):
        w = np.asarray(w, float) / np.sum(w)
        return np.searchsorted(np.cumsum(w), (u + np.arange(len(w))) / len(w), side="left")
    ok, out = run("ch7.systematic_resampling", left, capsys)
    assert not ok and "case 2/7" in out and "expected [0, 1, 2, 3], got [0, 0, 1, 2]" in out
    ok, out = run("ch7.systematic_resampling", multinomial_like, capsys)
    assert not ok and "case 1/7" in out
    ok, out = run("ch7.systematic_resampling", lambda w, u: systematic(w, u).astype(float), capsys)
    assert not ok and "must be integers" in out


def test_unbiasedness_case_catches_a_biased_scheme(capsys):
    # Passes the fixed cases' shape/dtype but is biased: always rounds N ŵ down and pads with the
    # heaviest particle. Only the unbiasedness case (the last) can tell.
    cases = ex._CHECKS["ch7.systematic_resampling"].cases()
    name, unbiased = cases[-1]
    assert "unbiased" in name

    def floor_pad(w, u):
        w = np.asarray(w, float) / np.sum(w)
        n = np.floor(len(w) * w).astype(int)
        idx = np.repeat(np.arange(len(w)), n)
        return np.concatenate([idx, np.full(len(w) - len(idx), np.argmax(w))]).astype(int)

    with pytest.raises(ex.CheckFailure, match="copied"):
        unbiased(floor_pad)
    unbiased(systematic)


# ------------------------------------------------------------------ general behaviour
def test_list_and_errors(capsys):
    names = ex.list_checks()
    out = capsys.readouterr().out
    assert set(names) >= {"ch2.tilt_linear_gaussian", "ch3.dual_ascent", "ch5.lemma2_weights",
                          "ch7.systematic_resampling"}
    assert all(n in out for n in names)
    with pytest.raises(ValueError, match="name"):
        ex.check("ch9.nothing", tilt_right)
    with pytest.raises(TypeError, match="student_fn"):
        ex.check("ch2.tilt_linear_gaussian", 3)
    ok, out = run("ch2.tilt_linear_gaussian", lambda m, c, w: (m, c), capsys)  # wrong signature
    assert not ok and "raised TypeError" in out and "signature" in out




def test_every_check_has_cases_and_a_chapter_that_calls_it():
    chapters = "".join(p.read_text() for p in (ROOT / "book").glob("[0-9][0-9]_*.md"))
    for name in ex.list_checks(verbose=False):
        assert ex._CHECKS[name].cases(), name
        assert f'check("{name}"' in chapters, f"no chapter calls check({name!r})"


def test_timeout_and_checker_errors(capsys):
    def endless(lam, kls, lr):
        while True:
            pass
    assert ex.check("ch11.simplex_step", endless, timeout=0.5) is False
    out = capsys.readouterr().out
    assert "case 1/5" in out and "did not finish within 0.5 s" in out
    with pytest.raises(ValueError, match="timeout"):
        ex.check("ch11.simplex_step", endless, timeout=0)
    # A value the checker cannot use: "your function returned …, expected …", not "raised".
    ok, out = run("ch2.tilt_linear_gaussian", lambda m, c, w, l: m, capsys)
    assert not ok and "your function returned ndarray" in out and "expected a pair" in out
    ok, out = run("ch7.systematic_resampling", lambda w, u: None, capsys)
    assert not ok and "raised" not in out and "case 1/7" in out


def test_simplex_step_check(capsys):
    ok, out = run("ch11.simplex_step", lambda l, k, lr: project_simplex(l + lr * k), capsys)
    assert ok and "all 5 cases passed" in out
    # The hint's formula (subtract the mean of the step) is right only while nothing is clipped.
    ok, out = run("ch11.simplex_step", lambda l, k, lr: l + lr * (k - k.mean()), capsys)
    assert not ok and "case 2/5" in out and "clipped" in out
    # Clip, then renormalise: not the Euclidean projection.
    def clip_renorm(l, k, lr):
        v = np.maximum(l + lr * k, 0)
        return v / v.sum()
    ok, out = run("ch11.simplex_step", clip_renorm, capsys)
    assert not ok and "case 1/5" in out


def test_tilt_check_library_agrees(capsys):
    # The library's tilt and the checker's quadrature reference agree (two independent routes).
    def lib(mean, cov, w, lam):
        t = tilt(GaussianMixture.gaussian(mean, cov), [LinearReward(w)], [lam])
        return t.means[0], t.covs[0]
    assert run("ch2.tilt_linear_gaussian", lib, capsys)[0]


# ------------------------------------------------------------------ student edition
CHAPTER = """\
---
jupytext:
  text_representation:
    format_name: myst
---
# Title

```{code-cell} ipython3
x = 1
```

## Exercises

```{exercise-start}
:label: ch9-ex1
```
★ Change a number.
```{exercise-end}
```

```{solution-start} ch9-ex1
:class: dropdown
```
The answer is 2.
```{code-cell} ipython3
secret = 2
```
```{solution-end}
```

```{exercise} A plain exercise
:label: ch9-ex2
Compute something.
```

````{solution} ch9-ex2
:class: dropdown
```python
hidden = 3
```
````

:::{solution} ch9-ex2
colon fenced hidden text
:::

```{code-cell} ipython3
y = x + 1
```
"""


def test_strip_solutions():
    strip_solutions = _strip_tool().strip_solutions
    out = strip_solutions(CHAPTER)
    for gone in ("solution", "secret", "The answer is 2", "hidden"):
        assert gone not in out
    for kept in ("x = 1", "y = x + 1", "{exercise-start}", "{exercise-end}", "★ Change a number.",
                 "{exercise} A plain exercise", "Compute something.", "format_name: myst", "## Exercises"):
        assert kept in out
    assert "\n\n\n" not in out
    # Everything outside the solution blocks is unchanged, in order.
    assert out.startswith(CHAPTER[:CHAPTER.index("```{solution-start}")])
    assert out.endswith("```{code-cell} ipython3\ny = x + 1\n```\n")
    assert strip_solutions(out) == out
    with pytest.raises(ValueError, match="never closed"):
        strip_solutions("```{solution-start} a\n```\ntext\n")


def test_make_student_book(tmp_path):
    mod = _strip_tool()
    src = tmp_path / "src" / "book"
    src.mkdir(parents=True)
    (src / "_config.yml").write_text("execute:\n  execute_notebooks: force   # comment\n")
    (src / "ch.md").write_text(CHAPTER)
    (src / "plain.md").write_text("# No exercises\n")
    (src / "_build").mkdir()
    (src / "_build" / "junk.md").write_text("x")
    dst = tmp_path / "student" / "book"
    changed = mod.make_student_book(src, dst, execute="off")
    assert [p.name for p in changed] == ["ch.md"]
    student = (dst / "ch.md").read_text()
    assert student == mod.add_language_info(mod.strip_solutions(mod.add_starter_cells(CHAPTER)))
    assert "# Exercise 9.1: your answer" in student and "secret" not in student
    assert "format_name: myst\nlanguage_info:\n  name: python\n" in student and "secret" not in student
    assert (dst / "plain.md").read_text() == "# No exercises\n"
    assert not (dst / "_build").exists()
    assert "execute_notebooks: off   # comment" in (dst / "_config.yml").read_text()
    assert (src / "ch.md").read_text() == CHAPTER  # the source is untouched


def test_starter_cells_for_a_real_chapter():
    spec = importlib.util.spec_from_file_location("strip_solutions", ROOT / "tools" / "strip_solutions.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = (ROOT / "book" / "03_constrained_alignment.md").read_text()
    student = mod.strip_solutions(mod.add_starter_cells(text))
    tail = student[student.index("## Exercises"):]
    starters = [c for c in tail.split("```{code-cell} ipython3\n")[1:]]
    assert len(starters) == 4  # one per exercise, nothing else left in the exercises
    for cell in starters:
        compile(cell.split("\n```")[0], "starter", "exec")  # valid Python
    assert "def snis_dual_ascent(R, b, eta, n_steps):" in tail and "raise NotImplementedError" in tail
    assert '# check("ch3.snis_dual_ascent", snis_dual_ascent)' in tail
    assert "def snis_expected" not in tail and "lam_mc" not in tail  # no solution code leaks


def test_hps_score_check(capsys):
    """ch10.hps_score: the book's solution passes; a score with CLIP's logit scale fails."""
    def hps_score(model, pixel_values, input_ids):
        img_e = model.vision_model(pixel_values=pixel_values).pooler_output @ model.visual_projection.weight.T
        txt_e = model.text_model(input_ids=input_ids).pooler_output @ model.text_projection.weight.T
        return (img_e / img_e.norm(dim=-1, keepdim=True) * (txt_e / txt_e.norm(dim=-1, keepdim=True))).sum(-1)

    ok, out = run("ch10.hps_score", hps_score, capsys)
    assert ok, out
    ok, out = run("ch10.hps_score", lambda m, px, ids: m.logit_scale.exp() * hps_score(m, px, ids), capsys)
    assert not ok and "first mismatch" in out
    ok, out = run("ch10.hps_score", lambda m, px, ids: hps_score(m, px, ids.flip(0)), capsys)  # prompts of other images
    assert not ok


def test_cfg_mixture_check(capsys):
    """ch11.cfg_mixture: the book's solution passes; swapped weights or plain CFG on c1 fail."""
    def cfg_mixture(unet, x, t, unc, c1, c2, guidance, lam):
        e = [unet(x, t, encoder_hidden_states=c.expand(len(x), -1, -1)).sample for c in (unc, c1, c2)]
        return e[0] + guidance * (lam * e[1] + (1 - lam) * e[2] - e[0])

    ok, out = run("ch11.cfg_mixture", cfg_mixture, capsys)
    assert ok, out
    ok, out = run("ch11.cfg_mixture", lambda u, x, t, a, b, c, g, lam: cfg_mixture(u, x, t, a, b, c, g, 1 - lam), capsys)
    assert not ok and "first mismatch" in out
    ok, out = run("ch11.cfg_mixture", lambda u, x, t, a, b, c, g, lam: cfg_mixture(u, x, t, a, b, b, g, 1.0), capsys)
    assert not ok
