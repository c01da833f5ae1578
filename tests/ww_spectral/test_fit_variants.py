"""fit='TPL' / 'E_TPL' and fix_fingers='xmin_peak' (ww_spectral/fit_variants.py).

- The TPL normalisation and CDF against mpmath's incomplete gamma function (what powerlaw uses), the
  MLE against powerlaw 2.0's Truncated_Power_Law where its alpha < 3 cap does not bind (ours reaches
  at least its likelihood), xmin_peak against powerlaw 2.0's Fit with an xmin range where every
  candidate's alpha is below 3, the TPL xmin search against powerlaw's on a short range.
- Planted truth, seeds 0-99 (slow): truncated power laws (alpha 2.0, Lambda 0.1; and 1.5 / 0.1 under a
  body that puts the ESD peak at xmin for E_TPL), Pareto tails 2.5 and 4.0 under the same body for
  xmin_peak: the mean estimates land on the planted values (tolerances below, measured spreads in
  the docstrings of the tests).
"""

from __future__ import annotations

import math
import warnings

import mpmath
import numpy as np
import pytest

from ww_spectral.errors import OptionError
from ww_spectral.fit import fit_power_law
from ww_spectral.fit_variants import (
    TruncatedPowerLawFit,
    _moments,
    fit_layer,
    fit_power_law_peak,
    fit_truncated_power_law,
    tpl_cdf,
    tpl_mle,
    xmin_peak_range,
)

SEEDS = range(100)


def sample_tpl(rng: np.random.Generator, n: int, alpha: float, lam: float, xmin: float = 1.0) -> np.ndarray:
    """n draws of p(x) ~ x^-alpha e^(-lam x) on x >= xmin: Pareto proposals thinned by e^(-lam (x - xmin))."""
    out, got = [], 0
    while got < n:
        x = xmin * (1.0 - rng.random(4 * n)) ** (-1.0 / (alpha - 1.0))
        keep = x[rng.random(x.size) < np.exp(-lam * (x - xmin))]
        out.append(keep)
        got += keep.size
    return np.concatenate(out)[:n]


def body_below(rng: np.random.Generator, n: int, xmin: float = 1.0, beta: float = 3.0) -> np.ndarray:
    """n values below xmin whose density in log x rises towards xmin (puts the ESD's peak at xmin)."""
    return xmin * np.exp(-rng.exponential(1.0 / beta, n))


# ---------------------------------------------------------------- the TPL distribution


def test_normalisation_matches_the_incomplete_gamma_function():
    mpmath.mp.dps = 60
    worst = 0.0
    cs = [0.0, 1e-4, 0.01, 0.3, 1.0, 1.5, 2.0, 3.7, 7.0, 14.0, 39.0]
    us = [1e-12, 1e-8, 1e-4, 0.01, 0.3, 1.0, 3.0, 10.0, 100.0, 1000.0]
    grid = [(c, u) for c in cs for u in us]
    J = _moments(np.array([g[0] for g in grid]), np.array([g[1] for g in grid]))[0]
    for (c, u), j in zip(grid, J):
        # int_1^inf x^-(1+c) e^(-u x) dx = u^c Gamma(-c, u); J is that times e^u
        ref = float(mpmath.mpf(u) ** c * mpmath.gammainc(-c, u) * mpmath.e ** u)
        worst = max(worst, abs(j - ref) / ref)
    assert worst < 1e-11, worst


