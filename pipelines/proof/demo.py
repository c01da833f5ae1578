"""`ww-spectral demo`: build the demo zoo, scan it with the real folder flow, rank it, check the ranks.

Offline and self-contained: the zoo (pipelines/proof/zoo.py) is trained when missing, scanned by the
Prefect flow `scan-folder` on a local Ray into --data (pipelines/flows.py), ranked by a catalog metric
(catalogs/catalog.py `leaderboard`) and correlated with the zoo's known test accuracy
(pipelines/proof/validation.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from catalogs.catalog import connect, leaderboard
from catalogs.cli import DEFAULT_DATA
from catalogs.metrics import DEFAULT_METRIC, get_metric

from . import DEFAULT_ZOO
from .stored import latest_models
from .truth import merge_truth, read_truth
from .validation import format_markdown, validate_frames
from .zoo import DEFAULT_GRID, TINY_GRID, build_zoo, zoo_is_complete


def _scan(zoo_dir: str, data_root: str, *, workers: int | None, ray_address: str | None) -> dict:
    """The real folder scan, with one progress line per model on stderr (as `ww-spectral scan`)."""
    # The flows read their progress switch with their other settings (pipelines/settings.py).
    os.environ["WW_SCAN_PROGRESS"] = "1"
    from .. import flows  # Prefect and Ray: loaded only when a demo runs

    return flows.scan_folder(folder=str(zoo_dir), data_root=str(data_root), ray_address=ray_address,
                             workers=workers)


def zoo_leaderboard(data_root: str, truth, metric) -> object:
    """The catalog's leaderboard by `metric`, restricted to the zoo's models, with their truth (sweep,
    test_accuracy), `predicted_rank` among them and `accuracy_rank` (1 = most accurate)."""
    con = connect(data_root)
    try:
        cols, rows = leaderboard(con, metric.name)
    finally:
        con.close()
    lb = merge_truth(pd.DataFrame(rows, columns=cols), truth, how="inner")
    lb = lb.sort_values(["rank", "repo_id"]).reset_index(drop=True)
    lb["predicted_rank"] = range(1, len(lb) + 1)
    lb["accuracy_rank"] = lb["test_accuracy"].rank(ascending=False, method="min").astype(int)
    return lb


def leaderboard_text(lb, metric_col: str, top: int | None) -> str:
    """The leaderboard as fixed-width text: predicted rank, model, sweep, metric, accuracy, its rank."""
    shown = lb if top is None else lb.head(top)
    name_w = max(8, *(len(str(r)) for r in shown["repo_id"]))
    head = f"{'rank':>4}  {'model':<{name_w}}  {'sweep':<12} {metric_col:>14}  {'test acc':>8}  {'acc rank':>8}"
    out = [head, "-" * len(head)]
    for _, r in shown.iterrows():
        out.append(f"{int(r['predicted_rank']):>4}  {str(r['repo_id']):<{name_w}}  {str(r['sweep']):<12} "
                   f"{float(r[metric_col]):>14.4f}  {float(r['test_accuracy']):>8.4f}  {int(r['accuracy_rank']):>8}")
    if top is not None and len(lb) > top:
        out.append(f"... {len(lb) - top} more (omit --top to see all)")
    return "\n".join(out)


def run_demo(*, zoo_dir: str = DEFAULT_ZOO, data_root: str = DEFAULT_DATA, metric: str | None = None,
             workers: int | None = None, ray_address: str | None = None, top: int | None = None,
             tiny: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Build the zoo if missing, scan it with the real folder flow, rank it, correlate with the truth.

    Returns {"text": the printed report, "scan": the scan summary, "validation": Validation,
    "leaderboard": DataFrame (zoo_leaderboard), "seconds": {"zoo", "scan", "total"}}.
    """
    log = log or (lambda _m: None)
    m = get_metric(metric or DEFAULT_METRIC)
    grid = TINY_GRID if tiny else DEFAULT_GRID
    t0 = time.perf_counter()
    if zoo_is_complete(zoo_dir, grid=grid):
        log(f"demo: zoo {zoo_dir} is complete ({len(grid.specs())} models); not retraining")
    else:
        log(f"demo: building the zoo in {zoo_dir} ({len(grid.specs())} models, CPU) ...")
    times = {"zoo": build_zoo(zoo_dir, grid=grid, log=log).seconds}
    t1 = time.perf_counter()
    log(f"demo: scanning {zoo_dir} into {data_root} (Prefect flow scan-folder, Ray, Parquet, DuckDB) ...")
    scan = _scan(zoo_dir, data_root, workers=workers, ray_address=ray_address)
    times["scan"] = time.perf_counter() - t1

    truth = read_truth(Path(zoo_dir))
    lb = zoo_leaderboard(data_root, truth, m)
    validation = validate_frames(latest_models(data_root), truth)
    times["total"] = time.perf_counter() - t0
    long = validation.long
    pooled = long[(long["metric"] == m.column) & (long["sweep"] == long["sweep"].iloc[-1])].iloc[0]
    lines = [
        f"scan: {scan['requested']} models: {scan['done']} analysed, {scan['skipped']} already stored, "
        f"{scan['failed']} failed ({scan['seconds']:.1f} s)",
        "",
        f"Leaderboard by {m.name} ({m.direction} is better) with the known test accuracy:",
        leaderboard_text(lb, m.column, top),
        "",
        f"{m.name} vs test accuracy over all {int(pooled['n'])} models: Kendall tau = {pooled['tau']:+.3f} "
        f"(p = {pooled['tau_p']:.2g}), Spearman rho = {pooled['rho']:+.3f} (p = {pooled['rho_p']:.2g}); "
        "expected sign, +1 = perfect ranking",
        "",
        format_markdown(validation),
        "",
        f"wall time: {times['total']:.1f} s (zoo {times['zoo']:.1f} s, scan {times['scan']:.1f} s)",
    ]
    return {"text": "\n".join(lines), "scan": scan, "validation": validation, "leaderboard": lb, "seconds": times}
