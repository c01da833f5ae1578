"""The model-level row: WeightWatcher's get_summary() means plus robust aggregates (CONTRACTS.md).

Means and medians are over layers with status 'success' (WW also averages failed layers' alpha = -1
into its mean - a bug we do not copy). Empty -> NaN.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

WW_SUMMARY_METRICS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm",
                      "stable_rank")


def _finite(s: pd.Series) -> np.ndarray:
    a = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return a[np.isfinite(a)]


def _mean(a: np.ndarray) -> float:
    return float(a.mean()) if a.size else math.nan


def _median(a: np.ndarray) -> float:
    return float(np.median(a)) if a.size else math.nan


def summarize(layers: pd.DataFrame) -> dict:
    """Summary dict of a per-layer table (columns LAYER_COLUMN_NAMES; skipped rows optional).

    Keys: WW's means (log_norm, alpha, alpha_weighted, log_alpha_norm, log_spectral_norm, stable_rank),
    alpha_median, alpha_weighted_median, hill_alpha (mean), hill_alpha_median, share_alpha_2_6,
    n_tensors, n_layers_analysed (status success), n_layers_skipped, n_layers_failed.
    """
    status = layers["status"] if "status" in layers else pd.Series([], dtype=str)
    ok = layers[status == "success"]
    out: dict = {}
    for m in WW_SUMMARY_METRICS:
        out[m] = _mean(_finite(ok[m])) if m in ok else math.nan
    alpha = _finite(ok["alpha"]) if "alpha" in ok else np.array([])
    out["alpha_median"] = _median(alpha)
    out["alpha_weighted_median"] = _median(_finite(ok["alpha_weighted"])) if "alpha_weighted" in ok else math.nan
    hill = _finite(ok["hill_alpha"]) if "hill_alpha" in ok else np.array([])
    out["hill_alpha"] = _mean(hill)
    out["hill_alpha_median"] = _median(hill)
    out["share_alpha_2_6"] = float(np.mean((alpha >= 2.0) & (alpha <= 6.0))) if alpha.size else math.nan
    out["n_tensors"] = int(len(layers))
    out["n_layers_analysed"] = int((status == "success").sum())
    out["n_layers_skipped"] = int((status == "skipped").sum())
    out["n_layers_failed"] = int((status == "failed").sum())
    return out
