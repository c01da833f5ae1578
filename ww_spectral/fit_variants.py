"""WeightWatcher 0.7.7's other fits: fit='TPL', fit='E_TPL' and fix_fingers='xmin_peak' (with xmin_max).

WW 0.7.7 hands these to the `powerlaw` package (its powerlaw.Fit(data, xmin=..., distribution=...,
xmin_distribution=...) call); the version pip installs today (2.0) caps alpha below 3, so they are
implemented here from the definitions of powerlaw 1.4.6, the version WW was written against.

Data: the layer's eigenvalues > 1e-5 (WW's EVALS_THRESH), ascending.

xmin_peak (fix_fingers='xmin_peak', WW's fit_powerlaw):
  peak = 10 ** (left edge of the fullest of 100 bins of the histogram of log10(data)) (first maximum);
  the xmin range is (log10(0.95 * peak), xmin_max), xmin_max defaulting to 1.5 * peak. The lower end
  is WW's own expression - a log10 where a value is meant, so in practice there is no lower bound;
  AlphaPruning's `alpha_peak` copies it. Reproduced as is (XminRange.lower).

Candidates (powerlaw 1.4.6 Fit.find_xmin): the distinct data values x with lower <= x <= upper
  (the whole data when no range is given), except the largest of them. For each candidate xmin the
  tail is every data value >= xmin (k values) and:
  - fit='PL': alpha = 1 + k / sum ln(x / xmin); valid if alpha > 1; CDF F(x) = 1 - (x/xmin)^(1-alpha);
    sigma = (alpha - 1) / sqrt(k).
  - fit='TPL' (truncated power law, p(x) = x^-alpha e^(-Lambda x) / Z on x >= xmin,
    Z = Lambda^(alpha-1) Gamma(1 - alpha, Lambda xmin)): (alpha, Lambda) maximise the likelihood over
    alpha >= 1, Lambda >= 0 (powerlaw's valid range, its boundary included as a limit); F(x) =
    int_xmin^x p. sigma is NaN (powerlaw's TPL has none).
  - D = max over the distinct tail values x_(j) of |F(x_(j)) - j/k|, j = number of tail values below
    x_(j) (the empirical CDF powerlaw uses; WW's default fit uses the same for distinct values).
  The chosen xmin is the first candidate with the smallest D among the valid ones.
fit='E_TPL' = fit='TPL' with fix_fingers='xmin_peak' (WW's normalize_params).

Reported like the default fit (fit.PowerLawFit; TPL adds Lambda): alpha, xmin, D, sigma,
num_pl_spikes = #eigenvalues >= xmin, xmax = the largest eigenvalue (WW reports powerlaw's None
there), status, warning, fit_status, detail.

The TPL likelihood. With r = x / xmin, s = ln r, c = alpha - 1, u = Lambda * xmin, the mean
log-likelihood per tail value is -(m1 + ln xmin) - F(c, u), F(c, u) = c m1 + u m2 + ln J(c, u),
m1 = mean ln r, m2 = mean (r - 1), J(c, u) = int_0^inf exp(-c s - u (e^s - 1)) ds. F is convex (an
exponential family in (c, u)), so the MLE is found by Newton's method on the moments of J (computed by
composite Gauss-Legendre quadrature, ~1e-13 relative), with the two boundaries decided in closed form:
u = 0 (a pure power law) when 1/m1 > 1 and m2 >= 1 / (1/m1 - 1), and c = 0 by its KKT condition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import OptionError
from .fit import EVALS_THRESH, FINGER_THRESH, MAX_FINGERS, PowerLawFit, fit_power_law
from .records import FITS, FIX_FINGERS

PEAK_BINS = 100  # WW: np.histogram(np.log10(nz_evals), bins=100)
PEAK_LOWER = 0.95  # WW: xmin range (np.log10(0.95 * peak), xmin_max)
PEAK_UPPER = 1.5  # WW: xmin_max defaults to 1.5 * peak

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
_GL_NODES = (_GL_NODES + 1.0) / 2.0  # on [0, 1]
_GL_WEIGHTS = _GL_WEIGHTS / 2.0
_CDF_NODES, _CDF_WEIGHTS = np.polynomial.legendre.leggauss(4)
_CDF_NODES = (_CDF_NODES + 1.0) / 2.0
_CDF_WEIGHTS = _CDF_WEIGHTS / 2.0
_CDF_PIECE_VARIATION = 0.25  # ... per 4-point piece (CDF between data points)
_NEGLIGIBLE = 46.0  # integrands below exp(-46 + log-growth of (e^s - 1)^2 <= 6) of their scale are dropped
_NEWTON_MAX = 60
_U_MIN = 1e-12  # smallest Lambda * xmin Newton visits (u = 0 itself is decided in closed form)
_BATCH = 64  # candidate xmins solved at once (memory: batch x quadrature nodes)


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class XminRange:
    """WW's xmin_peak range. peak: 10**(left edge of the fullest log10-histogram bin); candidates are
    the data values with lower <= x <= upper (lower = min(log10(0.95 peak), xmin_max), upper = max)."""

    peak: float
    lower: float
    upper: float

    def contains(self, x: np.ndarray) -> np.ndarray:
        return (self.lower <= x) & (x <= self.upper)


@dataclass(frozen=True)
class TruncatedPowerLawFit(PowerLawFit):
    """A TPL fit: PowerLawFit's columns (sigma NaN) plus WW's Lambda column (exponential cut-off rate)."""

    Lambda: float = math.nan


@dataclass(frozen=True)
class TPLParams:
    """MLE of a truncated power law at a fixed xmin: alpha, Lambda, the total log-likelihood, and which
    boundary of alpha >= 1, Lambda >= 0 it sits on ('' inside, 'Lambda=0', 'alpha=1')."""

    alpha: float
    Lambda: float
    loglik: float
    boundary: str = ""


class _Failure(ValueError):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


def _failed(cls, code: str, detail: str) -> PowerLawFit:
    nan = math.nan
    return cls(alpha=nan, xmin=nan, xmax=nan, D=nan, sigma=nan, num_pl_spikes=0, num_fingers=0,
               raw_alpha=nan, status="failed", fit_status=code, detail=detail)


# ---------------------------------------------------------------- data and candidates


def _positive_sorted(evals: np.ndarray) -> np.ndarray:
    x = np.asarray(evals, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise _Failure("nonfinite", "eigenvalues contain NaN or Inf")
    return np.sort(x[x > EVALS_THRESH])


def xmin_peak_range(evals: np.ndarray, *, xmin_max: float | None = None) -> XminRange:
    """WW's fix_fingers='xmin_peak' range for these eigenvalues (see the module docstring)."""
    x = _positive_sorted(evals)
    if x.size == 0:
        raise _Failure("too_few_evals", f"no eigenvalue above {EVALS_THRESH:g}: no ESD peak")
    counts, edges = np.histogram(np.log10(x), bins=PEAK_BINS)
    peak = float(10 ** edges[int(np.argmax(counts))])
    upper = PEAK_UPPER * peak if xmin_max is None else float(xmin_max)
    if not upper > 0:
        raise OptionError(f"xmin_max={xmin_max!r}: use a positive eigenvalue, about 1.5x the ESD peak")
    low = math.log10(PEAK_LOWER * peak)
    return XminRange(peak=peak, lower=min(low, upper), upper=max(low, upper))


