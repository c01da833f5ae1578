"""Does the data-free metric predict quality? Rank correlations of model metrics with true accuracy.

Layout of Martin & Mahoney, Nature Communications 12:4122 (2021), Tables 1-2: rows are model series
(here: the zoo's sweeps, plus every model pooled), columns are model-level metrics, cells are rank
correlations with the models' measured test accuracy.

SIGN CONVENTION ("expected sign"): each metric is oriented by its direction in catalogs/metrics.py before
correlating: for a lower-is-better metric (alpha, alpha_weighted, log norms, stable_rank, Hill alpha) we
correlate -metric with accuracy; for a higher-is-better one (share_alpha_2_6) +metric. So +1 means the
metric ranks the models exactly as their accuracy does, 0 means no information, and a NEGATIVE value
means the metric points the wrong way in that sweep.

Verdict per cell (stated so readers can check it): "works" when tau >= 0.3 and its two-sided p < 0.05;
"wrong sign" when tau <= -0.3 and p < 0.05; else "weak".
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from catalogs.metrics import get_metric

from .stored import latest_models
from .truth import ValidationError, merge_truth, read_truth, truth_key, unmatched

# Model-level metrics validated, in table column order (names of the `models` view / catalogs.metrics).
VALIDATION_METRICS = (
    "alpha", "alpha_weighted", "log_alpha_norm", "log_norm", "log_spectral_norm", "stable_rank",
    "hill_alpha", "share_alpha_2_6",
)  # fmt: skip
POOLED = "pooled"
WORKS_TAU = 0.3
WORKS_P = 0.05


@dataclass(frozen=True)
class Validation:
    """Correlations in long form plus the joined data.

    long: DataFrame (sweep, metric, direction, n, tau, tau_p, rho, rho_p, verdict), tau/rho in the
      expected-sign convention (module docstring); one row per (sweep, metric), sweeps then pooled.
    joined: one row per model: repo_id, sweep, test_accuracy and the metric columns.
    unmatched: truth repo_ids with no model in the catalog (not analysed, or failed).
    """

    long: object
    joined: object
    unmatched: tuple[str, ...]

    def wide(self, stat: str = "tau"):
        """rows = sweeps (+ pooled), columns = metrics, cells = `stat` ("tau" | "rho" | "verdict")."""
        w = self.long.pivot(index="sweep", columns="metric", values=stat)
        cols = [m for m in VALIDATION_METRICS if m in w.columns]
        order = [s for s in dict.fromkeys(self.long["sweep"])]
        return w.loc[order, cols]


def _direction(metric: str) -> str:
    return get_metric(metric).direction


def join_truth(models, truth):
    """(joined, unmatched): the latest row of each model (is_latest, when the column exists) inner-joined
    with the truth (pipelines/proof/truth.py merge_truth), in the truth file's row order (so sweeps keep
    their order), as repo_id, sweep, test_accuracy and the metric columns; unmatched: the truth's repo_ids
    no model matched."""
    if "is_latest" in models.columns:  # the catalog keeps every analysed revision; validate the latest
        models = models[models["is_latest"].astype(bool)]
    joined = merge_truth(models, truth, how="inner")
    order = {key: i for i, key in enumerate(truth["repo_id"].map(truth_key))}
    joined = joined.iloc[joined["repo_id"].map(truth_key).map(order).argsort(kind="stable")]
    keep = ["repo_id", "sweep", "test_accuracy"] + [c for c in VALIDATION_METRICS if c in joined.columns]
    return joined[keep].reset_index(drop=True), unmatched(truth, joined)


def correlate(joined, *, metrics: tuple[str, ...] = VALIDATION_METRICS) -> object:
    """Kendall tau-b and Spearman rho (scipy.stats) per sweep and pooled, expected-sign convention."""
    rows = []
    groups = [(s, g) for s, g in joined.groupby("sweep", sort=False)]
    if len(groups) > 1 or not groups:
        groups.append((POOLED, joined))
    for sweep, g in groups:
        for metric in metrics:
            if metric not in g.columns:
                continue
            direction = _direction(metric)
            sign = -1.0 if direction == "lower" else 1.0
            sub = g[["test_accuracy", metric]].astype(float).dropna()
            n = len(sub)
            x = sign * sub[metric].to_numpy()
            y = sub["test_accuracy"].to_numpy()
            tau = tau_p = rho = rho_p = math.nan
            if n >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
                tau, tau_p = stats.kendalltau(x, y)
                rho, rho_p = stats.spearmanr(x, y)
            rows.append(
                {
                    "sweep": sweep,
                    "metric": metric,
                    "direction": direction,
                    "n": n,
                    "tau": float(tau),
                    "tau_p": float(tau_p),
                    "rho": float(rho),
                    "rho_p": float(rho_p),
                    "verdict": verdict(float(tau), float(tau_p)),
                }
            )
    return pd.DataFrame(
        rows, columns=["sweep", "metric", "direction", "n", "tau", "tau_p", "rho", "rho_p", "verdict"]
    )


def verdict(tau: float, p: float) -> str:
    """'works' | 'wrong sign' | 'weak' | 'n/a' (see the module docstring for the thresholds)."""
    if not math.isfinite(tau):
        return "n/a"
    if tau >= WORKS_TAU and p < WORKS_P:
        return "works"
    if tau <= -WORKS_TAU and p < WORKS_P:
        return "wrong sign"
    return "weak"


def validate_frames(models, truth, *, metrics: tuple[str, ...] = VALIDATION_METRICS) -> Validation:
    """Join and correlate in-memory tables (see join_truth, correlate)."""
    joined, missing = join_truth(models, truth)
    if joined.empty:
        raise ValidationError(
            "no model of the catalog matches a repo_id of the truth file; scan the zoo "
            "folder into this data root first (`ww-spectral scan --folder DIR --data ROOT`)"
        )
    return Validation(long=correlate(joined, metrics=metrics), joined=joined, unmatched=missing)


def validate(
    data_root: str, truth_path: str | os.PathLike, *, metrics: tuple[str, ...] = VALIDATION_METRICS
) -> Validation:
    """Validate the models stored under data_root (latest revision of each) against a truth file
    (truth.csv or the zoo folder)."""
    return validate_frames(latest_models(data_root), read_truth(truth_path), metrics=metrics)


# ---------------------------------------------------------------------------------------------- output
def _fmt(x: float) -> str:
    return "  n/a" if not math.isfinite(x) else f"{x:+.2f}"


def summary_lines(v: Validation, *, focus: tuple[str, ...] = ("alpha", "alpha_weighted")) -> list[str]:
    """Plain sentences: per sweep, which metrics work and where alpha does not."""
    lines = []
    long = v.long
    for sweep in dict.fromkeys(long["sweep"]):
        g = long[long["sweep"] == sweep]
        works = g.loc[g["verdict"] == "works", "metric"].tolist()
        wrong = g.loc[g["verdict"] == "wrong sign", "metric"].tolist()
        f = "; ".join(
            f"{m} tau {_fmt(g.loc[g['metric'] == m, 'tau'].iloc[0])}"
            for m in focus
            if (g["metric"] == m).any()
        )
        n = int(g["n"].max()) if len(g) else 0
        lines.append(
            f"{sweep} (n={n}): {f}. works: {', '.join(works) or 'none'}; "
            f"wrong sign: {', '.join(wrong) or 'none'}"
        )
    return lines


def format_table(v: Validation) -> str:
    """Fixed-width text: tau (rho) per sweep x metric, then the verdict lines."""
    tau, rho = v.wide("tau"), v.wide("rho")
    cols = list(tau.columns)
    width = max(16, *(len(c) + 2 for c in cols))
    head = f"{'sweep':<14}{'n':>4}  " + "".join(f"{c:>{width}}" for c in cols)
    ns = v.long.groupby("sweep", sort=False)["n"].max()
    out = [
        "Kendall tau (Spearman rho) of each metric with test accuracy, expected sign (+1 = perfect):",
        head,
        "-" * len(head),
    ]
    for sweep in tau.index:
        cells = "".join(
            f"{_fmt(tau.loc[sweep, c]) + ' (' + _fmt(rho.loc[sweep, c]).strip() + ')':>{width}}" for c in cols
        )
        out.append(f"{sweep:<14}{int(ns[sweep]):>4}  {cells}")
    out.append("")
    out += summary_lines(v)
    if v.unmatched:
        out.append(
            f"({len(v.unmatched)} truth rows had no model in the catalog: {', '.join(v.unmatched[:5])}"
            f"{' ...' if len(v.unmatched) > 5 else ''})"
        )
    return "\n".join(out)


def format_markdown(v: Validation) -> str:
    """Two Markdown tables (Kendall tau, Spearman rho), rows sweeps, columns metrics; then verdicts."""
    out = []
    ns = v.long.groupby("sweep", sort=False)["n"].max()
    for stat, label in (("tau", "Kendall tau"), ("rho", "Spearman rho")):
        w = v.wide(stat)
        cols = list(w.columns)
        out.append(
            f"{label} with test accuracy (expected sign: +1 = the metric ranks models exactly as "
            "their accuracy; negative = wrong direction)"
        )
        out.append("")
        out.append("| sweep | n | " + " | ".join(cols) + " |")
        out.append("|---|---:|" + "---:|" * len(cols))
        for sweep in w.index:
            cells = []
            for c in cols:
                val = w.loc[sweep, c]
                vd = v.long[(v.long["sweep"] == sweep) & (v.long["metric"] == c)]["verdict"].iloc[0]
                txt = _fmt(val).strip()
                cells.append(f"**{txt}**" if stat == "tau" and vd == "works" else txt)
            out.append(f"| {sweep} | {int(ns[sweep])} | " + " | ".join(cells) + " |")
        out.append("")
    out.append(f"Bold: works (tau >= {WORKS_TAU} and p < {WORKS_P}).")
    out.append("")
    out += [f"- {line}" for line in summary_lines(v)]
    return "\n".join(out)


def render(v: Validation, fmt: str = "table") -> str:
    """table | csv | json | markdown."""
    if fmt == "table":
        return format_table(v)
    if fmt == "markdown":
        return format_markdown(v)
    if fmt == "csv":
        return v.long.to_csv(index=False, float_format="%.6g")
    if fmt == "json":
        recs = v.long.to_dict(orient="records")
        for r in recs:
            for k, val in r.items():
                if isinstance(val, float) and not math.isfinite(val):
                    r[k] = None
        return json.dumps(
            {
                "convention": "expected sign: +1 = metric ranks models as their accuracy",
                "correlations": recs,
                "unmatched": list(v.unmatched),
            },
            indent=2,
        )
    raise ValidationError(f"unknown format {fmt!r}; use table, csv, json or markdown")
