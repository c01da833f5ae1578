"""Marchenko-Pastur fit of an ESD's bulk, reproducing WeightWatcher 0.7.7's `mp_fit=True` columns.

Definitions (read from weightwatcher 0.7.7: WeightWatcher.mp_fit, RMT_Util.fit_density_with_range,
resid_mp, marchenko_pastur_fun, quarter_circle_fun). Input: the layer's n eigenvalues lambda (all of
them, zeros included; conv2d: all slices pooled, already scaled by 0.5), N, M with Q = N / M.

1. Rescale to mean 1: W_scale = sqrt(n) / sqrt(sum lambda); x = W_scale^2 * lambda.
2. The fitted variable is x when Q != 1, sqrt(x) when Q == 1 (quarter-circle law on singular values).
3. Empirical density: a linear-kernel KDE with bandwidth bw = 0.1,
   rho(t) = 1/(n bw) * sum_i max(0, 1 - |t - v_i| / bw), on 1000 points t = linspace(0, max v + 0.5);
   only points with rho > 0.01 are kept (WW appends a zero residual for each point with rho < 0.01).
4. Residual of a trial sigma s: r = sum over kept points of (f_s(t) - rho(t))^2, where
   - Q != 1: f_s(t) = sqrt((b - t)(t - a)) / (2 pi s^2 t / Q), a = (s (1 - Q^-1/2))^2, b = (s (1 + Q^-1/2))^2,
     0 outside [a, b] (and at t = 0); r = 1e6 * (kept points) when b < t_peak or b > max t or a > t_peak,
     t_peak = the first kept t where rho is largest;
   - Q == 1: f_s(t) = sqrt(4 - t^2) / (pi s^2), 0 for t > 2 (WW's formula: sigma only in the prefactor).
5. sigma_mp = argmin over the grid s = np.mgrid[0.05 c : 2 c : 0.01 c] (first minimum), polished by
   scipy.optimize.fmin (Nelder-Mead, its defaults) from there, where c = sqrt(max x) / (1 + Q^-1/2)
   (scipy.optimize.brute(..., finish=fmin), as WW calls it).
6. In rescaled units: bulk_max = (sigma_mp (1 + Q^-1/2))^2, bulk_min = (sigma_mp (1 - Q^-1/2))^2;
   Tracy-Widom pad TW = Q^-1/2 * bulk_max^(2/3) * M^(-2/3); num_spikes = #{x > bulk_max + sqrt(TW)};
   mp_softrank = bulk_max / max x.
7. Reported: num_spikes, sigma_mp (rescaled units), mp_softrank, W_scale, and bulk_max, bulk_min back in
   the units of lambda (divided by W_scale^2).

The same numbers as WW (bit for bit on the same eigenvalues, in the tests), at ~0.5 ms per layer
instead of WW's ~0.5 s: the KDE is computed once (it does not depend on sigma) from prefix sums of the
sorted values instead of 195 + ~20 sklearn refits; the grid is one array operation, skipping sigmas
whose residual is the penalty (Q = 1: screened in closed form, the near-minimal ones computed exactly,
`_Residual.first_min`); fmin is scipy's one-variable Nelder-Mead replayed step for step
(`_fmin_1d`) without its per-call wrapping, each of its ~20 residuals computed in preallocated
buffers (`_Residual.one`).

Failures (no positive eigenvalue, NaN/Inf, fewer than 2 eigenvalues) give NaN columns with
status 'failed' and a fit_status code, never WW's -1 values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

MP_BANDWIDTH = 0.1  # WW's bw in fit_density_with_range / resid_mp
KDE_POINTS = 1000  # WW: xde = linspace(0, max + 0.5, 1000)
KDE_THRESH = 0.01  # WW: density points below this are dropped from the residual
PENALTY = 1000.0  # WW: residual per point when the MP edges are implausible
_GRID = (0.05, 2.0, 0.01)  # WW: sigma grid as multiples of calc_sigma(Q, evals)
_FMIN_MAXFUN = 200  # scipy.optimize.fmin's default maxiter = maxfun = 200 * (one variable)

COLUMNS = ("num_spikes", "sigma_mp", "mp_softrank", "bulk_max", "bulk_min", "W_scale")


@dataclass(frozen=True)
class MPFit:
    """WeightWatcher's mp_fit columns for one ESD (see the module docstring for the definitions).

    num_spikes: eigenvalues beyond the MP bulk edge + Tracy-Widom pad (None when failed);
    sigma_mp: fitted MP scale in units where the mean eigenvalue is 1; mp_softrank: bulk_max / lambda_max;
    bulk_max, bulk_min: MP bulk edges in eigenvalue units; W_scale: sqrt(n / sum lambda);
    spike_edge: bulk_max + sqrt(TW) in rescaled units (mean eigenvalue 1); `is_spike` applies it;
    status: 'success' | 'failed'; fit_status: 'ok' | 'too_few_evals' | 'nonfinite' | 'all_zero'.
    """

    num_spikes: int | None
    sigma_mp: float
    mp_softrank: float
    bulk_max: float
    bulk_min: float
    W_scale: float
    spike_edge: float = math.nan
    status: str = "success"
    fit_status: str = "ok"
    detail: str = ""

    def is_spike(self, evals: np.ndarray) -> np.ndarray:
        """Which of `evals` (eigenvalue units) lie beyond the edge, compared exactly as num_spikes counts."""
        return (self.W_scale * self.W_scale) * np.asarray(evals, dtype=np.float64) > self.spike_edge

    def columns(self, prefix: str = "") -> dict:
        """The six WW columns, e.g. prefix='rand_' gives rand_num_spikes, rand_sigma_mp, ..."""
        return {prefix + name: getattr(self, name) for name in COLUMNS}


def _failed(code: str, detail: str) -> MPFit:
    nan = math.nan
    return MPFit(None, nan, nan, nan, nan, nan, status="failed", fit_status=code, detail=detail)


def _kde_linear(values: np.ndarray, grid: np.ndarray, bw: float) -> np.ndarray:
    """sklearn KernelDensity(kernel='linear', bandwidth=bw) density of `values` at `grid` (exact sums).

    rho(t) = 1/(n bw) * sum_{|t - v| < bw} (1 - |t - v| / bw), from prefix sums of the sorted values.
    """
    v = np.sort(values)
    n = v.size
    prefix = np.concatenate(([0.0], np.cumsum(v)))
    lo = np.searchsorted(v, grid - bw, side="right")  # first v > t - bw
    mid = np.searchsorted(v, grid, side="right")  # first v > t
    hi = np.searchsorted(v, grid + bw, side="left")  # first v >= t + bw
    n_left, n_right = mid - lo, hi - mid
    left = n_left - (n_left * grid - (prefix[mid] - prefix[lo])) / bw  # sum of 1 - (t - v)/bw, v <= t
    right = n_right - ((prefix[hi] - prefix[mid]) - n_right * grid) / bw  # sum of 1 - (v - t)/bw, v > t
    return (left + right) / (n * bw)


class _Residual:
    """WW's resid_mp(sigma, ..., allresid=False) with the KDE computed once; vectorised over sigma."""

    def __init__(self, fitted: np.ndarray, Q: float, bw: float) -> None:
        grid = np.linspace(0.0, float(np.max(fitted)) + 0.5, KDE_POINTS)
        dens = _kde_linear(fitted, grid, bw)
        keep = dens > KDE_THRESH
        self.n_dropped = int(np.count_nonzero(dens < KDE_THRESH))  # WW appends these as zero residuals
        self.x = grid[keep]
        self.y = dens[keep]
        self.Q = Q
        if Q == 1:  # the quarter-circle model is (1 / (pi s^2)) * sqrt(4 - t^2): the t part once
            with np.errstate(invalid="ignore"):
                qc = np.sqrt(4 - self.x**2)
            self.qc = np.where(np.isnan(qc), 0.0, qc)
        if self.x.size:
            self.x_peak = float(self.x[int(np.argmax(self.y))])  # first maximum, as WW
            self.x_top = float(np.max(self.x))
        # one(): the edge factors as __call__ computes them, and buffers reused by every fmin call
        self._up, self._down = 1 + np.sqrt(1 / Q), 1 - np.sqrt(1 / Q)
        self._row = np.zeros(self.x.size + self.n_dropped)  # the dropped points' zeros stay zero
        self._tmp = np.empty((2, self.x.size))
        self._nan = np.empty(self.x.size, dtype=bool)

    def __call__(self, sigmas: np.ndarray) -> np.ndarray:
        s = np.asarray(sigmas, dtype=np.float64).reshape(-1, 1)
        if self.Q == 1:
            return self._sums(s, None, None)
        b = np.power(s * (1 + np.sqrt(1 / self.Q)), 2)
        a = np.power(s * (1 - np.sqrt(1 / self.Q)), 2)
        penalised = ((b < self.x_peak) | (b > self.x_top) | (a > self.x_peak)).ravel()
        if not penalised.any():
            return self._sums(s, a, b)
        # WW's residual there is 1000 at every kept point: the sum of squares is exactly 1e6 * points
        out = np.full(s.shape[0], PENALTY * PENALTY * self.x.size)
        live = ~penalised
        if live.any():
            out[live] = self._sums(s[live], a[live], b[live])
        return out

    def first_min(self, sigmas: np.ndarray) -> float:
        """sigmas[np.argmin(self(sigmas))], the same point (the residuals are compared exactly as computed).

        Q == 1 shortcut: the model is c * qc with c = 1 / (pi s^2), so a residual is c^2 A - 2 c B + C (A, B,
        C: sums of qc^2, qc y, y^2; nothing to sum per sigma). Those approximations are within 1e-13 of the
        true sums relative to c^2 A + 2 c B + C; every sigma that could be the first minimum under a 1e-10
        margin is evaluated exactly (usually one or two), and the first exact minimum among them is the
        first exact minimum of all."""
        if self.Q == 1 and sigmas.size > 8:
            c = 1 / (np.pi * sigmas * sigmas)
            A, B, C = float(self.qc @ self.qc), float(self.qc @ self.y), float(self.y @ self.y)
            approx = c * c * A - 2 * c * B + C
            margin = 1e-10 * (c * c * A + 2 * c * abs(B) + C)
            if np.all(np.isfinite(approx)) and np.all(np.isfinite(margin)):
                cand = np.flatnonzero(approx - margin <= np.min(approx + margin))
                return float(sigmas[cand[int(np.argmin(self(sigmas[cand])))]])
        return float(sigmas[int(np.argmin(self(sigmas)))])

    def one(self, sigma: float) -> float:
        """The residual of one sigma (what fmin asks for): the same values as self([sigma]) - the same
        operations on the same operands, element by element - without its temporaries. Call it inside
        np.errstate(divide="ignore", invalid="ignore", over="ignore") (_fit_sigma does)."""
        s = np.array([sigma])
        body = self._row[:self.x.size]
        if self.Q == 1:
            np.multiply(1 / (np.pi * s * s), self.qc, out=body)
        else:
            b = np.power(s * self._up, 2)
            a = np.power(s * self._down, 2)
            if b[0] < self.x_peak or b[0] > self.x_top or a[0] > self.x_peak:
                return PENALTY * PENALTY * self.x.size
            x, inv, root = self.x, self._tmp[0], self._tmp[1]
            np.multiply(2 * np.pi * s * s, x, out=inv)
            np.multiply(inv, 1 / self.Q, out=inv)
            np.divide(1, inv, out=inv)
            np.subtract(b, x, out=root)
            np.multiply(root, np.subtract(x, a, out=body), out=root)
            np.sqrt(root, out=root)
            np.multiply(inv, root, out=body)
            np.isnan(body, out=self._nan)
            np.copyto(body, 0.0, where=self._nan)
        body -= self.y
        np.square(body, out=body)
        return float(np.add.reduce(self._row))  # np.sum's own reduction, without its Python wrapper

    def _sums(self, s: np.ndarray, a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray:
        """sum of squared residuals for each row s (k x 1), with WW's arithmetic: the same expressions in the
        same order as its marchenko_pastur_fun / quarter_circle_fun, and its zeros for the dropped points
        appended (the same summation order). WW's np.nan_to_num only ever meets NaN here (sqrt of a negative,
        or 1/0 * NaN at t = 0; never +-inf since s > 0 and a > 0 when Q != 1), so NaN -> 0 is all of it."""
        buf = np.zeros((s.shape[0], self.x.size + self.n_dropped))
        body = buf[:, :self.x.size]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.Q == 1:
                np.multiply(1 / (np.pi * s * s), self.qc, out=body)
            else:
                x = self.x
                np.multiply(1 / (2 * np.pi * s * s * x * (1 / self.Q)), np.sqrt((b - x) * (x - a)), out=body)
                body[np.isnan(body)] = 0.0
        body -= self.y
        np.square(body, out=body)  # the appended zeros stay zero
        return np.sum(buf, axis=1)


def _fit_sigma(x: np.ndarray, Q: float, bw: float) -> float:
    """WW's fit_density_with_range: brute-force grid of sigma, then fmin from the best grid point."""
    scale = math.sqrt(float(np.max(x)) / (1.0 + 1.0 / math.sqrt(Q)) ** 2)  # RMT_Util.calc_sigma
    fitted = np.sqrt(x) if Q == 1 else x
    resid = _Residual(fitted, Q, bw)
    if resid.x.size == 0:
        raise ValueError("the ESD's density is below 0.01 everywhere; no bulk to fit")
    lo, hi, step = (f * scale for f in _GRID)
    grid = np.mgrid[slice(lo, hi, step)]  # exactly the points scipy.optimize.brute evaluates
    start = resid.first_min(grid)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _fmin_1d(resid.one, float(start))


def _fmin_1d(f, x0: float) -> float:
    """scipy.optimize.fmin(f, x0) for one variable, step for step, with its defaults (Nelder-Mead:
    reflection 1, expansion 2, contraction 0.5, shrink 0.5; initial step 5%; xatol = fatol = 1e-4;
    at most 200 iterations and 200 calls). The simplex is two points; every coefficient is exact, so the
    arithmetic is scipy's own. Without scipy's per-call wrapping: WW's mp_fit spends its time here."""
    calls = 0

    def call(x: float) -> float | None:
        nonlocal calls
        if calls >= _FMIN_MAXFUN:
            return None
        calls += 1
        return f(x)

    sim = [x0, 1.05 * x0 if x0 != 0 else 0.00025]
    fsim = [call(sim[0]), call(sim[1])]
    if fsim[1] < fsim[0]:  # np.argsort of two values: stable
        sim.reverse()
        fsim.reverse()
    iterations = 1
    while calls < _FMIN_MAXFUN and iterations < _FMIN_MAXFUN:
        if abs(sim[1] - sim[0]) <= 1e-4 and abs(fsim[0] - fsim[1]) <= 1e-4:
            break
        xbar, worst = sim[0], sim[1]
        xr = 2.0 * xbar - 1.0 * worst
        fxr = call(xr)
        if fxr is None:
            break
        if fxr < fsim[0]:
            xe = 3.0 * xbar - 2.0 * worst
            fxe = call(xe)
            if fxe is None:
                break
            sim[1], fsim[1] = (xe, fxe) if fxe < fxr else (xr, fxr)
        else:  # scipy's "fxr < fsim[-2]" test is fsim[0] again for one variable: never true here
            if fxr < fsim[1]:
                xc = 1.5 * xbar - 0.5 * worst
                fxc = call(xc)
                if fxc is None:
                    break
                shrink = not fxc <= fxr
                if not shrink:
                    sim[1], fsim[1] = xc, fxc
            else:
                xcc = 0.5 * xbar + 0.5 * worst
                fxcc = call(xcc)
                if fxcc is None:
                    break
                shrink = not fxcc < fsim[1]
                if not shrink:
                    sim[1], fsim[1] = xcc, fxcc
            if shrink:
                sim[1] = sim[0] + 0.5 * (sim[1] - sim[0])
                f1 = call(sim[1])
                if f1 is None:
                    break
                fsim[1] = f1
        iterations += 1
        if fsim[1] < fsim[0]:
            sim.reverse()
            fsim.reverse()
    return sim[0]


def mp_fit(evals: np.ndarray, *, N: int, M: int, bw: float = MP_BANDWIDTH) -> MPFit:
    """Marchenko-Pastur fit of the bulk of one ESD, WeightWatcher 0.7.7's `mp_fit` columns.

    evals: all eigenvalues of the layer (any order, zeros included), shape (n,); for randomized ESDs
    with replicas, all replicas pooled. N, M: the layer's sides (Q = N / M; M also sets the
    Tracy-Widom pad). Deterministic; never raises on degenerate input (returns a failed MPFit).
    """
    lam = np.asarray(evals, dtype=np.float64).ravel()
    if lam.size < 2:
        return _failed("too_few_evals", f"{lam.size} eigenvalue(s); an MP fit needs at least 2")
    if not np.all(np.isfinite(lam)):
        return _failed("nonfinite", "eigenvalues contain NaN or Inf")
    total = float(np.sum(lam))
    if not total > 0.0 or not float(np.max(lam)) > 0.0:
        return _failed("all_zero", "all eigenvalues are zero; no bulk to fit")
    if not (N > 0 and M > 0):
        return _failed("too_few_evals", f"N={N}, M={M}: need positive sides")
    Q = N / M
    w_scale = math.sqrt(lam.size) / math.sqrt(total)
    x = (w_scale * w_scale) * lam
    try:
        sigma = _fit_sigma(x, Q, bw)
    except (ValueError, FloatingPointError) as exc:
        return _failed("degenerate_bulk", str(exc))
    inv_sqrt_q = 1.0 / math.sqrt(Q)
    bulk_max = (sigma * (1.0 + inv_sqrt_q)) ** 2
    bulk_min = (sigma * (1.0 - inv_sqrt_q)) ** 2
    tw = inv_sqrt_q * bulk_max ** (2.0 / 3.0) * M ** (-2.0 / 3.0)
    w2 = w_scale * w_scale
    fit = MPFit(
        num_spikes=0,
        sigma_mp=sigma,
        mp_softrank=bulk_max / float(np.max(x)),
        bulk_max=bulk_max / w2,
        bulk_min=bulk_min / w2,
        W_scale=w_scale,
        spike_edge=bulk_max + math.sqrt(tw),
    )
    return dataclasses.replace(fit, num_spikes=int(np.count_nonzero(fit.is_spike(lam))))
