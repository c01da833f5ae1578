"""The proof's commands: `zoo build`, `validate`, `plot`, `report` and `demo` (the README's main command).

The dispatcher (pipelines/cli.py) imports this module at start-up to build the parsers, so each command's
implementation module is imported by its handler, when it runs: most of them load numpy, pandas,
matplotlib, DuckDB, Prefect or Ray (and the rest cost start-up time for every other command).
"""

from __future__ import annotations

import sys
from pathlib import Path

from catalogs.cli import DEFAULT_DATA
from catalogs.errors import CatalogError

from ..scan_cli import _positive_int  # one validator for every count option
from . import DEFAULT_ZOOS


def register(subparsers) -> None:
    _register_zoo(subparsers)
    _register_validate(subparsers)
    _register_plot(subparsers)
    _register_report(subparsers)
    _register_demo(subparsers)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ zoo
KIND_HELP = ("zoo kind: mlp (MLPs on scikit-learn's digits), transformer (small transformers on a synthetic "
             "sequence task) or conv (small conv nets on a synthetic image task) (default: mlp)")
DIR_HELP = "zoo folder (default: " + ", ".join(f"{d} for --kind {k}" for k, d in DEFAULT_ZOOS.items()) + ")"


def _register_zoo(subparsers) -> None:
    p = subparsers.add_parser("zoo", help="the demo zoos: small models with known test accuracy",
                              description="Build the demo zoos (small models trained on CPU with known clean "
                              "test accuracy) or print a zoo's fingerprint.")
    sub = p.add_subparsers(dest="zoo_command", required=True, metavar="ZOO_COMMAND")
    b = sub.add_parser("build", help="train a demo zoo into DIR (cached: a second run trains nothing)",
                       description="Train the fixed grid of a zoo kind into DIR: one Hugging Face model folder per "
                       "model, plus truth.csv (each model's sweep, factors, optimiser steps - 0 for the randomly "
                       "initialised members - and measured clean test accuracy) and manifest.json. Complete model "
                       "folders are reused. Training is bit-for-bit reproducible (pinned kernels, one thread per "
                       "process, fixed seeds): the printed fingerprint is the same on every build of a grid.")
    b.add_argument("dir", metavar="DIR", nargs="?", default=None, help=DIR_HELP)
    b.add_argument("--kind", choices=list(DEFAULT_ZOOS), default="mlp", help=KIND_HELP)
    b.add_argument("--workers", type=_positive_int, default=2, help="training processes (default: 2)")
    b.add_argument("--tiny", action="store_true", help="the seconds-long test grid instead of the real one "
                   "(default: the real grid)")
    b.set_defaults(handler=_cmd_zoo_build)
    f = sub.add_parser("fingerprint", help="print a zoo's fingerprint (weights + truth)",
                       description="Print the sha256 (16 hex) of a built zoo's truth file and every model's "
                       "weights: two builds of one grid that print the same fingerprint are bit-for-bit the same.")
    f.add_argument("dir", metavar="DIR", nargs="?", default=None, help=DIR_HELP)
    f.add_argument("--kind", choices=list(DEFAULT_ZOOS), default="mlp", help=KIND_HELP + "; picks the default DIR")
    f.set_defaults(handler=_cmd_zoo_fingerprint)


def _cmd_zoo_build(args) -> int:
    from . import zoo

    kind = zoo.get_kind(args.kind)
    res = zoo.build_zoo(args.dir or DEFAULT_ZOOS[args.kind], grid=kind.TINY_GRID if args.tiny else kind.DEFAULT_GRID,
                        workers=args.workers, log=_log)
    print(f"zoo {res.root} ({res.kind}): {res.trained} trained, {res.reused} reused in {res.seconds:.1f} s; "
          f"truth: {res.truth_path}; fingerprint {zoo.zoo_fingerprint(res.root)}")
    return 0


def _cmd_zoo_fingerprint(args) -> int:
    from .zoo import zoo_fingerprint

    print(zoo_fingerprint(args.dir or DEFAULT_ZOOS[args.kind]))
    return 0


