"""Self-checks of cda_lite.exercises: each passes the library's reference and fails wrong answers,
naming the failing case; tools/strip_solutions.py removes solutions and keeps everything else."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cda_lite import exercises as ex
from cda_lite.exact import expected_rewards, tilt

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


# ------------------------------------------------------------------ ch3.dual_ascent
def ascent(gm, rewards, b, eta, n, project=True, sign=1.0, tilted=True):
    lam = np.zeros(len(rewards))
    for _ in range(n):
        q = tilt(gm, rewards, lam) if tilted else gm
        lam = lam + sign * eta * (b - expected_rewards(q, rewards))
        if project:
            lam = np.maximum(lam, 0.0)
    return lam


def test_dual_ascent_check(capsys):
    # The reference solution and an independent implementation both pass.
    ok, out = run("ch3.dual_ascent", ex.dual_ascent_reference, capsys)
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
    ok, out = run("ch7.systematic_resampling", systematic_loop, capsys)
    assert ok and "all 7 cases passed" in out
    # the checker's reference (the library's systematic_resample) agrees with the pointer walk
    rng = np.random.default_rng(3)
    for _ in range(200):
        w = rng.gamma(0.4, size=rng.integers(1, 15))
        w[rng.random(len(w)) < 0.2] = 0.0
        if w.sum() == 0:
            continue
        u = float(rng.random())
        np.testing.assert_array_equal(ex.systematic_resampling_reference(w, u), systematic_loop(w, u))
    assert run("ch7.systematic_resampling", systematic, capsys)[0]
    # Forgot to divide u by N: the points u + k/N run past 1 (last index clipped to N−1 by the student).
    ok, out = run("ch7.systematic_resampling",
                  lambda w, u: np.minimum(systematic(w, u * len(w)), len(w) - 1), capsys)
    assert not ok and "case 1/7" in out and "expected [0, 1, 2, 3, 4]" in out
    # Weights not normalised: the cumulative sum is not a distribution (equal weights sum to 5).
    def unnormalised(w, u):
        c = np.cumsum(w)
        return np.minimum(np.searchsorted(c, (u + np.arange(len(w))) / len(w), side="right"), len(w) - 1)
    ok, out = run("ch7.systematic_resampling", unnormalised, capsys)
    assert not ok and "case 1/7" in out and "got [0, 0, 0, 0, 0]" in out
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
    with pytest.raises(ValueError, match="student_fn"):
        ex.check("ch2.tilt_linear_gaussian", 3)
    ok, out = run("ch2.tilt_linear_gaussian", lambda m, c, w: (m, c), capsys)  # wrong signature
    assert not ok and "raised TypeError" in out and "signature" in out


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
    assert student == mod.add_language_info(mod.strip_solutions(CHAPTER))
    assert "format_name: myst\nlanguage_info:\n  name: python\n" in student and "secret" not in student
    assert (dst / "plain.md").read_text() == "# No exercises\n"
    assert not (dst / "_build").exists()
    assert "execute_notebooks: off   # comment" in (dst / "_config.yml").read_text()
    assert (src / "ch.md").read_text() == CHAPTER  # the source is untouched
