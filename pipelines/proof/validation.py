"""Does the data-free metric predict quality? Rank correlations of model metrics with true accuracy.

Layout of Martin & Mahoney, Nature Communications 12:4122 (2021), Tables 1-2: rows are model series
(here: the zoo's sweeps, plus every model pooled), columns are model-level metrics, cells are rank
correlations with the models' measured test accuracy.

SIGN CONVENTION ("expected sign"): each metric is oriented by its direction in catalogs/metrics.py before
correlating: for a lower-is-better metric (alpha, alpha_weighted, log norms, stable_rank, Hill alpha) we
correlate -metric with accuracy; for a higher-is-better one (share_alpha_2_6) +metric. So +1 means the
metric ranks the models exactly as their accuracy does, 0 means no information, and a NEGATIVE value
means the metric points the wrong way in that sweep.

The first column is the DEFAULT RANKING itself (`default_rank`, pipelines/proof/stored.py: the rank in the
default leaderboard, tier first, then alpha_weighted within a tier, the random-like tier by its own keys;
catalogs/metrics.py), lower is better.

Verdict per cell (stated so readers can check it): "works" when tau >= 0.3 and its two-sided p < 0.05;
"wrong sign" when tau <= -0.3 and p < 0.05; else "weak".

Randomly initialised models (truth column `steps` = 0, pipelines/proof/zoo.py) are checked apart: for each
ranking, where they stand among the zoo's models, and whether every one of them is ranked below every
trained model (a model without a value for the metric counts as ranked last).
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

from .stored import DEFAULT_RANK, latest_models
from .truth import ValidationError, merge_truth, read_truth, truth_key, unmatched

# Model-level metrics validated, in table column order (names of the `models` view / catalogs.metrics).
VALIDATION_METRICS = (
    DEFAULT_RANK, "alpha_weighted", "alpha", "hill_alpha", "log_alpha_norm", "log_norm", "log_spectral_norm",
    "stable_rank", "share_alpha_2_6",
)  # fmt: skip
RANDOM_INIT_STEPS = "steps"  # truth column: optimiser steps; 0 = a randomly initialised model
POOLED = "pooled"
WORKS_TAU = 0.3
WORKS_P = 0.05


@dataclass(frozen=True)
class Validation:
    """Correlations in long form plus the joined data.

    long: DataFrame (sweep, metric, direction, n, tau, tau_p, rho, rho_p, verdict), tau/rho in the
      expected-sign convention (module docstring); one row per (sweep, metric), sweeps then pooled.
    joined: one row per model: repo_id, sweep, test_accuracy, steps (when the truth has it) and the metric
      columns.
    unmatched: truth repo_ids with no model in the catalog (not analysed, or failed).
    random_init: DataFrame (metric, n, n_random, positions, all_last) when the truth names randomly
      initialised models (steps = 0), else None: see random_init_check.
    """

    long: object
    joined: object
    unmatched: tuple[str, ...]
    random_init: object = None

    def wide(self, stat: str = "tau"):
        """rows = sweeps (+ pooled), columns = metrics, cells = `stat` ("tau" | "rho" | "verdict")."""
        w = self.long.pivot(index="sweep", columns="metric", values=stat)
        cols = [m for m in VALIDATION_METRICS if m in w.columns]
        order = [s for s in dict.fromkeys(self.long["sweep"])]
        return w.loc[order, cols]


def _direction(metric: str) -> str:
    return "lower" if metric == DEFAULT_RANK else get_metric(metric).direction


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
    if RANDOM_INIT_STEPS in truth.columns:
        steps = dict(zip(truth["repo_id"].map(truth_key), truth[RANDOM_INIT_STEPS]))
        joined[RANDOM_INIT_STEPS] = joined["repo_id"].map(truth_key).map(steps)
    keep = ["repo_id", "sweep", "test_accuracy"] + [c for c in (RANDOM_INIT_STEPS, *VALIDATION_METRICS)
                                                      if c in joined.columns]
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


def random_init_check(joined, *, metrics: tuple[str, ...] = VALIDATION_METRICS):
    """Where the randomly initialised models (steps = 0) stand in each ranking, or None without any.

    One row per metric present: n (models), n_random, positions (1-based places of the random-init models
    when the n models are ordered best first by the metric's direction; ties share the best place; a
    missing value is last), all_last (True when every random-init model is below every trained model).
    """
    if RANDOM_INIT_STEPS not in joined.columns:
        return None
    is_random = joined[RANDOM_INIT_STEPS].astype(float) == 0
    if not is_random.any():
        return None
    rows = []
    for metric in metrics:
        if metric not in joined.columns:
            continue
        sign = 1.0 if _direction(metric) == "lower" else -1.0
        place = (sign * joined[metric].astype(float)).rank(method="min", na_option="bottom")
        worst_trained = place[~is_random].max() if (~is_random).any() else 0
        rows.append({"metric": metric, "n": len(joined), "n_random": int(is_random.sum()),
                     "positions": tuple(sorted(int(p) for p in place[is_random])),
                     "all_last": bool(place[is_random].min() > worst_trained)})
    return pd.DataFrame(rows, columns=["metric", "n", "n_random", "positions", "all_last"])


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
    return Validation(long=correlate(joined, metrics=metrics), joined=joined, unmatched=missing,
                      random_init=random_init_check(joined, metrics=metrics))


def validate(
    data_root: str, truth_path: str | os.PathLike, *, metrics: tuple[str, ...] = VALIDATION_METRICS
) -> Validation:
    """Validate the models stored under data_root (latest revision of each) against a truth file
    (truth.csv or the zoo folder)."""
    return validate_frames(latest_models(data_root), read_truth(truth_path), metrics=metrics)


# ---------------------------------------------------------------------------------------------- output
def _fmt(x: float) -> str:
    return "  n/a" if not math.isfinite(x) else f"{x:+.2f}"


def summary_lines(v: Validation, *, focus: tuple[str, ...] = (DEFAULT_RANK, "alpha_weighted")) -> list[str]:
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


def _mark(v: Validation, sweep: str, metric: str) -> bool:
    """True when the cell's verdict is 'works'."""
    hit = v.long[(v.long["sweep"] == sweep) & (v.long["metric"] == metric)]["verdict"]
    return bool(len(hit)) and hit.iloc[0] == "works"


