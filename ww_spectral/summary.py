"""The model-level row: WeightWatcher's get_summary() means plus robust aggregates.

Means and medians are over layers with status 'success' (WW also averages failed layers' alpha = -1
into its mean - a bug we do not copy). Empty -> NaN. Mixture-of-experts models (one row per expert, a
column `expert`): alpha_expert_mean is the mean alpha of the expert rows alone, alpha_block_mean the mean
where each block's experts of one role first collapse to their own mean (ww_spectral/experts.py
expert_balanced_mean), so 128 experts weigh as one layer of their block. Dense models: alpha_block_mean =
alpha, alpha_expert_mean NaN. The keys are SUMMARY_FLOAT_KEYS then
SUMMARY_INT_KEYS: the one list the catalog's `models` schema (catalogs/schema.py) is built from.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .experts import expert_balanced_mean
from .metrics import WW_BAND, looks_random

WW_SUMMARY_METRICS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm",
                      "stable_rank")
SUMMARY_FLOAT_KEYS: tuple[str, ...] = (*WW_SUMMARY_METRICS, "alpha_median", "alpha_weighted_median",
                                       "hill_alpha", "hill_alpha_median", "share_alpha_2_6", "mp_softrank",
                                       "share_random_like", "alpha_expert_mean", "alpha_block_mean")
SUMMARY_INT_KEYS: tuple[str, ...] = ("n_tensors", "n_layers_analysed", "n_layers_skipped", "n_layers_failed",
                                     "n_layers_random_like")
# The columns random_like() reads (ww_spectral.metrics.looks_random's arguments, in order).
RANDOM_LIKE_COLUMNS = ("status", "lambda_max", "norm", "num_evals", "N", "M", "rand_distance")
SUMMARY_KEYS: tuple[str, ...] = SUMMARY_FLOAT_KEYS + SUMMARY_INT_KEYS


def _finite(s: pd.Series) -> np.ndarray:
    a = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return a[np.isfinite(a)]


def _mean(a: np.ndarray) -> float:
    return float(a.mean()) if a.size else math.nan


def _median(a: np.ndarray) -> float:
    return float(np.median(a)) if a.size else math.nan


def _floats(layers, name: str, n: int) -> np.ndarray:
    """Column `name` as float64 (NaN for missing values; n NaNs when the column is absent)."""
    if name not in layers:
        return np.full(n, np.nan)
    return pd.to_numeric(pd.Series(layers[name]), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def random_like(layers) -> dict:
    """{"n_layers_random_like": int, "share_random_like": float} of a per-layer table: how many analysed
    layers (status success) look like a random matrix (ww_spectral.metrics.looks_random) and their share
    of the analysed layers (NaN when none was analysed). `layers`: a DataFrame or any mapping of column
    name -> one value per row (RANDOM_LIKE_COLUMNS; a missing numeric column counts as NaN)."""
    if "status" not in layers:
        return {"n_layers_random_like": 0, "share_random_like": math.nan}
    status = np.asarray(layers["status"], dtype=object)
    flags = looks_random(status, *(_floats(layers, c, len(status)) for c in RANDOM_LIKE_COLUMNS[1:]))
    n_ok = int(np.count_nonzero(status == "success"))
    n = int(np.count_nonzero(flags))
    return {"n_layers_random_like": n, "share_random_like": n / n_ok if n_ok else math.nan}


def _expert_means(ok: pd.DataFrame) -> dict[str, float]:
    """expert_balanced_mean of alpha over the successful rows (no expert column: every row is dense)."""
    if "alpha" not in ok:
        return {"expert_mean": math.nan, "block_mean": math.nan}
    alpha = pd.to_numeric(ok["alpha"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    # plain lists, missing values None (pandas' per-frame astype/where/to_dict cost ~5 ms per model)
    where = {c: [None if pd.isna(v) else v for v in ok[c].tolist()] for c in ("block", "role", "expert") if c in ok}
    rows = [{"alpha": a, **{c: values[i] for c, values in where.items()}} for i, a in enumerate(alpha.tolist())]
    return expert_balanced_mean(rows, "alpha")


def delta_kinds(layers: pd.DataFrame) -> pd.Series:
    """Each row's delta_kind ('' for the model's own weights; a table without the column has only those)."""
    if "delta_kind" not in layers:
        return pd.Series([""] * len(layers), index=layers.index)
    return layers["delta_kind"].fillna("").astype(str)


def own_rows(layers: pd.DataFrame) -> pd.DataFrame:
    """The rows of the model's own weights (delta_kind ''): what its summary is of."""
    return layers[delta_kinds(layers) == ""]


def summarize(layers: pd.DataFrame) -> dict:
    """Summary dict of a per-layer table (columns LAYER_COLUMN_NAMES; skipped rows optional).

    Keys, in order, SUMMARY_KEYS: WW's means (log_norm, alpha, alpha_weighted, log_alpha_norm,
    log_spectral_norm, stable_rank), alpha_median, alpha_weighted_median, hill_alpha (mean),
    hill_alpha_median, share_alpha_2_6, mp_softrank (WW's get_summary() mean, with mp_fit; floats, NaN
    when no layer succeeded or the column is off); n_tensors (distinct layer_ids), n_layers_analysed
    (rows with status success: kernel positions count one each with pool=False), n_layers_skipped,
    n_layers_failed (ints); share_random_like (float) and n_layers_random_like (int): random_like(),
    stored so the default ranking's tier reads the models table alone (catalogs/metrics.py);
    alpha_expert_mean, alpha_block_mean (floats): the module docstring.
    """
    layers = own_rows(layers)  # delta rows have their own summary (ww_spectral/deltas.py delta_summary)
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
    low, high = WW_BAND
    out["share_alpha_2_6"] = float(np.mean((alpha >= low) & (alpha <= high))) if alpha.size else math.nan
    out["mp_softrank"] = _mean(_finite(ok["mp_softrank"])) if "mp_softrank" in ok else math.nan
    rand = random_like(layers)
    out["share_random_like"] = rand["share_random_like"]
    balanced = _expert_means(ok)
    out["alpha_expert_mean"] = balanced["expert_mean"]
    out["alpha_block_mean"] = balanced["block_mean"]
    out["n_tensors"] = int(layers["layer_id"].nunique()) if "layer_id" in layers else int(len(layers))
    out["n_layers_analysed"] = int((status == "success").sum())
    out["n_layers_skipped"] = int((status == "skipped").sum())
    out["n_layers_failed"] = int((status == "failed").sum())
    out["n_layers_random_like"] = rand["n_layers_random_like"]
    assert tuple(out) == SUMMARY_KEYS  # the declared keys are the computed keys, in order
    return out
