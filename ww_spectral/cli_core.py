"""`ww-spectral analyze SOURCE` and `ww-spectral describe SOURCE`.

analyze writes one row per tensor (LAYER_COLUMN_NAMES; skipped tensors included, with status 'skipped' and
their reason) to --out FILE (.parquet, .csv or .json) or, without --out, prints a readable table (skipped
tensors only with --include-skipped) and the model summary. Names are printed escaped to one line
(progress.safe_text). Heavy imports (pandas, the analysis) happen inside the handlers: start-up stays fast.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .errors import OptionError
from .progress import safe_text

OUT_SUFFIXES = (".parquet", ".csv", ".json")
TABLE_COLUMNS = ("layer_id", "longname", "layer_type", "shape", "num_evals", "alpha", "alpha_weighted", "D",
                 "num_pl_spikes", "log_norm", "log_spectral_norm", "stable_rank", "hill_alpha", "status",
                 "warning", "skip_reason")


def _add_source_options(p: argparse.ArgumentParser) -> None:
    """SOURCE and the options that say where its weights come from (shared by analyze and describe)."""
    p.add_argument("source", metavar="SOURCE",
                   help="a .safetensors/.bin/.pt file, a model folder, a Hugging Face cache snapshot or an "
                        "org/name[@rev] hub id")
    p.add_argument("--revision", default=None,
                   help="hub/cache branch, tag or commit; overrides @rev in SOURCE (default: @rev, else main)")
    p.add_argument("--allow-external-links", action="store_true", default=False,
                   help="read weight files that a model folder links to outside itself (symlinks or index "
                        "entries); default: refused")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze", help="per-layer WeightWatcher metrics of one checkpoint",
        description="Analyse every layer of SOURCE (a .safetensors file, a model folder, a .bin/.pt state "
                    "dict, a Hugging Face cache snapshot or an org/name[@rev] hub id). Exit status 2 with a "
                    "one-line message when SOURCE cannot be read or holds no analysable layer.")
    _add_source_options(p)
    p.add_argument("--out", metavar="FILE",
                   help="write the per-layer table, skipped tensors included (status 'skipped' and their "
                        "reason), to FILE (.parquet, .csv or .json); default: print the table")
    p.add_argument("--fix-fingers", choices=["clip_xmax"], default=None,
                   help="WeightWatcher's fix_fingers='clip_xmax' (refit without the top eigenvalues); "
                        "default: off")
    p.add_argument("--backend", choices=["numpy", "torch"], default="numpy",
                   help="eigensolver: numpy (scipy LAPACK) or torch (default: %(default)s)")
    p.add_argument("--precision", choices=["float32", "float64"], default="float32",
                   help="arithmetic of the Gram matrix and eigensolve (default: %(default)s)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where torch computes; cuda needs --backend torch (default: %(default)s)")
    p.add_argument("--include-skipped", action="store_true",
                   help="also print tensors that are not layers (biases, norms, filtered, unsupported dtypes); "
                        "default: hidden from the printed table (--out files always hold them)")
    p.add_argument("--workers", type=int, default=None,
                   help="layers analysed at once (default: one per available core)")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="report each layer on stderr (default: on when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress output (default: off when stderr is not a terminal)")
    p.set_defaults(handler=cmd_analyze)

    d = subparsers.add_parser(
        "describe", help="list the layers of one checkpoint (no eigenvalues)",
        description="List every tensor of SOURCE with its layer plan (shape, N, M, rf, number of "
                    "eigenvalues, analysed or why not) from the file headers alone: no tensor data is read "
                    "and nothing is computed.")
    _add_source_options(d)
    d.set_defaults(handler=cmd_describe)


def _check_out(out: str | None) -> Path | None:
    if out is None:
        return None
    path = Path(out)
    if path.suffix.lower() not in OUT_SUFFIXES:
        raise OptionError(f"--out {out}: unknown file type {path.suffix or '(none)'!r}; "
                          f"use a name ending in {', '.join(OUT_SUFFIXES)}")
    return path


def write_layers(layers, path: Path) -> None:
    """Write the per-layer table to .parquet / .csv / .json (records)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        layers.to_parquet(path, index=False)
    elif suffix == ".csv":
        layers.to_csv(path, index=False)
    else:
        layers.to_json(path, orient="records", indent=1, double_precision=15)


def _one_line_names(table):
    """The table with every text column escaped to one line (a name must not forge a line of output)."""
    table = table.copy()
    for c in table.columns:
        if table[c].dtype == object:
            table[c] = table[c].map(lambda v: safe_text(v) if isinstance(v, str) else v)
    return table


def _fmt_summary(summary: dict) -> str:
    lines = []
    for k, v in summary.items():
        if isinstance(v, float):
            lines.append(f"  {k:<24} {'nan' if math.isnan(v) else f'{v:.4f}'}")
        else:
            lines.append(f"  {k:<24} {v}")
    return "\n".join(lines)


def cmd_analyze(args: argparse.Namespace) -> int:
    out = _check_out(args.out)  # fail before any work
    import pandas as pd

    from .analysis import analyze_model

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    result = analyze_model(
        args.source, include_skipped=True, progress=progress, revision=args.revision,
        allow_external_links=args.allow_external_links, fix_fingers=args.fix_fingers, backend=args.backend,
        precision=args.precision, device=args.device, workers=args.workers,
    )
    if out is not None:
        write_layers(result.layers, out)  # every tensor: skipped ones with their reason
        s = result.summary
        print(f"{out}: {len(result.layers)} rows ({s['n_layers_analysed']} analysed, "
              f"{s['n_layers_failed']} failed, {s['n_layers_skipped']} skipped) in {result.seconds:.1f} s")
        return 0
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200,
                           "display.max_colwidth", 48, "display.float_format", "{:.4f}".format):
        shown = result.layers if args.include_skipped else result.layers[result.layers["status"] != "skipped"]
        print(_one_line_names(shown[list(TABLE_COLUMNS)]).to_string(index=False))
    print(f"\n{safe_text(result.ref.repo_id)} (revision {safe_text(result.ref.revision or '-')}), "
          f"{result.seconds:.1f} s")
    print(_fmt_summary(result.summary))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    import pandas as pd

    from .analysis import describe

    table = describe(args.source, revision=args.revision, allow_external_links=args.allow_external_links)
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200,
                           "display.max_colwidth", 60):
        print(_one_line_names(table.drop(columns=["skip_reason"])).to_string(index=False))
    n = int(table["analysed"].sum())
    print(f"\n{len(table)} tensors, {n} layers to analyse")
    return 0
