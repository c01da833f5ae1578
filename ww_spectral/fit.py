"""Power-law fit of an ESD tail, reproducing WeightWatcher 0.7.7's default fit (pl_package='ww').

Every eigenvalue (after dropping those <= 1e-5) is a candidate xmin; for each, the MLE exponent and the
Kolmogorov-Smirnov distance of the tail are computed, and the FIRST candidate with the smallest D wins.
The work is vectorised: alphas come from suffix sums of log-eigenvalues (O(n)); the KS distances are
computed for blocks of candidates at once on a (block x n) array (O(n^2) arithmetic, bounded memory).

Deliberate differences from WeightWatcher (documented in the README):
- a failed fit gives alpha = NaN, status 'failed' and a `fit_status` code, never alpha = -1 labelled
  'over-trained';
- degenerate tails (all equal eigenvalues, infinite alpha) are reported as failed instead of a garbage
  alpha of 0 or inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EVALS_THRESH = 1e-5  # WW drops eigenvalues <= this before fitting
SMALL_N_CUTOFF = 20  # WW 0.7.7: below this, the small-n rule applies
SMALL_N_K_MIN = 8  # small-n rule: only tails of at least this size are candidates
MAX_FINGERS = 10  # WW DEFAULT_MAX_FINGERS: clip_xmax tries dropping 2..9 top eigenvalues
FINGER_THRESH = 1.0  # clip_xmax accepts the first refit whose alpha is this much below the raw alpha
MIN_ALPHA = 2.0  # clip_xmax stops once a refit's alpha is <= this
_BLOCK_ELEMENTS = 2_000_000  # KS work array size per block (16 MB of float64)
_LB_STRIDE = 8  # lower-bound pass: every 8th eigenvalue as a KS evaluation point
_EXACT_BATCH = 64  # candidates evaluated exactly per step of the pruned search
_PRUNE_MIN = 256  # below this many candidates, evaluate all of them exactly


@dataclass(frozen=True)
class PowerLawFit:
    """Result of one power-law fit.

    alpha: fitted exponent (NaN when failed); xmin/xmax: smallest/largest eigenvalue of the fitted range;
    D: KS distance; sigma: (alpha-1)/sqrt(k) with k the tail size of the fitted data;
    num_pl_spikes: eigenvalues >= xmin in the layer's whole ESD (as WW counts them);
    num_fingers: eigenvalues clipped by clip_xmax minus one (WW's convention), else 0;
    raw_alpha: alpha before clip_xmax (== alpha without it);
    status: 'success' | 'failed'; fit_status: 'ok' | 'too_few_evals' | 'nonfinite' | 'degenerate_tail';
    detail: human-readable note ('' when ok).
    """

    alpha: float
    xmin: float
    xmax: float
    D: float
    sigma: float
    num_pl_spikes: int
    num_fingers: int
    raw_alpha: float
    status: str
    fit_status: str
    detail: str = ""

    @property
    def warning(self) -> str:
        """WW's label: 'over-trained' if alpha < 2, 'under-trained' if alpha > 6, else '' (also when failed)."""
        if not math.isfinite(self.alpha):
            return ""
        if self.alpha < 2.0:
            return "over-trained"
        if self.alpha > 6.0:
            return "under-trained"
        return ""


class _FitFailure(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class _Core:
    alpha: float
    xmin: float
    xmax: float
    D: float
    sigma: float


def failed_fit(code: str, detail: str, raw_alpha: float = math.nan) -> PowerLawFit:
    """A failed fit: alpha and the tail columns NaN, counts 0, status "failed", `code` and `detail`."""
    nan = math.nan
    return PowerLawFit(nan, nan, nan, nan, nan, 0, 0, raw_alpha, "failed", code, detail)


def _ks_block(logx: np.ndarray, alphas: np.ndarray, idx: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """max over columns j in `cols` (j >= i) of |1 - (x_j/x_i)^(1-alpha_i) - (j-i)/k_i| for each i in idx.

    One (len(idx) x len(cols)) array, computed in place. Columns left of a row's candidate (j < i) are
    neutralised by clipping: log(x_j/x_i) -> 0 and t -> 0 make them exactly 0, never above the t = 0 term.
    """
    n = logx.shape[0]
    inv_k = 1.0 / (n - idx).astype(np.float64)
    work = np.subtract(logx[cols][None, :], logx[idx][:, None])  # log(x_j / x_i)
    np.maximum(work, 0.0, out=work)
    work *= (1.0 - alphas[idx])[:, None]
    np.exp(work, out=work)  # (x_j / x_i)^(1 - alpha_i): the fitted CDF is 1 - this
    t = np.subtract(cols[None, :].astype(np.float64), idx[:, None].astype(np.float64))
    np.maximum(t, 0.0, out=t)
    t *= inv_k[:, None]  # empirical CDF t / k
    work += t
    np.subtract(1.0, work, out=work)
    np.abs(work, out=work)
    return work.max(axis=1)


def _ks_exact(logx: np.ndarray, alphas: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Exact KS distances of the candidates idx (ascending), in blocks of bounded memory."""
    n = logx.shape[0]
    out = np.empty(idx.size, dtype=np.float64)
    rows = max(1, _BLOCK_ELEMENTS // max(n, 1))
    for s in range(0, idx.size, rows):
        part = idx[s:s + rows]
        out[s:s + rows] = _ks_block(logx, alphas, part, np.arange(int(part[0]), n))
    return out


def _first_min_ks(logx: np.ndarray, alphas: np.ndarray, valid: np.ndarray) -> tuple[int, float]:
    """(i, D_i) of the FIRST candidate with the smallest KS distance; invalid candidates have D = 1.

    Exact and cheaper than evaluating every D_i: a strided subset of t gives a lower bound LB_i <= D_i
    for all candidates at 1/stride of the cost; candidates are then evaluated exactly in increasing
    LB order until the next LB exceeds the best D found. Every candidate that could reach the minimum
    (LB_i <= D_i = min D) is evaluated, so the first-index tie rule is kept.
    """
    n = logx.shape[0]
    cand = np.flatnonzero(valid)
    if cand.size <= _PRUNE_MIN:
        D = _ks_exact(logx, alphas, cand)
        j = int(np.argmin(D))
        best_i, best_d = int(cand[j]), float(D[j])
    else:
        cols = np.unique(np.concatenate([np.arange(0, n, _LB_STRIDE), [n - 1]]))
        lb = np.empty(cand.size, dtype=np.float64)
        rows = max(1, _BLOCK_ELEMENTS // cols.size)
        for s in range(0, cand.size, rows):
            part = cand[s:s + rows]
            lb[s:s + rows] = _ks_block(logx, alphas, part, cols)
        # t = 0 and the last point are in every row's exact max too, so lb is a true lower bound
        order = np.argsort(lb, kind="stable")
        best_i, best_d = -1, math.inf
        pos = 0
        while pos < order.size and lb[order[pos]] <= best_d:
            stop = pos + _EXACT_BATCH
            batch = np.sort(cand[order[pos:stop]])
            D = _ks_exact(logx, alphas, batch)
            for i, d in zip(batch.tolist(), D.tolist()):
                if d < best_d or (d == best_d and i < best_i):
                    best_i, best_d = i, d
            pos = stop
    # WW scores invalid candidates D = 1 and takes the first minimum over all of them
    first_invalid = int(np.argmin(valid)) if not valid.all() else -1
    if best_d >= 1.0 and 0 <= first_invalid < best_i:
        return first_invalid, 1.0
    return best_i, best_d


def _candidates(logx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every candidate xmin x[i], i < n-1, of sorted positive data with logs `logx` (n >= 2), by WW 0.7.7's
    rule: (k, s, alphas, valid), each shape (n-1,); k = tail size n - i, s = sum_{j>=i} log(x_j/x_i),
    alphas = 1 + k/s (n >= 20) or the small-n rule; valid: a finite alpha > 1 (and the small-n conditions).
    """
    n = logx.shape[0]
    ncand = n - 1
    k = (n - np.arange(ncand)).astype(np.float64)
    # sum_{j>=i} log(x_j / x_i) from suffix sums of log x (O(n) instead of WW's O(n^2) loop)
    suffix = np.cumsum(logx[::-1])[::-1]
    s = suffix[:ncand] - k * logx[:ncand]
    with np.errstate(divide="ignore", invalid="ignore"):
        if n >= SMALL_N_CUTOFF:
            alphas = 1.0 + k / s
            valid = alphas > 1.0
        else:  # 0.7.7 small-n rule: bias-corrected MLE, only tails of >= 8 eigenvalues, s > 1e-12
            ok = (k >= SMALL_N_K_MIN) & (s > 1e-12)
            alphas = np.where(ok, 1.0 + (k - 1.0) / s, 0.0)
            valid = ok & (alphas > 1.0)
    # Infinite alpha (an all-equal tail) is a degenerate candidate; WW would score it, we never pick it.
    valid &= np.isfinite(alphas)
    return k, s, alphas, valid


def candidate_fits(evals: np.ndarray, *, max_candidates: int = 2000) -> dict[str, np.ndarray]:
    """alpha and KS distance D of candidate xmin values, by the rule fit_power_law uses (for D-vs-xmin plots).

    Returns {"xmin", "alpha", "D"}, arrays of equal length; alpha NaN and D = 1 where a candidate is
    invalid (as WW scores it). With more than `max_candidates` eigenvalues, an evenly spaced subset of
    candidates is evaluated, always including the fit's own xmin.
    """
    x = np.asarray(evals, dtype=np.float64).ravel()
    x = _prepare(x[np.isfinite(x)])
    n = x.shape[0]
    if n < 2:
        return {"xmin": np.empty(0), "alpha": np.empty(0), "D": np.empty(0)}
    logx = np.log(x)
    _, _, alphas, valid = _candidates(logx)
    idx = np.arange(n - 1)
    if idx.size > max_candidates:
        idx = np.unique(np.linspace(0, n - 2, max_candidates).round().astype(int))
        best = fit_power_law(x)
        if best.status == "success":
            idx = np.union1d(idx, np.flatnonzero(x[:-1] == best.xmin)[:1])
    D = np.ones(idx.size)
    ok = valid[idx]
    if ok.any():
        D[ok] = _ks_exact(logx, alphas, idx[ok])
    return {"xmin": x[idx], "alpha": np.where(ok, alphas[idx], np.nan), "D": D}


def _fit_sorted(x: np.ndarray) -> _Core:
    """WW's WWFit on sorted, positive data x (n >= 2): first candidate with the smallest D."""
    n = x.shape[0]
    if n < 2:
        raise _FitFailure("too_few_evals", f"{n} eigenvalue(s) above {EVALS_THRESH:g}; a fit needs at least 2")
    logx = np.log(x)
    ncand = n - 1
    small_n = n < SMALL_N_CUTOFF
    k, s, alphas, valid = _candidates(logx)
    if small_n and not valid.any():
        # WW falls back to the whole sample as the tail (bias-corrected) when no candidate survived.
        s0 = s[0]
        if not s0 > 1e-12:
            raise _FitFailure("degenerate_tail", "all eigenvalues (nearly) equal; no power-law tail")
        alphas = alphas.copy()
        alphas[0] = 1.0 + (k[0] - 1.0) / s0
        valid = np.zeros(ncand, dtype=bool)
        valid[0] = True
    if not valid.any():
        raise _FitFailure("degenerate_tail", "no candidate xmin gives a finite alpha > 1")
    best, best_d = _first_min_ks(logx, alphas, valid)  # first minimum, as WW
    if not valid[best]:
        raise _FitFailure("degenerate_tail", "no candidate xmin gives a usable KS distance")
    alpha = float(alphas[best])
    sigma = (alpha - 1.0) / math.sqrt(k[best])
    return _Core(alpha=alpha, xmin=float(x[best]), xmax=float(x[-1]), D=best_d, sigma=float(sigma))


def _prepare(evals: np.ndarray) -> np.ndarray:
    x = np.asarray(evals, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise _FitFailure("nonfinite", "eigenvalues contain NaN or Inf")
    return np.sort(x[x > EVALS_THRESH])


def ww_max_fingers(max_fingers: int, num_evals: int) -> int:
    """The max_fingers WW 0.7.7 actually uses: the one given only when it is at least half the number of
    eigenvalues (num_evals, zeros included), else DEFAULT_MAX_FINGERS (its fit_powerlaw resets it)."""
    if max_fingers is None or max_fingers < 0 or max_fingers < num_evals / 2:
        return MAX_FINGERS
    return int(max_fingers)


def _clip_xmax(x: np.ndarray, *, max_fingers: int = MAX_FINGERS,
               finger_thresh: float = FINGER_THRESH) -> tuple[_Core, int, float]:
    """WW's fit_clipped_powerlaw: refit without the top 2..max_fingers-1 eigenvalues; returns (fit,
    num_fingers, raw_alpha)."""
    first = _fit_sorted(x)
    best, num_fingers, idx = first, 0, None
    for idx in range(2, max_fingers):  # noqa: B007 - idx is used after the loop, as in WW
        fit = _fit_sorted(x[:-idx])
        if fit.alpha + finger_thresh < first.alpha:
            best, num_fingers = fit, idx - 1
            break
        if fit.alpha <= MIN_ALPHA:
            break
    if idx is None:  # max_fingers <= 2: WW's loop never runs and it keeps the first fit
        return best, num_fingers, first.alpha
    # WW then refits without 1..3 more eigenvalues as a check; it changes nothing but fails when the
    # sample runs out, so a fit that WW reports as failed stays failed here.
    for idy in range(idx + 1, idx + 4):
        check = _fit_sorted(x[:-idy])
        if abs(check.alpha - best.alpha) > finger_thresh:
            break
    return best, num_fingers, first.alpha


def fit_power_law(evals: np.ndarray, *, fix_fingers: str | None = None, max_fingers: int = MAX_FINGERS,
                  finger_thresh: float = FINGER_THRESH) -> PowerLawFit:
    """Fit a power law to the tail of an ESD exactly as WeightWatcher 0.7.7 does by default.

    evals: eigenvalues of one layer (any order, zeros allowed), shape (n,).
    fix_fingers: None or 'clip_xmax' (fit='TPL'/'E_TPL' and fix_fingers='xmin_peak' are in
    fit_variants.py). max_fingers (as WW uses it: see ww_max_fingers) and finger_thresh: clip_xmax's
    WW parameters. Never raises on small or degenerate input: returns a failed fit.
    """
    if fix_fingers not in (None, "clip_xmax"):
        raise ValueError(f"fix_fingers={fix_fingers!r}; use None or 'clip_xmax'")
    all_evals = np.asarray(evals, dtype=np.float64).ravel()
    try:
        x = _prepare(all_evals)
        if fix_fingers == "clip_xmax":
            core, num_fingers, raw_alpha = _clip_xmax(x, max_fingers=max_fingers, finger_thresh=finger_thresh)
        else:
            core = _fit_sorted(x)
            num_fingers, raw_alpha = 0, core.alpha
    except _FitFailure as exc:
        return failed_fit(exc.code, exc.detail)
    # WW counts the tail in the whole ESD (clipped fingers included).
    num_pl_spikes = int(np.count_nonzero(all_evals >= core.xmin))
    return PowerLawFit(
        alpha=core.alpha,
        xmin=core.xmin,
        xmax=core.xmax,
        D=core.D,
        sigma=core.sigma,
        num_pl_spikes=num_pl_spikes,
        num_fingers=num_fingers,
        raw_alpha=float(raw_alpha),
        status="success",
        fit_status="ok",
        detail="small-n rule (n < 20)" if x.shape[0] < SMALL_N_CUTOFF else "",
    )


def hill_alpha(evals: np.ndarray) -> float:
    """Hill estimator with a fixed tail, as TempBalance / AlphaPruning compute it ('xmin_mid').

    Eigenvalues <= 1e-5 are dropped and the rest sorted ascending (n of them); xmin = x[n // 2] (the
    median) and the tail is x[n//2:], k = n - n//2: alpha = 1 + k / sum(log(x_j / xmin)).
    NaN when fewer than 2 eigenvalues remain or the tail is flat.
    """
    x = np.asarray(evals, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        return math.nan
    x = np.sort(x[x > EVALS_THRESH])
    n = x.shape[0]
    if n < 2:
        return math.nan
    i = n // 2
    logx = np.log(x[i:])
    s = float(np.sum(logx - logx[0]))
    if not s > 0.0:
        return math.nan
    return 1.0 + (n - i) / s