def _candidates(x: np.ndarray, xmin_range: XminRange | None) -> np.ndarray:
    """Indices (first occurrence in x) of powerlaw's candidate xmins: distinct values in range, but the last."""
    values, first = np.unique(x, return_index=True)
    if xmin_range is not None:
        keep = xmin_range.contains(values)
        values, first = values[keep], first[keep]
    return first[:-1]


def _ks_distance(cdf: np.ndarray, tail: np.ndarray) -> float:
    """max |F - j/k| over the distinct values of the sorted tail; cdf: F at every tail value."""
    k = tail.size
    first = np.flatnonzero(np.concatenate(([True], tail[1:] != tail[:-1])))
    return float(np.max(np.abs(cdf[first] - first / k)))


# ---------------------------------------------------------------- PL with an xmin range


def _pl_candidate(x: np.ndarray, i: int) -> tuple[float, float, bool]:
    tail = x[i:]
    k = tail.size
    logs = np.log(tail / tail[0])
    total = float(np.sum(logs))
    alpha = 1.0 + k / total if total > 0 else math.inf
    if not (math.isfinite(alpha) and alpha > 1.0):
        return math.inf, alpha, False
    cdf = 1.0 - np.exp((1.0 - alpha) * logs)
    return _ks_distance(cdf, tail), alpha, True


