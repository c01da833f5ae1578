"""`ww-spectral demo`: build a demo zoo, scan it with the real folder flow, rank it, check the ranks.

Offline and self-contained: the zoo (pipelines/proof/zoo.py; kind mlp by default, or transformer) is
trained when missing, scanned by the Prefect flow `scan-folder` on a local Ray into --data
(pipelines/flows.py), ranked by the default leaderboard (catalogs/catalog.py `leaderboard`: tier first,
then alpha_weighted - the random-like tier by its own keys - catalogs/metrics.py) or by one metric, and correlated with the zoo's known test
accuracy (pipelines/proof/validation.py). It ends with the commands to run next.

Output: only ww-spectral's own progress lines on stderr; Prefect's and Ray's log lines and notices are
turned down to errors unless `verbose` (the global --verbose flag of pipelines/cli.py;
pipelines/ray_runtime.py quiet_output).
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from catalogs.catalog import connect, leaderboard
from catalogs.cli import DEFAULT_DATA
from catalogs.metrics import DEFAULT_METRIC, TIERS, get_metric, tiers_text

from ..ray_runtime import quiet_output
from . import DEFAULT_ZOOS
from .stored import latest_models
from .truth import merge_truth, read_truth
from .validation import format_table, validate_frames
from .zoo import build_zoo, get_kind, zoo_fingerprint, zoo_is_complete


def _scan(zoo_dir: str, data_root: str, *, workers: int | None, ray_address: str | None, verbose: bool) -> dict:
    """The real folder scan, with one progress line per model on stderr (as `ww-spectral scan`)."""
    # The flows read their progress switch with their other settings (pipelines/settings.py).
    os.environ["WW_SCAN_PROGRESS"] = "1"
    quiet_output(verbose=verbose)  # before Prefect is imported
    from .. import flows  # Prefect and Ray: loaded only when a demo runs

    return flows.scan_folder(folder=str(zoo_dir), data_root=str(data_root), ray_address=ray_address,
                             workers=workers)


def zoo_leaderboard(data_root: str, truth, metric: str | None = None) -> object:
    """The catalog's leaderboard - the default ranking (metric None) or one metric alone - restricted to the
    zoo's models, with their truth (sweep, test_accuracy), `predicted_rank` among them and `accuracy_rank`
    (1 = most accurate)."""
    con = connect(data_root)
    try:
        cols, rows = leaderboard(con, metric)
    finally:
        con.close()
    lb = merge_truth(pd.DataFrame(rows, columns=cols), truth, how="inner")
    lb = lb.sort_values(["rank", "repo_id"]).reset_index(drop=True)
    lb["predicted_rank"] = range(1, len(lb) + 1)
    lb["accuracy_rank"] = lb["test_accuracy"].rank(ascending=False, method="min").astype(int)
    return lb


def leaderboard_text(lb, metric_col: str, top: int | None) -> str:
    """The leaderboard as fixed-width text: predicted rank, model, sweep, [tier, share of layers in the 2-6
    band,] the metric, accuracy and its rank; numbers right-aligned."""
    shown = lb if top is None else lb.head(top)
    tiered = "tier" in shown.columns
    name_w = max(8, *(len(str(r)) for r in shown["repo_id"]))
    sweep_w = max(5, *(len(str(s)) for s in shown["sweep"]))
    metric_w = max(8, len(metric_col))
    head = f"{'rank':>4}  {'model':<{name_w}}  {'sweep':<{sweep_w}}"
    head += f"  {'tier':>4}  {'in 2-6':>6}" if tiered else ""
    head += f"  {metric_col:>{metric_w}}  {'test acc':>8}  {'acc rank':>8}"
    out = [head, "-" * len(head)]
    for _, r in shown.iterrows():
        line = f"{int(r['predicted_rank']):>4}  {str(r['repo_id']):<{name_w}}  {str(r['sweep']):<{sweep_w}}"
        if tiered:
            share = f"{float(r['share_alpha_2_6']):.0%}" if pd.notna(r["share_alpha_2_6"]) else "-"
            line += f"  {int(r['tier']):>4}  {share:>6}"
        value = f"{float(r[metric_col]):.3f}" if pd.notna(r[metric_col]) else "-"
        line += f"  {value:>{metric_w}}  {float(r['test_accuracy']):>8.4f}  {int(r['accuracy_rank']):>8}"
        out.append(line)
    if top is not None and len(lb) > top:
        out.append(f"... {len(lb) - top} more (omit --top to see all)")
    if tiered:
        out.append("tier: " + "; ".join(f"{t} {name}" for t, name in TIERS.items())
                   + " (catalogs/metrics.py); in 2-6: share of layers with 2 <= alpha <= 6")
    return "\n".join(out)


def next_commands(prog: str, *, data_root: str, zoo_dir: str, top_model: str | None) -> list[str]:
    """The commands to run after the demo, with this run's folders (quoted for a POSIX shell)."""
    d, z = shlex.quote(str(data_root)), shlex.quote(str(zoo_dir))
    report = shlex.quote(str(Path(data_root).parent / "ww-report")) if Path(data_root).parent != Path(".") \
        else "ww-report"
    lines = ["Next:",
             f"  {prog} report --data {d} --truth {z} --out {report}   # HTML report: open {report}/index.html"]
    if top_model:
        lines.append(f"  {prog} show {shlex.quote(top_model)} --data {d}   # the top model's layers, flags, tier")
    lines += [f"  {prog} sql --data {d} \"SELECT repo_id, tier, alpha_weighted, alpha FROM model_summaries "
              "ORDER BY tier, alpha_weighted LIMIT 5\"   # any SQL over the catalog's views",
              f"  catalog file: {shlex.quote(str(Path(data_root) / 'catalog.duckdb'))} (DuckDB views over the "
              "Parquet under the data folder)"]
    return lines