def default_vs_lines(v: Validation) -> list[str]:
    """One sentence: the default ranking against alpha_weighted alone, pooled (tau), which is higher."""
    pooled = v.long[v.long["sweep"] == v.long["sweep"].iloc[-1]].set_index("metric")["tau"]
    if DEFAULT_RANK not in pooled or "alpha_weighted" not in pooled:
        return []
    d, a = float(pooled[DEFAULT_RANK]), float(pooled["alpha_weighted"])
    if not (math.isfinite(d) and math.isfinite(a)):
        return []
    word = "higher than" if d > a else "lower than" if d < a else "equal to"
    return [f"the default ranking's tau {_fmt(d)} is {word} alpha_weighted alone ({_fmt(a)}) over all "
            f"{int(v.long['n'].max())} models"]


def random_init_lines(v: Validation) -> list[str]:
    """Plain sentences: where the randomly initialised models stand in each ranking."""
    r = v.random_init
    if r is None or r.empty:
        return []
    n, k = int(r["n"].iloc[0]), int(r["n_random"].iloc[0])
    out = [f"randomly initialised models (steps = 0), {k} of {n}: their places in each ranking (1 = best)"]
    width = max(len(m) for m in r["metric"])
    for _, row in r.iterrows():
        where = ", ".join(str(p) for p in row["positions"])
        out.append(f"  {row['metric']:<{width}}  {'all last' if row['all_last'] else 'NOT all last':<12}  {where}")
    return out


def format_table(v: Validation) -> str:
    """Fixed-width text: Kendall tau then Spearman rho per sweep x metric (numbers aligned, * = works),
    the random-init check, the default against alpha_weighted, and the verdict lines."""
    ns = v.long.groupby("sweep", sort=False)["n"].max()
    sweep_w = max(8, *(len(str(s)) for s in ns.index)) + 2
    out = []
    for stat, label in (("tau", "Kendall tau"), ("rho", "Spearman rho")):
        w = v.wide(stat)
        cols = list(w.columns)
        widths = [max(7, len(c) + 2) for c in cols]
        head = f"{'sweep':<{sweep_w}}{'n':>4}" + "".join(f"{c:>{cw}}" for c, cw in zip(cols, widths))
        note = f"; * = works: tau >= {WORKS_TAU}, p < {WORKS_P}" if stat == "tau" else ""
        out += [f"{label} with test accuracy (expected sign: +1 = ranks models as their accuracy{note}):",
                head, "-" * len(head)]
        for sweep in w.index:
            cells = "".join(
                f"{_fmt(w.loc[sweep, c]) + ('*' if stat == 'tau' and _mark(v, sweep, c) else ' '):>{cw}}"
                for c, cw in zip(cols, widths))
            out.append(f"{str(sweep):<{sweep_w}}{int(ns[sweep]):>4}{cells}".rstrip())
        out.append("")
    out += random_init_lines(v)
    out += default_vs_lines(v)
    out.append("")
    out += summary_lines(v)
    if v.unmatched:
        out.append(
            f"({len(v.unmatched)} truth rows had no model in the catalog: {', '.join(v.unmatched[:5])}"
            f"{' ...' if len(v.unmatched) > 5 else ''})"
        )
    return "\n".join(out)


def format_markdown(v: Validation) -> str:
    """Two Markdown tables (Kendall tau, Spearman rho), rows sweeps, columns metrics; the random-init
    table; then the verdicts."""
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
                txt = _fmt(w.loc[sweep, c]).strip()
                cells.append(f"**{txt}**" if stat == "tau" and _mark(v, sweep, c) else txt)
            out.append(f"| {sweep} | {int(ns[sweep])} | " + " | ".join(cells) + " |")
        out.append("")
    out.append(f"Bold: works (tau >= {WORKS_TAU} and p < {WORKS_P}).")
    out.append("")
    r = v.random_init
    if r is not None and not r.empty:
        out += [f"Randomly initialised models (steps = 0): {int(r['n_random'].iloc[0])} of {int(r['n'].iloc[0])}; "
                "their places in each ranking (1 = best)", "",
                "| ranking | places | all below every trained model |", "|---|---|---|"]
        out += [f"| {row['metric']} | {', '.join(str(p) for p in row['positions'])} | "
                f"{'yes' if row['all_last'] else '**no**'} |" for _, row in r.iterrows()]
        out.append("")
    out += [f"- {line}" for line in default_vs_lines(v) + summary_lines(v)]
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
                "random_init": [] if v.random_init is None else [
                    {**r, "positions": list(r["positions"])} for r in v.random_init.to_dict(orient="records")],
                "unmatched": list(v.unmatched),
            },
            indent=2,
        )
    raise ValidationError(f"unknown format {fmt!r}; use table, csv, json or markdown")