def fit_power_law_peak(evals: np.ndarray, *, xmin_max: float | None = None) -> PowerLawFit:
    """fit='PL', fix_fingers='xmin_peak': the power-law fit with xmin from WW's peak range."""
    try:
        x = _positive_sorted(evals)
        if x.size < 2:
            raise _Failure("too_few_evals", f"{x.size} eigenvalue(s) above {EVALS_THRESH:g}; need 2")
        rng = xmin_peak_range(x, xmin_max=xmin_max)
        best = _best_candidate(x, _candidates(x, rng), _pl_candidate)
    except _Failure as exc:
        return _failed(PowerLawFit, exc.code, exc.detail)
    i, D, alpha = best
    k = x.size - i
    return _result(PowerLawFit, evals, x, i, alpha=alpha, D=D, sigma=(alpha - 1.0) / math.sqrt(k),
                   detail=f"xmin_peak: peak {rng.peak:.6g}, candidates <= {rng.upper:.6g}")


def _best_candidate(x: np.ndarray, cands: np.ndarray, fit_one) -> tuple[int, float, object]:
    """First candidate with the smallest D among the valid ones: (index, D, fitted parameters)."""
    if cands.size == 0:
        raise _Failure("too_few_evals", "fewer than 2 distinct eigenvalues in the xmin range; nothing to fit")
    best = None
    for i in cands.tolist():
        D, params, valid = fit_one(x, i)
        if valid and (best is None or best[1] > D):
            best = (i, D, params)
    if best is None:
        raise _Failure("degenerate_tail", "no candidate xmin gives a valid fit (alpha > 1)")
    return best


def _result(cls, evals: np.ndarray, x: np.ndarray, i: int, *, alpha: float, D: float, sigma: float,
            detail: str = "", **extra) -> PowerLawFit:
    xmin = float(x[i])
    all_evals = np.asarray(evals, dtype=np.float64).ravel()
    return cls(alpha=float(alpha), xmin=xmin, xmax=float(x[-1]), D=float(D), sigma=float(sigma),
               num_pl_spikes=int(np.count_nonzero(all_evals >= xmin)), num_fingers=0, raw_alpha=float(alpha),
               status="success", fit_status="ok", detail=detail, **extra)


# ---------------------------------------------------------------- truncated power law: quadrature


def _w(s: np.ndarray, c, u) -> np.ndarray:
    """exp(-c s - u (e^s - 1)): the TPL density in s = ln(x / xmin), up to J."""
    return np.exp(-c * s - u * np.expm1(s))