def run_demo(*, kind: str = "mlp", zoo_dir: str | None = None, data_root: str = DEFAULT_DATA,
             metric: str | None = None, workers: int | None = None, ray_address: str | None = None,
             top: int | None = None, tiny: bool = False, verbose: bool = False, prog: str = "ww-spectral",
             log: Callable[[str], None] | None = None) -> dict:
    """Build the zoo if missing, scan it with the real folder flow, rank it, correlate with the truth.

    metric: None ranks by the default (tiered) leaderboard; a metric name by that metric alone.
    prog: how the printed next commands call ww-spectral.
    Returns {"text": the printed report, "scan": the scan summary, "validation": Validation,
    "leaderboard": DataFrame (zoo_leaderboard), "fingerprint": the zoo's weights+truth hash,
    "seconds": {"zoo", "scan", "total"}}.
    """
    log = log or (lambda _m: None)
    kind_mod = get_kind(kind)
    zoo_dir = zoo_dir or DEFAULT_ZOOS[kind]
    m = get_metric(metric) if metric else None
    grid = kind_mod.TINY_GRID if tiny else kind_mod.DEFAULT_GRID
    t0 = time.perf_counter()
    if zoo_is_complete(zoo_dir, grid=grid):
        log(f"demo: zoo {zoo_dir} is complete ({len(grid.specs())} {kind} models); not retraining")
    else:
        log(f"demo: building the {kind} zoo in {zoo_dir} ({len(grid.specs())} models, CPU) ...")
    times = {"zoo": build_zoo(zoo_dir, grid=grid, log=log).seconds}
    t1 = time.perf_counter()
    log(f"demo: scanning {zoo_dir} into {data_root} (Prefect flow scan-folder, Ray, Parquet, DuckDB) ...")
    scan = _scan(zoo_dir, data_root, workers=workers, ray_address=ray_address, verbose=verbose)
    times["scan"] = time.perf_counter() - t1

    truth = read_truth(Path(zoo_dir))
    lb = zoo_leaderboard(data_root, truth, m.name if m else None)
    validation = validate_frames(latest_models(data_root), truth)
    times["total"] = time.perf_counter() - t0
    column = m.column if m else "default_rank"
    long = validation.long
    pooled = long[(long["metric"] == column) & (long["sweep"] == long["sweep"].iloc[-1])].iloc[0]
    title = (f"{m.name} alone ({m.direction} is better)" if m else
             f"the default ranking ({tiers_text()})")
    fingerprint = zoo_fingerprint(zoo_dir)
    lines = [
        f"scan: {scan['requested']} models: {scan['done']} analysed, {scan['skipped']} already stored, "
        f"{scan['failed']} failed ({scan['seconds']:.1f} s)",
        "",
        f"Leaderboard of the {kind} zoo by {title}, with the known test accuracy:",
        leaderboard_text(lb, m.column if m else DEFAULT_METRIC, top),
        "",
        f"{'default ranking' if m is None else m.name} vs test accuracy over all {int(pooled['n'])} models: "
        f"Kendall tau = {pooled['tau']:+.3f} (p = {pooled['tau_p']:.2g}), Spearman rho = {pooled['rho']:+.3f} "
        f"(p = {pooled['rho_p']:.2g}); expected sign, +1 = perfect ranking",
        "",
        format_table(validation),
        "",
        f"zoo fingerprint (weights + truth): {fingerprint}; wall time: {times['total']:.1f} s "
        f"(zoo {times['zoo']:.1f} s, scan {times['scan']:.1f} s)",
        "",
        *next_commands(prog, data_root=data_root, zoo_dir=zoo_dir,
                       top_model=str(lb["repo_id"].iloc[0]) if len(lb) else None),
    ]
    return {"text": "\n".join(lines), "scan": scan, "validation": validation, "leaderboard": lb,
            "fingerprint": fingerprint, "seconds": times}
