"""The power-law fitter: a literal transcription of WeightWatcher 0.7.7's fit (the rule stated in
ww_spectral/fit.py's docstring, as O(n^2) loops) as the reference, closed forms, degenerate input,
clip_xmax and the Hill estimator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ww_spectral.fit import PowerLawFit, fit_power_law, hill_alpha


def reference_fit(evals: np.ndarray) -> tuple[float, float, int]:
    """WW 0.7.7's fit step by step, with Python loops: drop eigenvalues <= 1e-5; every value but the last is
    a candidate xmin; MLE alpha = 1 + k / sum(log(x/xmin)) (small-n rule below 20 values: (k-1)/..., tails
    of at least 8); KS distance D of the tail; the first candidate with the smallest D wins: (alpha, D, k)."""
    x = np.sort(np.asarray(evals, dtype=np.float64))
    x = x[x > 1e-5]
    n = len(x)
    small = n < 20
    best = (None, 2.0, None)
    for i in range(n - 1):
        k = n - i
        s = sum(math.log(x[j] / x[i]) for j in range(i, n))
        if small:
            if k < 8 or s <= 1e-12:
                continue
            alpha = 1 + (k - 1) / s
        else:
            alpha = 1 + k / s if s > 0 else math.inf
        if not (alpha > 1 and math.isfinite(alpha)):
            dks = 1.0
        else:
            dks = max(abs(1 - (x[i + t] / x[i]) ** (1 - alpha) - t / k) for t in range(k))
        if dks < best[1]:
            best = (alpha, dks, k)
    return best


@pytest.mark.parametrize("n", [9, 12, 19, 20, 31, 150])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_fit_equals_the_definition(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.pareto(1.5 + seed, size=n) + 1.0
    alpha, dks, k = reference_fit(x)
    f = fit_power_law(x)
    assert f.status == "success" and f.fit_status == "ok"
    assert f.alpha == pytest.approx(alpha, rel=1e-10)
    ks = f.D
    assert ks == pytest.approx(dks, rel=1e-10, abs=1e-14)
    assert f.num_pl_spikes == k
    assert f.sigma == pytest.approx((alpha - 1) / math.sqrt(k), rel=1e-10)
    assert f.xmax == x.max()
    assert f.raw_alpha == f.alpha and f.num_fingers == 0


def test_tiny_eigenvalues_are_dropped_but_counted_nowhere():
    rng = np.random.default_rng(3)
    x = rng.pareto(2.0, size=100) + 1.0
    f1 = fit_power_law(x)
    f2 = fit_power_law(np.concatenate([x, np.zeros(50), np.full(5, 1e-5)]))
    assert (f1.alpha, f1.D, f1.num_pl_spikes) == (f2.alpha, f2.D, f2.num_pl_spikes)


def test_exact_power_law_quantiles_recover_alpha():
    # deterministic sample: x_j = (1 - u_j)^(-1/(alpha-1)) at u_j = (j + 0.5)/n, a perfect Pareto(alpha)
    n, alpha = 4000, 3.0
    u = (np.arange(n) + 0.5) / n
    x = (1 - u) ** (-1 / (alpha - 1))
    f = fit_power_law(x)
    assert f.alpha == pytest.approx(alpha, abs=0.05)
    assert f.D < 0.02


@pytest.mark.parametrize(
    "evals, code",
    [
        (np.array([]), "too_few_evals"),
        (np.array([3.0]), "too_few_evals"),
        (np.zeros(50), "too_few_evals"),
        (np.full(40, 2.0), "degenerate_tail"),
        (np.array([1.0, 2.0, np.nan, 3.0] * 10), "nonfinite"),
        (np.array([1.0, np.inf] * 15), "nonfinite"),
    ],
)
def test_degenerate_input_fails_cleanly(evals, code):
    for ff in (None, "clip_xmax"):
        f = fit_power_law(evals, fix_fingers=ff)
        assert isinstance(f, PowerLawFit)
        assert f.status == "failed" and f.fit_status == code
        assert math.isnan(f.alpha) and math.isnan(f.D) and f.num_pl_spikes == 0
        assert f.warning == ""  # never 'over-trained' for a failed fit (WW's bug)


def test_small_n_rule_two_and_three_values():
    # n = 2: no tail of 8 -> WW's fallback on the whole sample, bias-corrected: 1 + 1/ln(x1/x0)
    f = fit_power_law(np.array([1.0, math.e]))
    assert f.status == "success" and f.alpha == pytest.approx(2.0) and f.num_pl_spikes == 2


def test_warning_labels():
    base = dict(xmin=1.0, xmax=2.0, D=0.1, sigma=0.1, num_pl_spikes=5, num_fingers=0, raw_alpha=1.0,
                status="success", fit_status="ok")
    assert PowerLawFit(alpha=1.5, **base).warning == "over-trained"
    assert PowerLawFit(alpha=6.5, **base).warning == "under-trained"
    assert PowerLawFit(alpha=3.0, **base).warning == ""


def test_clip_xmax_keeps_a_clean_power_law():
    # a perfect alpha = 3.5 tail has no fingers: every refit stays within 1.0 of the raw alpha
    u = (np.arange(2000) + 0.5) / 2000
    x = (1 - u) ** (-1 / 2.5)
    raw = fit_power_law(x)
    clipped = fit_power_law(x, fix_fingers="clip_xmax")
    assert clipped.num_fingers == 0
    assert clipped.raw_alpha == raw.alpha == clipped.alpha
    # (agreement with WW's fit_clipped_powerlaw, num_fingers included, is in test_parity_ww.py)


def test_clip_xmax_too_few_values_fails_like_ww():
    f = fit_power_law(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), fix_fingers="clip_xmax")
    assert f.status == "failed" and f.fit_status == "too_few_evals"


def test_bad_fix_fingers_value():
    with pytest.raises(ValueError, match="clip_xmax"):
        fit_power_law(np.arange(1, 30.0), fix_fingers="xmin_peak")


def test_hill_alpha_closed_form():
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])  # n=6: xmin = x[3] = 8, tail 8,16,32 (k=3)
    expected = 1 + 3 / (math.log(1) + math.log(2) + math.log(4))
    assert hill_alpha(x) == pytest.approx(expected)
    assert hill_alpha(np.concatenate([x, np.zeros(4)])) == pytest.approx(expected)  # zeros dropped
    assert math.isnan(hill_alpha(np.array([5.0])))
    assert math.isnan(hill_alpha(np.full(10, 3.0)))
    assert math.isnan(hill_alpha(np.array([1.0, np.nan, 3.0])))


def test_large_n_is_fast_enough():
    import time

    x = np.random.default_rng(0).pareto(1.5, size=8000) + 1
    t = time.perf_counter()
    f = fit_power_law(x)
    assert f.status == "success"
    assert time.perf_counter() - t < 5.0