# ------------------------------------------------------------------------------------------------ validate
def _register_validate(subparsers) -> None:
    p = subparsers.add_parser("validate", help="rank correlation of each model metric with true accuracy",
                              description="Kendall tau and Spearman rho between each model-level metric of "
                              "the catalog's `models` view and the true test accuracy of a truth file, per "
                              "sweep and pooled (expected sign: +1 = the metric ranks models as accuracy does), "
                              "the default ranking (tier, then alpha_weighted) first; and where the randomly "
                              "initialised models (truth column steps = 0) stand in each ranking.")
    p.add_argument("--data", default=DEFAULT_DATA, metavar="ROOT", help="DATA root (default: ./ww-data)")
    p.add_argument("--truth", required=True, metavar="FILE",
                   help="truth.csv (repo_id, sweep, test_accuracy, ...) or the zoo folder holding it")
    p.add_argument("--format", default="table", choices=["table", "csv", "json", "markdown"],
                   help="output format (default: table)")
    p.set_defaults(handler=_cmd_validate)


def _cmd_validate(args) -> int:
    from . import validation

    print(validation.render(validation.validate(args.data, args.truth), args.format))
    return 0


# ------------------------------------------------------------------------------------------------ plot
def _register_plot(subparsers) -> None:
    p = subparsers.add_parser("plot", help="PNG plots of a model: ESD + power-law fit, alpha by depth, ...",
                              description="Write the plots of a model (a local folder/file, a hub id, or a "
                              "repo_id stored in --data): alpha by depth, histogram of layer alphas with the "
                              "2-6 band, and per layer the log-log ESD with the fitted power law and xmin, the "
                              "histogram of log10 eigenvalues and D against candidate xmin.")
    p.add_argument("source", metavar="SOURCE_OR_MODEL", help="a model folder or file, a hub id org/name[@rev], "
                   "or a repo_id stored under --data")
    p.add_argument("--layer", metavar="NAME", help="only this layer's ESD plots, by longname or tensor name "
                   "(default: every analysed layer)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: ./ww-plots/<model>)")
    p.add_argument("--data", default=DEFAULT_DATA, metavar="ROOT",
                   help="DATA root to look MODEL up in when it is not a path (default: ./ww-data)")
    p.add_argument("--models-dir", metavar="DIR", help="folder holding the scanned model folders (for a MODEL "
                   "from the catalog, whose weights the store does not keep; default: none, the ESD plots of a "
                   "stored model are then left out)")
    p.set_defaults(handler=_cmd_plot)


def _stored(data_root: str, repo_id: str):
    """(models row, layer rows) of repo_id's latest revision in the store, or None (no store, not in it)."""
    from .stored import latest_layers, latest_models

    try:
        models = latest_models(data_root, repo_id=repo_id)
    except CatalogError:  # no store at data_root: the source is a hub id, not a stored model
        return None
    if models.empty:
        return None
    return models.iloc[0], latest_layers(data_root, repo_id=repo_id)


def _cmd_plot(args) -> int:
    from ww_spectral import plots

    from .report_html import page_name
    from .spectra import draw_stored_model

    path = Path(args.source).expanduser()
    name = path.resolve().name if path.exists() else args.source
    out = Path(args.out) if args.out else Path("ww-plots") / page_name(name)
    stored = None if path.exists() else _stored(args.data, args.source)
    if stored is not None:  # a stored model: alpha plots from the stored numbers, ESDs when weights are found
        row, layers = stored
        figures = draw_stored_model(row, layers, out_dir=out, models_dir=args.models_dir, layer=args.layer)
        if figures.note:
            _log(f"plot: {figures.note}")
        files = figures.paths()
    else:
        res = plots.plot_model(str(path) if path.exists() else args.source, out_dir=out, layer=args.layer)
        files = [res["alpha_depth"], res["alpha_hist"], *(f for k in res["layers"].values() for f in k.values())]
    for f in files:
        print(f)
    return 0


