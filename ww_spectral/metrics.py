"""Per-layer spectral metrics from the eigenvalues, with WeightWatcher 0.7.7's definitions.

lambda: all pooled eigenvalues of the layer (zeros included), already scaled (0.5 for conv2d).
Per-slice quantities (sv_min, rank_loss) follow WW: sv_min is the LARGEST of the slices' smallest
singular values, rank_loss sums the slices' rank losses (each with its own tolerance).
"""

from __future__ import annotations

import math

import numpy as np

from .bands import RAND_DISTANCE_MIN, TW_PAD, WW_BAND  # noqa: F401 - re-exported
from .spectrum import noise_floor

WEAK_RANK_TOL = 1e-6  # WW WEAK_RANK_LOSS_TOLERANCE, on eigenvalues
ENTROPY_EPS = 1e-10  # WW EPSILON
_EPS64 = float(np.finfo(np.float64).eps)


def _rank_threshold(lam: np.ndarray, N: int, floor: float) -> float:
    """Eigenvalue cut for the rank: WW's sv > sv_max * N * eps(float64), squared, but never below the
    round-off floor of the computation (eigenvalues under it are indistinguishable from 0)."""
    lam_max = float(lam.max()) if lam.size else 0.0
    return max(lam_max * (N * _EPS64) ** 2, floor)


def matrix_rank(lam: np.ndarray, N: int, *, floor: float = 0.0) -> int:
    """#{sigma > sigma_max * N * eps(float64)} with sigma = sqrt(lambda); `floor`: round-off cut on lambda."""
    lam = np.asarray(lam, dtype=np.float64)
    if lam.size == 0 or not lam.max() > 0:
        return 0
    return int(np.count_nonzero(lam > _rank_threshold(lam, N, floor)))


def entropy(lam: np.ndarray, rank: int) -> float:
    """WW's matrix_entropy: p = lambda/sum(lambda) + 1e-10; -sum(p ln p) / ln(rank + 1e-10)."""
    lam = np.asarray(lam, dtype=np.float64)
    total = float(lam.sum())
    if not total > 0:
        return math.nan
    p = lam / total + ENTROPY_EPS
    return float(-np.sum(p * np.log(p)) / math.log(rank + ENTROPY_EPS))


def _log10(x: float) -> float:
    return math.log10(x) if x > 0 else math.nan


def layer_metrics(
    slice_evals: list[np.ndarray], *, N: int, alpha: float, precision: str = "float64"
) -> dict:
    """Every norm/rank column of one layer.

    slice_evals: ascending eigenvalues of each slice (already scaled); N: the layer's N (max side);
    alpha: the fitted exponent (NaN when the fit failed -> alpha-dependent columns NaN);
    precision: arithmetic the eigenvalues came from. In float32 the eigenvalues carry an absolute
    round-off of about `spectrum.noise_floor` (~1e-6 * lambda_max); those below it count as zero for
    matrix_rank, rank_loss and weak_rank_loss (float64 reproduces WW's rank columns exactly).
    """
    lam = np.sort(np.concatenate([np.asarray(e, dtype=np.float64) for e in slice_evals]))
    num_evals = int(lam.size)
    lam_max = float(lam[-1]) if num_evals else 0.0
    norm = float(lam.sum())
    m_slice = max((e.size for e in slice_evals), default=0)
    floor = noise_floor(lam_max, m_slice, precision) if precision == "float32" else 0.0
    sv_min = 0.0
    rank_loss = 0
    for e in slice_evals:
        e = np.asarray(e, dtype=np.float64)
        if e.size == 0:
            continue
        e_floor = noise_floor(float(e.max()), e.size, precision) if precision == "float32" else 0.0
        sv_min = max(sv_min, math.sqrt(float(e.min())))  # as computed; +-sqrt(floor) in float32
        rank_loss += int(e.size - matrix_rank(e, N, floor=e_floor))
    rank = matrix_rank(lam, N, floor=floor)
    finite_alpha = math.isfinite(alpha)
    log_spec = _log10(lam_max)
    if finite_alpha and num_evals:
        with np.errstate(over="ignore"):
            log_alpha_norm = _log10(float(np.sum(lam**alpha)))
    else:
        log_alpha_norm = math.nan
    resolved = np.where(lam > floor, lam, 0.0) if floor > 0 else lam
    return {
        "norm": norm,
        "log_norm": _log10(norm),
        "spectral_norm": lam_max,
        "log_spectral_norm": log_spec,
        "lambda_max": lam_max,
        "sv_max": math.sqrt(lam_max),
        "sv_min": sv_min,
        "alpha_weighted": alpha * log_spec if finite_alpha else math.nan,
        "log_alpha_norm": log_alpha_norm,
        "stable_rank": norm / lam_max if lam_max > 0 else math.nan,
        "matrix_rank": rank,
        "rank_loss": rank_loss,
        "weak_rank_loss": int(np.count_nonzero(resolved < WEAK_RANK_TOL)),
        "entropy": entropy(lam, rank),
    }


# --- Does a layer look like a random matrix? (the default ranking's per-layer test) ---------------------
# The rule and why these numbers: catalogs/metrics.py (module doc). This is the one place the rule is
# computed in Python; the catalog's SQL macro (catalogs/sql/05_layer_flags.sql) is rendered with these
# same constants and tests/catalogs/test_catalog_tiers.py checks the two agree row by row.
# WW_BAND, TW_PAD, RAND_DISTANCE_MIN: ww_spectral/bands.py (imported here, re-exported).


def mp_edge(norm, num_evals, n, m) -> np.ndarray:
    """Marchenko-Pastur bulk edge of a random N x M matrix with the layer's Frobenius norm, in the layer's
    eigenvalue units: (norm / num_evals) * (1 + sqrt(min/max))^2; NaN without a spectrum. Arrays or
    scalars (broadcast), float64 out."""
    norm, k, n, m = (np.asarray(x, dtype=np.float64) for x in (norm, num_evals, n, m))
    lo, hi = np.minimum(n, m), np.maximum(n, m)
    ok = (k > 0) & (norm > 0) & (lo > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, (norm / k) * (1 + np.sqrt(lo / hi)) ** 2, np.nan)


def looks_random(status, lambda_max, norm, num_evals, n, m, rand_distance) -> np.ndarray:
    """Per layer row: True when nothing in its spectrum is more than a random matrix of its shape and
    norm gives: status 'success' and (lambda_max <= mp_edge * (1 + TW_PAD * s) with Johnstone's relative
    Tracy-Widom scale s = (1/sqrt(min) + 1/sqrt(max))^(1/3) / (sqrt(N) + sqrt(M)), or rand_distance <
    RAND_DISTANCE_MIN). NaN/None inputs give False. Arrays (one entry per layer row) or scalars."""
    st = np.asarray(status, dtype=object) == "success"
    lam, n, m = (np.asarray(x, dtype=np.float64) for x in (lambda_max, n, m))
    rd = np.asarray(rand_distance, dtype=np.float64)
    lo, hi = np.minimum(n, m), np.maximum(n, m)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (1 / np.sqrt(lo) + 1 / np.sqrt(hi)) ** (1.0 / 3) / (np.sqrt(n) + np.sqrt(m))
        inside = lam <= mp_edge(norm, num_evals, n, m) * (1 + TW_PAD * s)  # NaN compares False
    return st & (inside | (rd < RAND_DISTANCE_MIN))
