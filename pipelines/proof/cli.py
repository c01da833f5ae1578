"""CLI of the proof: `zoo build`, `validate`, `plot`, `report` and `demo` (the README's main command).

No heavy imports at module top: torch, matplotlib, duckdb, prefect and ray load inside the handlers.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..scan_cli import _positive_int  # one validator for every count option

DEFAULT_DATA = "ww-data"
DEFAULT_ZOO = "ww-data/zoo"


def register(subparsers) -> None:
    zoo = subparsers.add_parser("zoo", help="the demo zoo: small MLPs with known test accuracy")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True, metavar="ZOO_COMMAND")
    zb = zsub.add_parser("build", help="train the demo zoo into DIR (cached: a second run trains nothing)",
                         description="Train the fixed grid of small MLPs on scikit-learn's digits (no download) "
                         "into DIR: one Hugging Face model folder per model, plus truth.csv (measured clean "
                         "test accuracy) and manifest.json. Complete model folders are reused.")
    zb.add_argument("dir", metavar="DIR", nargs="?", default=DEFAULT_ZOO, help=f"zoo folder (default: {DEFAULT_ZOO})")
    zb.add_argument("--workers", type=_positive_int, default=2, help="training processes (default: 2)")
    zb.add_argument("--tiny", action="store_true", help="the seconds-long test grid instead of the real one")
    zb.set_defaults(handler=_cmd_zoo_build)

    v = subparsers.add_parser("validate", help="rank correlation of each model metric with true accuracy",
                              description="Kendall tau and Spearman rho between each model-level metric of "
                              "the catalog's `models` view and the true test accuracy of a truth file, per "
                              "sweep and pooled (expected sign: +1 = the metric ranks models as accuracy does).")
    v.add_argument("--data", default=DEFAULT_DATA, metavar="ROOT", help="DATA root (default: ./ww-data)")
    v.add_argument("--truth", required=True, metavar="FILE",
                   help="truth.csv (repo_id, sweep, test_accuracy, ...) or the zoo folder holding it")
    v.add_argument("--format", default="table", choices=["table", "csv", "json", "markdown"])
    v.set_defaults(handler=_cmd_validate)

    p = subparsers.add_parser("plot", help="PNG plots of a model: ESD + power-law fit, alpha by depth, ...",
                              description="Write the plots of a model (a local folder/file, a hub id, or a "
                              "repo_id stored in --data): alpha by depth, histogram of layer alphas with the "
                              "2-6 band, and per layer the log-log ESD with the fitted power law and xmin, the "
                              "histogram of log10 eigenvalues and D against candidate xmin.")
    p.add_argument("source", metavar="SOURCE_OR_MODEL")
    p.add_argument("--layer", metavar="NAME", help="only this layer's ESD plots (longname or tensor name)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: ./ww-plots/<model>)")
    p.add_argument("--data", default=DEFAULT_DATA, metavar="ROOT",
                   help="DATA root to look MODEL up in when it is not a path (default: ./ww-data)")
    p.add_argument("--models-dir", metavar="DIR", help="folder holding the scanned model folders (for a MODEL "
                   "from the catalog, whose weights the store does not keep)")
    p.set_defaults(handler=_cmd_plot)

    r = subparsers.add_parser("report", help="static HTML report: sortable leaderboard, model pages, plots",
                              description="Write OUT/index.html (open it from disk; no server): the sortable "
                              "leaderboard, one page per model with its plots, and the validation table when "
                              "--truth is given.")
    r.add_argument("--data", default=DEFAULT_DATA, metavar="ROOT", help="DATA root (default: ./ww-data)")
    r.add_argument("--out", required=True, metavar="DIR")
    r.add_argument("--truth", metavar="FILE", help="truth.csv (or the zoo folder): adds accuracy + validation")
    r.add_argument("--models-dir", metavar="DIR", help="folder of the scanned model folders, for ESD plots "
                   "(default: the truth file's folder)")
    r.add_argument("--metric", default=None, help="ranking metric (default: alpha_weighted)")
    r.add_argument("--no-layer-plots", action="store_true", help="skip the per-layer ESD plots (faster)")
    r.set_defaults(handler=_cmd_report)

    d = subparsers.add_parser("demo", help="build the demo zoo, scan it (Prefect + Ray), rank it, check the ranks",
                              description="The end-to-end demo, offline: builds the demo zoo when missing, runs "
                              "the real folder-scan flow over it on the embedded default (local Ray, Prefect, "
                              "Parquet + DuckDB under --data), prints the leaderboard with each model's known "
                              "test accuracy beside its predicted rank, and the rank correlations.")
    d.add_argument("--zoo", default=DEFAULT_ZOO, metavar="DIR", help=f"zoo folder (default: {DEFAULT_ZOO})")
    d.add_argument("--data", default=DEFAULT_DATA, metavar="ROOT", help="DATA root (default: ./ww-data)")
    d.add_argument("--metric", default=None, help="ranking metric (default: alpha_weighted)")
    d.add_argument("--workers", type=_positive_int, default=None, help="Ray tasks in flight (default: all CPUs)")
    d.add_argument("--ray-address", metavar="ADDR", help="existing Ray cluster (default: a local one)")
    d.add_argument("--top", type=_positive_int, default=None, help="show only the first N leaderboard rows")
    d.add_argument("--tiny", action="store_true", help="use the seconds-long test grid (for smoke tests)")
    d.set_defaults(handler=_cmd_demo)


# ------------------------------------------------------------------------------------------------ handlers
def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cmd_zoo_build(args) -> int:
    from .zoo import DEFAULT_GRID, TINY_GRID, build_zoo

    res = build_zoo(args.dir, grid=TINY_GRID if args.tiny else DEFAULT_GRID, workers=args.workers, log=_log)
    print(f"zoo {res.root}: {res.trained} trained, {res.reused} reused in {res.seconds:.1f} s; "
          f"truth: {res.truth_path}")
    return 0


def _cmd_validate(args) -> int:
    from .validation import render, validate

    print(render(validate(args.data, args.truth), args.format))
    return 0


def _cmd_plot(args) -> int:
    from ww_spectral import plots

    src = args.source
    local = Path(src).expanduser().exists()
    name = Path(src).expanduser().resolve().name if local else src.replace("/", "__")
    out = Path(args.out) if args.out else Path("ww-plots") / plots._slug(name)
    if not Path(src).expanduser().exists():
        layers = _catalog_layers(args.data, src)
        if layers is not None:  # a model stored in the catalog: alpha plots from the stored numbers
            from .report import _find_weights

            files = [plots.plot_alpha_by_depth(layers, path=out / "alpha_by_depth.png", title=f"{src}: alpha by depth"),
                     plots.plot_alpha_histogram(layers, path=out / "alpha_hist.png", title=f"{src}: layer alphas")]
            weights = _find_weights(src, args.models_dir)
            if weights:
                for name, ev in plots.layer_eigenvalues(weights, layer=args.layer).items():
                    files += list(plots.plot_layer(ev, out_dir=out, name=name).values())
            else:
                _log("plot: the store keeps no eigenvalues; pass --models-dir (the scanned folder) for ESD plots")
            for f in files:
                print(f)
            return 0
    res = plots.plot_model(str(Path(src).expanduser()) if Path(src).expanduser().exists() else src,
                           out_dir=out, layer=args.layer)
    print(res["alpha_depth"])
    print(res["alpha_hist"])
    for kinds in res["layers"].values():
        for f in kinds.values():
            print(f)
    return 0


def _catalog_layers(data_root: str, repo_id: str):
    """The latest stored layer rows of repo_id, or None (no store, or not in it)."""
    if not Path(data_root).exists():
        return None
    from catalogs.catalog import connect
    from catalogs.errors import CatalogError

    try:
        con = connect(data_root)
    except CatalogError:
        return None
    try:
        df = con.execute(
            "SELECT l.* FROM layers l JOIN (SELECT repo_id, revision, options_hash FROM models WHERE is_latest "
            "AND repo_id = ?) m USING (repo_id, revision, options_hash) ORDER BY layer_id", [repo_id]).df()
    except Exception:  # noqa: BLE001 - an empty store has no files behind its views
        return None
    finally:
        con.close()
    return df if len(df) else None


def _cmd_report(args) -> int:
    from .report import build_report

    res = build_report(args.data, args.out, truth=args.truth, models_dir=args.models_dir, metric=args.metric,
                       layer_plots=not args.no_layer_plots, log=_log)
    print(f"report: {res.index} ({res.n_models} models, {res.n_layer_plots} layer plots, {res.seconds:.1f} s); "
          f"open it in a browser: file://{res.index.resolve()}")
    return 0


def _cmd_demo(args) -> int:
    result = run_demo(zoo_dir=args.zoo, data_root=args.data, metric=args.metric, workers=args.workers,
                      ray_address=args.ray_address, top=args.top, tiny=args.tiny, log=_log)
    print(result["text"])
    return 0


# ------------------------------------------------------------------------------------------------ demo
def run_demo(*, zoo_dir: str = DEFAULT_ZOO, data_root: str = DEFAULT_DATA, metric: str | None = None,
             workers: int | None = None, ray_address: str | None = None, top: int | None = None,
             tiny: bool = False, log=None) -> dict:
    """Build the zoo if missing, scan it with the real folder flow, rank it, correlate with the truth.

    Returns {"text": the printed report, "scan": the scan summary, "validation": Validation,
    "leaderboard": DataFrame (rank, repo_id, metric, sweep, test_accuracy, accuracy_rank), "seconds": {...}}.
    """
    from catalogs.metrics import DEFAULT_METRIC, get_metric

    from .zoo import DEFAULT_GRID, TINY_GRID, build_zoo, read_truth, zoo_is_complete

    log = log or (lambda _m: None)
    m = get_metric(metric or DEFAULT_METRIC)
    grid = TINY_GRID if tiny else DEFAULT_GRID
    t0 = time.perf_counter()
    times = {}
    if zoo_is_complete(zoo_dir, grid=grid):
        log(f"demo: zoo {zoo_dir} is complete ({len(grid.specs())} models); not retraining")
    else:
        log(f"demo: building the zoo in {zoo_dir} ({len(grid.specs())} models, CPU) ...")
    zres = build_zoo(zoo_dir, grid=grid, log=log)
    times["zoo"] = zres.seconds

    t1 = time.perf_counter()
    from .. import flows

    flows.PROGRESS["enabled"] = True
    log(f"demo: scanning {zoo_dir} into {data_root} (Prefect flow scan-folder, Ray, Parquet, DuckDB) ...")
    scan = flows.scan_folder(folder=str(zoo_dir), data_root=str(data_root), ray_address=ray_address,
                             workers=workers)
    times["scan"] = time.perf_counter() - t1

    from catalogs.catalog import connect, leaderboard

    from .validation import format_markdown, load_models, validate_frames

    truth = read_truth(Path(zoo_dir) / "truth.csv")
    con = connect(data_root)
    try:
        cols, rows = leaderboard(con, m.name)
    finally:
        con.close()
    import pandas as pd

    lb = pd.DataFrame(rows, columns=cols)
    names = set(truth["repo_id"].astype(str))
    lb = lb[lb["repo_id"].astype(str).map(lambda r: r.split("/")[-1]).isin(names)].copy()
    lb["_key"] = lb["repo_id"].astype(str).map(lambda r: r.split("/")[-1])
    lb = lb.merge(truth[["repo_id", "sweep", "test_accuracy"]].rename(columns={"repo_id": "_key"}), on="_key")
    lb = lb.drop(columns="_key").sort_values(["rank", "repo_id"]).reset_index(drop=True)
    lb["predicted_rank"] = range(1, len(lb) + 1)  # among the zoo's models only
    lb["accuracy_rank"] = lb["test_accuracy"].rank(ascending=False, method="min").astype(int)
    validation = validate_frames(load_models(data_root), truth)
    times["total"] = time.perf_counter() - t0

    pooled = validation.long[(validation.long["metric"] == m.column)
                             & (validation.long["sweep"] == validation.long["sweep"].iloc[-1])].iloc[0]
    lines = [
        f"scan: {scan['requested']} models: {scan['done']} analysed, {scan['skipped']} already stored, "
        f"{scan['failed']} failed ({scan['seconds']:.1f} s)",
        "",
        f"Leaderboard by {m.name} ({m.direction} is better) with the known test accuracy:",
        _leaderboard_text(lb, m.column, top),
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


def _leaderboard_text(lb, metric_col: str, top: int | None) -> str:
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