# ------------------------------------------------------------------------------------------------ report
def _register_report(subparsers) -> None:
    p = subparsers.add_parser("report", help="static HTML report: sortable leaderboard, model pages, plots",
                              description="Write OUT/index.html (open it from disk; no server): the sortable "
                              "leaderboard, one page per model with its plots, and the validation table when "
                              "--truth is given. OUT must be a new folder or one an earlier report wrote: it "
                              "is replaced whole; any other folder is refused and left untouched.")
    p.add_argument("--data", default=DEFAULT_DATA, metavar="ROOT", help="DATA root (default: ./ww-data)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="report folder: new, or written by an earlier report (never the data root)")
    p.add_argument("--truth", metavar="FILE", help="truth.csv (or the zoo folder): adds accuracy + validation "
                   "(default: none)")
    p.add_argument("--models-dir", metavar="DIR", help="folder of the scanned model folders, for ESD plots "
                   "(default: the truth file's folder)")
    p.add_argument("--metric", default=None, help="rank by this metric alone (default: the default ranking: "
                   "tier first, then alpha_weighted)")
    p.add_argument("--no-layer-plots", action="store_true", help="skip the per-layer ESD plots (faster; "
                   "default: draw them)")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args) -> int:
    from .report import build_report

    res = build_report(args.data, args.out, truth=args.truth, models_dir=args.models_dir, metric=args.metric,
                       layer_plots=not args.no_layer_plots, log=_log)
    print(f"report: {res.index} ({res.n_models} models, {res.n_layer_plots} layer plots, {res.seconds:.1f} s); "
          f"open it in a browser: {res.index.as_uri()}")
    return 0


# ------------------------------------------------------------------------------------------------ demo
def _register_demo(subparsers) -> None:
    p = subparsers.add_parser("demo", help="build a demo zoo, scan it (Prefect + Ray), rank it, check the ranks",
                              description="The end-to-end demo, offline: builds the demo zoo when missing, runs "
                              "the real folder-scan flow over it on the embedded default (local Ray, Prefect, "
                              "Parquet + DuckDB under --data), prints the default leaderboard with each model's "
                              "known test accuracy beside its predicted rank, the rank correlations, and the "
                              "commands to run next. Only ww-spectral's progress lines are printed on stderr "
                              "(Prefect's and Ray's with the global --verbose).")
    p.add_argument("--kind", choices=list(DEFAULT_ZOOS), default="mlp", help=KIND_HELP)
    p.add_argument("--zoo", default=None, metavar="DIR", help=DIR_HELP)
    p.add_argument("--data", default=DEFAULT_DATA, metavar="ROOT", help=f"DATA root (default: {DEFAULT_DATA})")
    p.add_argument("--metric", default=None, help="rank by this metric alone (default: the default ranking: "
                   "tier first, then alpha_weighted)")
    p.add_argument("--workers", type=_positive_int, default=None, help="Ray tasks in flight (default: all CPUs)")
    p.add_argument("--ray-address", metavar="ADDR", help="existing Ray cluster (default: a local one)")
    p.add_argument("--top", type=_positive_int, default=None, help="show only the first N leaderboard rows "
                   "(default: all)")
    p.add_argument("--tiny", action="store_true", help="use the seconds-long test grid, for smoke tests "
                   "(default: the real grid)")
    p.set_defaults(handler=_cmd_demo)


def program_name(argv0: str | None = None) -> str:
    """How the user called ww-spectral, for the commands the demo prints: `ww-spectral` when that is what
    the shell finds, else the path they ran (e.g. .venv/bin/ww-spectral), else `python -m pipelines.cli`."""
    import shlex
    import shutil

    argv0 = sys.argv[0] if argv0 is None else argv0
    found = shutil.which("ww-spectral")
    if Path(argv0).name == "ww-spectral":
        if found and Path(found).resolve() == Path(argv0).resolve():
            return "ww-spectral"
        return shlex.quote(argv0)
    return "ww-spectral" if found else f"{shlex.quote(sys.executable)} -m pipelines.cli"


def _cmd_demo(args) -> int:
    from .demo import run_demo

    result = run_demo(kind=args.kind, zoo_dir=args.zoo, data_root=args.data, metric=args.metric,
                      workers=args.workers, ray_address=args.ray_address, top=args.top, tiny=args.tiny,
                      verbose=getattr(args, "verbose", False), prog=program_name(), log=_log)
    print(result["text"])
    return 0
