"""`ww-spectral analyze SOURCE` and `ww-spectral describe SOURCE`.

analyze writes one row per layer (LAYER_COLUMN_NAMES) to --out FILE (.parquet, .csv or .json) or, without
--out, prints a readable table and the model summary. Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .errors import OptionError

OUT_SUFFIXES = (".parquet", ".csv", ".json")
TABLE_COLUMNS = ("layer_id", "longname", "layer_type", "shape", "num_evals", "alpha", "alpha_weighted", "D",
                 "num_pl_spikes", "log_norm", "log_spectral_norm", "stable_rank", "hill_alpha", "status",
                 "warning", "skip_reason")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze", help="per-layer WeightWatcher metrics of one checkpoint",
        description="Analyse every layer of SOURCE (a .safetensors file, a model folder, a .bin/.pt state "
                    "dict, a Hugging Face cache snapshot or an org/name[@rev] hub id).")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("--out", metavar="FILE", help="write the per-layer table to FILE (.parquet, .csv or .json)")
    p.add_argument("--fix-fingers", choices=["clip_xmax"], default=None,
                   help="WeightWatcher's fix_fingers='clip_xmax' (refit without the top eigenvalues)")
    p.add_argument("--backend", choices=["numpy", "torch"], default="numpy")
    p.add_argument("--precision", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda needs --backend torch")
    p.add_argument("--include-skipped", action="store_true",
                   help="also list tensors that are not layers (biases, norms, filtered, unsupported dtypes)")
    p.add_argument("--workers", type=int, default=None, help="layers analysed at once (default: automatic)")
    p.add_argument("--revision", default=None, help="hub/cache revision (overrides @rev in SOURCE)")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show a progress bar (default: when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(handler=cmd_analyze)

    d = subparsers.add_parser("describe", help="list the layers of one checkpoint (no eigenvalues)")
    d.add_argument("source", metavar="SOURCE")
    d.add_argument("--revision", default=None)
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
        args.source, include_skipped=args.include_skipped, progress=progress, revision=args.revision,
        fix_fingers=args.fix_fingers, backend=args.backend, precision=args.precision, device=args.device,
        workers=args.workers,
    )
    if out is not None:
        write_layers(result.layers, out)
        s = result.summary
        print(f"{out}: {len(result.layers)} rows ({s['n_layers_analysed']} analysed, "
              f"{s['n_layers_failed']} failed, {s['n_layers_skipped']} skipped) in {result.seconds:.1f} s")
        return 0
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200,
                           "display.max_colwidth", 48, "display.float_format", "{:.4f}".format):
        print(result.layers[list(TABLE_COLUMNS)].to_string(index=False))
    print(f"\n{result.ref.repo_id} (revision {result.ref.revision or '-'}), {result.seconds:.1f} s")
    print(_fmt_summary(result.summary))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    import pandas as pd

    from .analysis import describe

    table = describe(args.source, revision=args.revision)
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200,
                           "display.max_colwidth", 60):
        print(table.drop(columns=["skip_detail"]).to_string(index=False))
    n = int(table["analysed"].sum())
    print(f"\n{len(table)} tensors, {n} layers to analyse")
    return 0