def test_cdf_matches_the_incomplete_gamma_function():
    mpmath.mp.dps = 40
    for alpha, lam, xmin in [(1.8, 0.05, 1.0), (3.5, 2.0, 0.3), (1.05, 1e-3, 2.0)]:
        x = xmin * np.array([1.0, 1.0001, 1.3, 2.0, 7.0, 40.0, 300.0])
        g0 = mpmath.gammainc(1 - alpha, lam * xmin)
        ref = [float(1 - mpmath.gammainc(1 - alpha, lam * v) / g0) for v in x]
        np.testing.assert_allclose(tpl_cdf(x, alpha=alpha, Lambda=lam, xmin=xmin), ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize("alpha,lam", [(1.8, 0.05), (2.3, 0.2), (1.4, 0.5)])
def test_mle_matches_powerlaw_where_it_runs(alpha, lam):
    import powerlaw

    x = sample_tpl(np.random.default_rng(3), 1500, alpha, lam)
    ours = tpl_mle(x, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = powerlaw.Fit(x, xmin=1.0, verbose=0).truncated_power_law  # Nelder-Mead, tol 1e-4
    assert ours.boundary == ""
    assert ours.alpha == pytest.approx(theirs.alpha, rel=2e-3)
    assert ours.Lambda == pytest.approx(theirs.Lambda, rel=5e-3)
    # the same likelihood (ours computed with our normaliser at their parameters): ours is the maximum
    c, u, k = theirs.alpha - 1.0, theirs.Lambda, x.size
    ll_theirs = -theirs.alpha * np.log(x).sum() - u * x.sum() - k * (-u + math.log(_moments(np.array([c]),
                                                                                             np.array([u]))[0][0]))
    assert ours.loglik >= ll_theirs - 1e-9 * abs(ll_theirs)
    assert ours.loglik - ll_theirs < 1e-3  # and theirs is close to it


def _loglik(x: np.ndarray, alpha: float, lam: float, xmin: float = 1.0) -> float:
    """Total log-likelihood of a TPL on x >= xmin, normalised with mpmath's incomplete gamma function."""
    mpmath.mp.dps = 30
    z = float(mpmath.mpf(lam) ** (alpha - 1) * mpmath.gammainc(1 - alpha, lam * xmin))
    return float(-alpha * np.log(x).sum() - lam * x.sum() - x.size * math.log(z))


def test_mle_boundaries():
    rng = np.random.default_rng(0)
    # heavier than any truncated power law (a Pareto tail plus far outliers): Lambda = 0, alpha = PL MLE
    x = np.concatenate([(1.0 - rng.random(800)) ** (-1 / 2.5), [80.0, 200.0, 500.0]])
    p = tpl_mle(x, 1.0)
    assert p.boundary == "Lambda=0" and p.Lambda == 0.0
    assert p.alpha == pytest.approx(1.0 + x.size / np.log(x).sum(), rel=1e-12)
    # an exponential tail: the MLE wants alpha < 1, the valid range stops at alpha = 1
    e = 1.0 + rng.exponential(2.0, 800)
    q = tpl_mle(e, 1.0)
    assert q.boundary == "alpha=1" and q.alpha == 1.0 and q.Lambda > 0
    grid = [(a, lam) for a in np.linspace(1.0, 1.6, 13) for lam in np.linspace(0.05, 0.6, 56)]
    assert q.loglik >= max(_loglik(e, a, lam) for a, lam in grid) - 1e-9 * abs(q.loglik)
    inner = tpl_mle(sample_tpl(rng, 800, 2.0, 0.1), 1.0)
    assert inner.boundary == "" and inner.alpha > 1.0 and inner.Lambda > 0.0


# ---------------------------------------------------------------- xmin_peak and the searches vs powerlaw


def test_xmin_peak_range_is_weightwatchers():
    rng = np.random.default_rng(1)
    x = np.concatenate([body_below(rng, 500), (1.0 - rng.random(500)) ** (-1 / 1.5), np.zeros(20)])
    counts, edges = np.histogram(np.log10(np.sort(x[x > 1e-5])), bins=100)
    peak = 10 ** edges[np.argmax(counts)]
    r = xmin_peak_range(x)
    assert r.peak == pytest.approx(peak, rel=1e-15)
    assert (r.lower, r.upper) == (math.log10(0.95 * peak), 1.5 * peak)  # WW's literal (log10) lower end
    assert xmin_peak_range(x, xmin_max=2.0 * peak).upper == 2.0 * peak
    with pytest.raises(OptionError):
        xmin_peak_range(x, xmin_max=-1.0)


def test_xmin_peak_matches_powerlaw_fit_with_an_xmin_range():
    import powerlaw

    x = np.sort((1.0 - np.random.default_rng(4).random(3000)) ** (-1 / 1.2))  # peak at the lowest values
    r = xmin_peak_range(x)
    ours = fit_power_law_peak(x)
    cands = np.unique(x[(x >= r.lower) & (x <= r.upper)])[:-1]
    alphas = [1 + (x >= c).sum() / np.log(x[x >= c] / c).sum() for c in cands]
    assert min(alphas) > 1.5 and max(alphas) < 3.0  # powerlaw 2.0 only fits alpha in (1.5, 3) exactly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = powerlaw.Fit(x, xmin=(r.lower, r.upper + 1e-12), verbose=0)  # 2.0 excludes the top end
    assert ours.status == "success"
    assert ours.xmin == theirs.xmin
    assert ours.alpha == pytest.approx(theirs.alpha, rel=1e-12)
    assert abs(ours.D - theirs.D) <= 1e-9 * theirs.D
    assert ours.sigma == pytest.approx((ours.alpha - 1) / math.sqrt(np.count_nonzero(x >= ours.xmin)), rel=1e-12)


def test_tpl_search_finds_at_least_powerlaws_fit():
    import powerlaw

    rng = np.random.default_rng(6)
    x = np.sort(sample_tpl(rng, 300, 1.8, 0.1))
    lo, hi = x[0], x[3]  # three candidates (the fourth value is dropped, as powerlaw does)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = powerlaw.Fit(x, xmin=(lo, hi), xmin_distribution="truncated_power_law", verbose=0)
    from ww_spectral.fit_variants import XminRange

    ours = fit_truncated_power_law(x, xmin_range=XminRange(peak=lo, lower=lo, upper=hi))
    assert ours.D <= theirs.D + 1e-3
    assert ours.xmin == theirs.xmin or abs(ours.D - theirs.D) < 1e-3


# ---------------------------------------------------------------- options, failures


def test_fit_layer_follows_weightwatchers_options():
    rng = np.random.default_rng(2)
    x = np.concatenate([body_below(rng, 300), sample_tpl(rng, 300, 1.6, 0.1)])
    assert fit_layer(x) == fit_power_law(x)
    assert fit_layer(x, fix_fingers="clip_xmax") == fit_power_law(x, fix_fingers="clip_xmax")
    assert fit_layer(x, fix_fingers="clip_xmax", max_fingers=4, finger_thresh=0.05) == \
        fit_power_law(x, fix_fingers="clip_xmax", max_fingers=4, finger_thresh=0.05)
    e_tpl = fit_layer(x, fit="E_TPL")
    assert e_tpl == fit_layer(x, fit="TPL", fix_fingers="xmin_peak")
    assert e_tpl == fit_truncated_power_law(x, xmin_range=xmin_peak_range(x))
    assert isinstance(e_tpl, TruncatedPowerLawFit) and e_tpl.Lambda > 0 and math.isnan(e_tpl.sigma)
    assert e_tpl.xmin <= xmin_peak_range(x).upper and e_tpl.num_pl_spikes == np.count_nonzero(x >= e_tpl.xmin)
    assert e_tpl.xmax == x.max() and e_tpl.raw_alpha == e_tpl.alpha and e_tpl.warning == "over-trained"
    tpl = fit_layer(x, fit="TPL")
    assert tpl.D <= e_tpl.D + 1e-12  # the unrestricted search can only do better
    for bad in [dict(fit="TPL", fix_fingers="clip_xmax"), dict(fit="E_TPL", fix_fingers="clip_xmax"),
                dict(fit="tpl"), dict(fix_fingers="xmin_mid")]:
        with pytest.raises(OptionError):
            fit_layer(x, **bad)


@pytest.mark.parametrize("fit,ff", [("PL", "xmin_peak"), ("TPL", None), ("E_TPL", None)])
@pytest.mark.parametrize("evals,code", [(np.zeros(30), "too_few_evals"), (np.array([1.0, np.inf]), "nonfinite"),
                                        (np.full(30, 2.0), "too_few_evals")])
def test_degenerate_input_fails_with_a_code(fit, ff, evals, code):
    f = fit_layer(evals, fit=fit, fix_fingers=ff)
    assert f.status == "failed" and f.fit_status == code and math.isnan(f.alpha) and f.warning == ""


# ---------------------------------------------------------------- planted truth, 100 seeds


@pytest.mark.slow
def test_tpl_recovers_planted_exponent_and_cutoff():
    """alpha 2.0, Lambda 0.1, xmin 1, n = 500. Measured: fit='TPL' alpha 1.958 +- 0.282, Lambda 0.114 +- 0.052,
    median xmin 1.07; the MLE at the true xmin alone: alpha 1.962 +- 0.134, Lambda 0.112 +- 0.035 (the
    small-sample bias of the two-parameter MLE)."""
    fits = [fit_layer(sample_tpl(np.random.default_rng(s), 500, 2.0, 0.1), fit="TPL") for s in SEEDS]
    alpha = np.array([f.alpha for f in fits])
    lam = np.array([f.Lambda for f in fits])
    print(f"\nTPL: alpha {alpha.mean():.3f} +- {alpha.std():.3f}, Lambda {lam.mean():.4f} +- {lam.std():.4f}, "
          f"median xmin {np.median([f.xmin for f in fits]):.3f}")
    assert abs(alpha.mean() - 2.0) <= 0.1 and np.median(np.abs(alpha - 2.0)) <= 0.2
    assert abs(lam.mean() - 0.1) <= 0.025 and np.median(np.abs(lam - 0.1)) <= 0.04
    at_xmin = np.array([tpl_mle(sample_tpl(np.random.default_rng(s), 500, 2.0, 0.1), 1.0).alpha for s in SEEDS])
    print(f"TPL MLE at the true xmin: alpha {at_xmin.mean():.3f} +- {at_xmin.std():.3f}")
    assert abs(at_xmin.mean() - 2.0) <= 0.05 and at_xmin.std() <= 0.15


@pytest.mark.slow
def test_e_tpl_recovers_planted_exponent_and_cutoff_above_a_body():
    """Body of 500 values rising to xmin = 1 (the ESD peak) + TPL(1.5, 0.1) tail of 500. Measured:
    alpha 1.497 +- 0.168, Lambda 0.103 +- 0.027, median xmin 1.01."""
    fits = []
    for s in SEEDS:
        rng = np.random.default_rng(s)
        fits.append(fit_layer(np.concatenate([body_below(rng, 500), sample_tpl(rng, 500, 1.5, 0.1)]), fit="E_TPL"))
    alpha = np.array([f.alpha for f in fits])
    lam = np.array([f.Lambda for f in fits])
    print(f"\nE_TPL: alpha {alpha.mean():.3f} +- {alpha.std():.3f}, Lambda {lam.mean():.4f} +- {lam.std():.4f}")
    assert abs(alpha.mean() - 1.5) <= 0.06 and np.median(np.abs(alpha - 1.5)) <= 0.15
    assert abs(lam.mean() - 0.1) <= 0.015
    assert abs(np.median([f.xmin for f in fits]) - 1.0) <= 0.05


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [2.5, 4.0])
def test_xmin_peak_recovers_planted_exponent_above_a_body(alpha):
    """Body of 500 values rising to xmin = 1 + Pareto(alpha) tail of 500. Measured: 2.5 -> 2.521 +- 0.083,
    4.0 -> 4.023 +- 0.183."""
    est = []
    for s in SEEDS:
        rng = np.random.default_rng(s)
        x = np.concatenate([body_below(rng, 500), (1.0 - rng.random(500)) ** (-1.0 / (alpha - 1.0))])
        est.append(fit_layer(x, fix_fingers="xmin_peak").alpha)
    est = np.array(est)
    print(f"\nxmin_peak alpha {alpha}: {est.mean():.3f} +- {est.std():.3f}")
    assert abs(est.mean() - alpha) <= 0.05 * alpha
    assert np.mean(np.abs(est - alpha) <= 0.1 * alpha) >= 0.85