def _moments(c: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each (c_i, u_i) (c >= 0, u >= _U_MIN): J = int_0^inf w ds and the mean and covariance of
    (s, t = e^s - 1) under w: (J, E s, E t, Var s, Cov(s, t), Var t), each of shape (B,).

    Composite 8-point Gauss-Legendre rule: region A, s in [0, s_A] where u e^s <= a = c + 3, panels of
    width 2/a in s; region B, y = u e^s from u e^{s_A} on (ds = dy / y), panels of width 2 in y, until the
    integrands are exp(-40) smaller. Each panel spans a log-integrand change <= 4 for all six
    integrands, where the 8-point rule errs by < 1e-13.
    Relative accuracy ~1e-15 (checked against mpmath's incomplete gamma function in the tests).
    """
    c = np.asarray(c, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    a = c + 3.0
    s_x = np.where(u < a, np.log(a) - np.log(u), 0.0)
    with np.errstate(divide="ignore"):
        s_cut = np.where(c > 2.0, _NEGLIGIBLE / np.maximum(c - 2.0, 1e-300), np.inf)  # (2 - c) s < -46
    s_a = np.minimum(s_x, s_cut)
    nodes, weights = [], []
    panels_a = int(math.ceil(float(np.max(s_a * a)) / 2.0)) if s_a.size else 0
    if panels_a > 0:
        base = (np.arange(panels_a)[:, None] + _GL_NODES[None, :]).ravel() / panels_a
        nodes.append(s_a[:, None] * base[None, :])
        weights.append((s_a / panels_a)[:, None] * np.tile(_GL_WEIGHTS, panels_a)[None, :])
    has_b = s_a < s_cut
    panels_b = int(math.ceil(_NEGLIGIBLE / 2.0)) if has_b.any() else 0
    if panels_b > 0:
        y = (u * np.exp(s_a))[:, None] + 2.0 * (np.arange(panels_b)[:, None] + _GL_NODES[None, :]).ravel()[None, :]
        nodes.append(np.log(y / u[:, None]))
        weights.append(np.where(has_b[:, None], 2.0 * np.tile(_GL_WEIGHTS, panels_b)[None, :] / y, 0.0))
    S = np.concatenate(nodes, axis=1)
    f = _w(S, c[:, None], u[:, None]) * np.concatenate(weights, axis=1)
    T = np.expm1(S)
    J = f.sum(axis=1)
    ms = np.einsum("ij,ij->i", f, S) / J
    mt = np.einsum("ij,ij->i", f, T) / J
    S -= ms[:, None]
    T -= mt[:, None]
    fs = f * S
    return (J, ms, mt, np.einsum("ij,ij->i", fs, S) / J, np.einsum("ij,ij->i", fs, T) / J,
            np.einsum("ij,ij->i", f * T, T) / J)


def _solve_tpl(m1: np.ndarray, m2: np.ndarray, c0: np.ndarray | None = None,
               u0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Minimise F(c, u) = c m1 + u m2 + ln J(c, u) over c >= 0, u >= 0 for each (m1_i, m2_i) > 0.

    Returns (c, u, F, boundary) with boundary 0 inside, 1 at u = 0, 2 at c = 0. Newton's method on the
    convex F, all problems at once, with backtracking (Armijo) steps that stay inside the domain.
    """
    m1, m2 = np.asarray(m1, dtype=np.float64), np.asarray(m2, dtype=np.float64)
    B = m1.size
    c_pl = 1.0 / m1
    with np.errstate(divide="ignore"):
        pure = (c_pl > 1.0) & (m2 >= 1.0 / np.where(c_pl > 1.0, c_pl - 1.0, 1.0))
    c = c_pl.copy() if c0 is None else np.asarray(c0, dtype=np.float64).copy()
    u = 1.0 / (1.0 + m2) if u0 is None else np.asarray(u0, dtype=np.float64).copy()
    u = np.maximum(u, _U_MIN)
    boundary = np.where(pure, 1, 0)
    c[pure], u[pure] = c_pl[pure], 0.0
    F = np.full(B, np.nan)
    F[pure] = c_pl[pure] * m1[pure] - np.log(c_pl[pure])  # J(c, 0) = 1 / c
    act = np.flatnonzero(~pure)
    mom = [np.full(B, np.nan) for _ in range(6)]

    def evaluate(idx: np.ndarray, cc: np.ndarray, uu: np.ndarray) -> tuple[np.ndarray, tuple]:
        res = _moments(cc, uu)
        return cc * m1[idx] + uu * m2[idx] + np.log(res[0]), res

    if act.size:
        F[act], res = evaluate(act, c[act], u[act])
        for arr, val in zip(mom, res):
            arr[act] = val
    for _ in range(_NEWTON_MAX):
        if not act.size:
            break
        g1, g2 = m1[act] - mom[1][act], m2[act] - mom[2][act]
        vss, vst, vtt = mom[3][act], mom[4][act], mom[5][act]
        det = vss * vtt - vst * vst
        ok = det > 0
        safe = np.where(ok, det, 1.0)
        sc = np.where(ok, -(vtt * g1 - vst * g2) / safe, -g1)
        su = np.where(ok, -(vss * g2 - vst * g1) / safe, -g2)
        dec = -(g1 * sc + g2 * su)
        moving = dec > 1e-24
        act, sc, su, dec = act[moving], sc[moving], su[moving], dec[moving]
        if not act.size:
            break
        ca, ua = c[act], u[act]
        t = np.ones(act.size)
        lim_c = (sc < 0) & (ca + sc <= 0)
        t = np.where(lim_c, np.minimum(t, 0.9 * ca / np.where(lim_c, -sc, 1.0)), t)
        lim_u = (su < 0) & (ua + su <= _U_MIN)
        t = np.where(lim_u, np.minimum(t, 0.9 * (ua - _U_MIN) / np.where(lim_u, -su, 1.0)), t)
        edge = lim_c & (ca < 1e-9)  # Newton pushes through alpha = 1: decide that boundary below
        if edge.any():
            boundary[act[edge]] = 2
            act, sc, su, dec, t = act[~edge], sc[~edge], su[~edge], dec[~edge], t[~edge]
        pending = np.arange(act.size)
        for _ls in range(40):  # backtracking; near the optimum the full step is taken (F's round-off
            if not pending.size:  # would otherwise stall the Armijo test)
                break
            idx = act[pending]
            nc = c[idx] + t[pending] * sc[pending]
            nu = np.maximum(u[idx] + t[pending] * su[pending], _U_MIN)
            nF, res = evaluate(idx, nc, nu)
            tp, dp = t[pending], dec[pending]
            accept = (nF <= F[idx] - 1e-4 * tp * dp) | ((dp < 1e-10) & (tp == 1.0)) | (tp < 1e-10)
            good = idx[accept]
            c[good], u[good], F[good] = nc[accept], nu[accept], nF[accept]
            for arr, val in zip(mom, res):
                arr[good] = val[accept]
            t[pending[~accept]] *= 0.5
            pending = pending[~accept]
        act = act[dec >= 1e-16]
    at_edge = np.flatnonzero(boundary == 2)
    if at_edge.size:  # alpha = 1: minimise over u alone; keep it when dF/dc >= 0 there (KKT)
        uu = u[at_edge].copy()
        zero = np.zeros(at_edge.size)
        for _ in range(_NEWTON_MAX):
            res = _moments(zero, uu)
            step = (m2[at_edge] - res[2]) / np.maximum(res[5], 1e-300)
            new = np.maximum(uu - step, uu / 10.0)
            if np.all(np.abs(new - uu) <= 1e-13 * uu):
                uu = new
                break
            uu = new
        res = _moments(zero, uu)
        c[at_edge], u[at_edge] = 0.0, uu
        F[at_edge] = uu * m2[at_edge] + np.log(res[0])
    return c, u, F, boundary


def _tail_stats(x: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k, m1 = mean ln(x/xmin), m2 = mean(x/xmin - 1)) of the tails x[i:], i in idx, from suffix sums."""
    n = x.size
    logx = np.log(x)
    suffix_log = np.cumsum(logx[::-1])[::-1]
    suffix_x = np.cumsum(x[::-1])[::-1]
    k = (n - idx).astype(np.float64)
    m1 = (suffix_log[idx] - k * logx[idx]) / k
    m2 = (suffix_x[idx] - k * x[idx]) / (k * x[idx])
    return k, m1, m2


def tpl_mle(tail: np.ndarray, xmin: float | None = None) -> TPLParams:
    """Maximum-likelihood truncated power law on x >= xmin (alpha >= 1, Lambda >= 0).

    tail: data values (any order; those below xmin are ignored); xmin: defaults to min(tail).
    """
    x = np.sort(np.asarray(tail, dtype=np.float64).ravel())
    xmin = float(x[0]) if xmin is None else float(xmin)
    x = x[x >= xmin]
    k = x.size
    r = x / xmin
    m1, m2 = float(np.mean(np.log(r))), float(np.mean(r - 1.0))
    if not (m1 > 0 and m2 > 0):
        raise ValueError("all tail values equal xmin: no exponent to fit")
    c, u, F, edge = _solve_tpl(np.array([m1]), np.array([m2]))
    loglik = -k * (m1 + math.log(xmin) + float(F[0]))
    return TPLParams(alpha=1.0 + float(c[0]), Lambda=float(u[0]) / xmin, loglik=loglik,
                     boundary=("", "Lambda=0", "alpha=1")[int(edge[0])])


def _cdf_in_s(s: np.ndarray, c: float, u: float, J: float) -> np.ndarray:
    """F at ascending s >= 0 (s_0 = 0): int_0^s w / J, by 4-point Gauss-Legendre pieces between the
    points, each spanning a log-integrand change of about 0.25 (more pieces across wide gaps)."""
    ds = np.diff(s)
    tau = (c + 1.0) * s + u * np.expm1(s)
    pieces = np.ceil(np.diff(tau) / _CDF_PIECE_VARIATION * np.maximum(1.0, ds))
    pieces = np.clip(pieces, 1, 100_000).astype(np.int64)
    seg = np.repeat(np.arange(ds.size), pieces)
    offset = np.arange(seg.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    h = ds[seg] / pieces[seg]
    nodes = (s[seg] + offset * h)[:, None] + h[:, None] * _CDF_NODES[None, :]
    vals = (_w(nodes, c, u) * _CDF_WEIGHTS[None, :]).sum(axis=1) * h
    return np.concatenate(([0.0], np.cumsum(np.bincount(seg, weights=vals, minlength=ds.size)))) / J


def tpl_cdf(x: np.ndarray, *, alpha: float, Lambda: float, xmin: float) -> np.ndarray:
    """CDF of the truncated power law at ascending x >= xmin (x[0] may exceed xmin)."""
    x = np.asarray(x, dtype=np.float64)
    c, u = alpha - 1.0, Lambda * xmin
    s = np.concatenate(([0.0], np.log(x / xmin)))
    J = 1.0 / c if u == 0 else float(_moments(np.array([c]), np.array([u]))[0][0])
    return _cdf_in_s(s, c, u, J)[1:]


def _tpl_search(x: np.ndarray, cands: np.ndarray) -> tuple[int, float, float, float, int]:
    """WW/powerlaw's TPL xmin search: (i, D, alpha, Lambda, boundary) of the best candidate."""
    if cands.size == 0:
        raise _Failure("too_few_evals", "fewer than 2 distinct eigenvalues in the xmin range; nothing to fit")
    k, m1, m2 = _tail_stats(x, cands)
    best = None
    for lo in range(0, cands.size, _BATCH):
        part = slice(lo, lo + _BATCH)
        c, u, _F, edge = _solve_tpl(m1[part], m2[part])
        J = np.empty_like(c)
        inner = u > 0
        if inner.any():
            J[inner] = _moments(c[inner], u[inner])[0]
        J[~inner] = 1.0 / c[~inner]
        for j, i in enumerate(cands[part].tolist()):
            tail = x[i:]
            cdf = _cdf_in_s(np.log(tail / tail[0]), float(c[j]), float(u[j]), float(J[j]))
            D = _ks_distance(cdf, tail)
            if best is None or best[1] > D:
                best = (i, D, 1.0 + float(c[j]), float(u[j]) / float(tail[0]), int(edge[j]))
    return best


def fit_truncated_power_law(evals: np.ndarray, *, xmin_range: XminRange | None = None) -> TruncatedPowerLawFit:
    """fit='TPL' (xmin_range None) or 'E_TPL' (xmin_range = xmin_peak_range(...)): see the module docstring."""
    try:
        x = _positive_sorted(evals)
        if x.size < 2:
            raise _Failure("too_few_evals", f"{x.size} eigenvalue(s) above {EVALS_THRESH:g}; need 2")
        i, D, alpha, lam, edge = _tpl_search(x, _candidates(x, xmin_range))
    except _Failure as exc:
        return _failed(TruncatedPowerLawFit, exc.code, exc.detail)
    detail = "TPL" + ("", " at the boundary Lambda=0", " at the boundary alpha=1")[edge]
    if xmin_range is not None:
        detail += f"; xmin_peak: peak {xmin_range.peak:.6g}, candidates <= {xmin_range.upper:.6g}"
    return _result(TruncatedPowerLawFit, evals, x, i, alpha=alpha, D=D, sigma=math.nan, detail=detail,
                   Lambda=lam)


# ---------------------------------------------------------------- WW's option semantics


def fit_layer(evals: np.ndarray, *, fit: str = "PL", fix_fingers: str | None = None,
              xmin_max: float | None = None, max_fingers: int = MAX_FINGERS,
              finger_thresh: float = FINGER_THRESH) -> PowerLawFit:
    """The fit WW 0.7.7's analyze(fit=..., fix_fingers=..., xmin_max=...) makes of one ESD.

    fit='PL' with fix_fingers None/'clip_xmax' is ww_spectral.fit.fit_power_law (WW's default fitter);
    'xmin_peak' and the TPL fits are the ones of this module; E_TPL = TPL with xmin_peak.
    xmin_max only applies with xmin_peak, max_fingers and finger_thresh only with clip_xmax (as in WW;
    AnalysisOptions carries all four). Raises errors.OptionError (a
    ValueError) for unknown values and WW's invalid combinations (TPL/E_TPL with clip_xmax); degenerate
    eigenvalues give a failed fit, never an exception.
    """
    if fit not in FITS:
        raise OptionError(f"fit={fit!r} is not allowed; use one of {FITS}")
    if fix_fingers not in FIX_FINGERS:
        raise OptionError(f"fix_fingers={fix_fingers!r} is not allowed; use one of {FIX_FINGERS}")
    if fit == "E_TPL":
        if fix_fingers == "clip_xmax":
            raise OptionError("fit='E_TPL' already fixes xmin at the ESD peak; drop fix_fingers='clip_xmax'")
        fit, fix_fingers = "TPL", "xmin_peak"
    if fit == "TPL":
        if fix_fingers == "clip_xmax":
            raise OptionError("fit='TPL' cannot clip xmax (WW 0.7.7 fails); use fix_fingers=None or 'xmin_peak'")
        try:
            rng = xmin_peak_range(evals, xmin_max=xmin_max) if fix_fingers == "xmin_peak" else None
        except _Failure as exc:
            return _failed(TruncatedPowerLawFit, exc.code, exc.detail)
        return fit_truncated_power_law(evals, xmin_range=rng)
    if fix_fingers == "xmin_peak":
        return fit_power_law_peak(evals, xmin_max=xmin_max)
    return fit_power_law(evals, fix_fingers=fix_fingers, max_fingers=max_fingers, finger_thresh=finger_thresh)


__all__ = ["TPLParams", "TruncatedPowerLawFit", "XminRange", "fit_layer",
           "fit_power_law_peak", "fit_truncated_power_law", "tpl_cdf", "tpl_mle", "xmin_peak_range"]
