"""`ww-spectral analyze SOURCE` and `ww-spectral describe SOURCE`.

analyze writes one row per tensor (LAYER_COLUMN_NAMES; skipped tensors included, with status 'skipped' and
their reason) to --out FILE (.parquet, .csv or .json) or, without --out, prints a readable table (skipped
tensors only with --include-skipped) and the model summary. Names are printed escaped to one line
(progress.safe_text). Heavy imports (pandas, the analysis) happen inside the handlers: start-up stays fast.

The analysis options are flags (WeightWatcher's analyze() keywords, records.AnalysisOptions):
    [--randomize] [--mp-fit] [--fit PL|TPL|E_TPL] [--fix-fingers clip_xmax|xmin_peak] [--xmin-max X]
    [--max-fingers N] [--finger-thresh X] [--layers ID...] [--include GLOB...] [--exclude GLOB...]
    [--min-evals N] [--max-evals N] [--max-N N] [--glorot-fix] [--no-pool] [--conv1d] [--seed N]
    [--backend ...] [--precision ...] [--device ...]
Other commands take the same flags with `add_analysis_flags(parser)` and turn them into AnalysisOptions
with `options_from_args(args)`; `options_from_flags("--randomize --seed 3")` parses them from one string
(e.g. a scan's --options value).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import OptionError
from .progress import safe_text
from .records import FITS, AnalysisOptions, make_options

OUT_SUFFIXES = (".parquet", ".csv", ".json")
TABLE_COLUMNS = ("layer_id", "longname", "layer_type", "shape", "num_evals", "alpha", "alpha_weighted", "D",
                 "num_pl_spikes", "log_norm", "log_spectral_norm", "stable_rank", "hill_alpha", "status",
                 "warning", "skip_reason")
# Printed after `num_evals` when their option is on (every column is always in --out files).
_OPTION_TABLE_COLUMNS = (("pool", False, ("slice_id",)), ("fit", "TPL", ("Lambda",)), ("fit", "E_TPL", ("Lambda",)),
                         ("mp_fit", True, ("num_spikes", "mp_softrank")),
                         ("randomize", True, ("rand_distance", "ww_softrank", "num_traps")))

# flag dest -> AnalysisOptions field, for every analysis flag (add_analysis_flags); None/absent = default.
_FLAG_FIELDS = {
    "fix_fingers": "fix_fingers", "fit": "fit", "xmin_max": "xmin_max", "max_fingers": "max_fingers",
    "finger_thresh": "finger_thresh", "randomize": "randomize", "seed": "seed", "mp_fit": "mp_fit",
    "layers": "layers", "include": "include", "exclude": "exclude", "min_evals": "min_evals",
    "max_evals": "max_evals", "max_N": "max_N", "glorot_fix": "glorot_fix", "pool": "pool", "conv1d": "conv1d",
    "backend": "backend", "precision": "precision", "device": "device",
}


def _layer_selector(text: str) -> int | str:
    """One --layers value: an integer id (negative: leave it out), else a layer name or type."""
    try:
        return int(text)
    except ValueError:
        return text


_PLANNING_FLAGS = ("--layers", "--include", "--exclude", "--min-evals", "--max-evals", "--max-N", "--no-pool",
                   "--conv1d")


def add_analysis_flags(p: argparse.ArgumentParser, *, planning_only: bool = False) -> None:
    """The analysis options as flags (every field of records.AnalysisOptions that changes numbers).

    Every flag defaults to None / absent, so `options_from_args` passes only what was given and
    AnalysisOptions keeps its defaults (WeightWatcher 0.7.7's default analyze()). planning_only: only the
    flags that decide which layers there are (selection, size filters, pooling; for describe).
    """
    d = AnalysisOptions()
    g = _FlagGroup(p.add_argument_group("analysis options (WeightWatcher's analyze() keywords)"),
                   _PLANNING_FLAGS if planning_only else None)
    g.add_argument("--fix-fingers", choices=["clip_xmax", "xmin_peak"], default=None,
                   help="clip_xmax: refit without the top eigenvalues (--max-fingers, --finger-thresh); "
                        "xmin_peak: xmin searched near the ESD peak (--xmin-max); default: off")
    g.add_argument("--fit", choices=list(FITS), default=None,
                   help="PL: power law; TPL: truncated power law (adds Lambda); E_TPL: TPL with xmin_peak "
                        f"(default: {d.fit})")
    g.add_argument("--xmin-max", type=float, default=None, metavar="X",
                   help="xmin_peak / E_TPL: top of the xmin search range (default: 1.5 x the ESD peak)")
    g.add_argument("--max-fingers", type=int, default=None, metavar="N",
                   help=f"clip_xmax: WeightWatcher's max_fingers (default: {d.max_fingers})")
    g.add_argument("--finger-thresh", type=float, default=None, metavar="X",
                   help=f"clip_xmax: alpha must drop by more than X (default: {d.finger_thresh})")
    g.add_argument("--randomize", action="store_true", default=None,
                   help="also analyse each layer with its elements shuffled: rand_distance, ww_softrank, "
                        "correlation traps (num_traps, trap_positions), ...; default: off")
    g.add_argument("--seed", type=int, default=None, metavar="N",
                   help=f"--randomize: shuffles depend on (seed, tensor name) only (default: {d.seed})")
    g.add_argument("--mp-fit", action="store_true", default=None,
                   help="Marchenko-Pastur fit of the bulk: num_spikes, sigma_mp, mp_softrank, bulk_max, ...; "
                        "default: off")
    g.add_argument("--layers", nargs="+", type=_layer_selector, default=None, metavar="ID",
                   help="analyse only these layer ids (the layer_id column; negative ids leave layers out), "
                        "layer names, or layer types (dense, conv1d, conv2d, embedding); default: all")
    g.add_argument("--include", nargs="+", default=None, metavar="GLOB",
                   help="analyse only tensors whose name matches a glob, e.g. 'model.layers.*.mlp.*' "
                        "(default: every tensor)")
    g.add_argument("--exclude", nargs="+", default=None, metavar="GLOB",
                   help="never analyse tensors whose name matches a glob, e.g. '*lm_head*' (default: none)")
    g.add_argument("--min-evals", type=int, default=None, metavar="N",
                   help=f"analyse only layers with at least N eigenvalues, M*rf (default: {d.min_evals})")
    g.add_argument("--max-evals", type=int, default=None, metavar="N",
                   help=f"... and at most N (default: {d.max_evals})")
    g.add_argument("--max-N", dest="max_N", type=int, default=None, metavar="N",
                   help=f"... and N (the longer side) at most N (default: {d.max_N})")
    g.add_argument("--glorot-fix", action="store_true", default=None,
                   help="rescale each W by sqrt((N+M)/2) (Glorot normalisation; alpha and D do not change); "
                        "default: off")
    g.add_argument("--no-pool", dest="pool", action="store_false", default=None,
                   help="one row per conv2d kernel position (slice_id) instead of one pooled ESD per kernel "
                        "(default: pooled)")
    g.add_argument("--conv1d", action="store_true", default=None,
                   help="analyse 3-D (out, in, k) tensors as Conv1d layers, WeightWatcher's nn.Conv1d rule "
                        "(default: skipped, as WeightWatcher does for state dicts)")
    g.add_argument("--backend", choices=["numpy", "torch"], default=None,
                   help=f"eigensolver: numpy (scipy LAPACK) or torch (default: {d.backend})")
    g.add_argument("--precision", choices=["float32", "float64"], default=None,
                   help=f"arithmetic of the Gram matrix and eigensolve (default: {d.precision})")
    g.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help=f"where torch computes; cuda needs --backend torch (default: {d.device})")


def options_from_args(args: argparse.Namespace, base: AnalysisOptions | None = None) -> AnalysisOptions:
    """AnalysisOptions from the flags of add_analysis_flags (THE conversion: analyze and scan share it).

    base: the options the given flags change (default: AnalysisOptions()). Raises OptionError (one line,
    naming the fix) for values AnalysisOptions refuses.
    """
    given = {field: value for dest, field in _FLAG_FIELDS.items()
             if (value := getattr(args, dest, None)) is not None}
    return make_options(base, **given)


def options_from_flags(flags: str | Sequence[str], base: AnalysisOptions | None = None) -> AnalysisOptions:
    """AnalysisOptions from analysis flags in one string ("--randomize --seed 3 --fit TPL") or a list of
    tokens, e.g. a scan's --options value. Raises OptionError naming a bad or unknown flag."""
    tokens = shlex.split(flags) if isinstance(flags, str) else list(flags)
    parser = _FlagParser(prog="--options", add_help=False)
    add_analysis_flags(parser)
    args = parser.parse_args(tokens)
    return options_from_args(args, base)


class _FlagGroup:
    """An argument group that adds only the flags in `keep` (all when None)."""

    def __init__(self, group, keep: tuple[str, ...] | None) -> None:
        self.group, self.keep = group, keep

    def add_argument(self, flag: str, *args, **kwargs) -> None:
        if self.keep is None or flag in self.keep:
            self.group.add_argument(flag, *args, **kwargs)


class _FlagParser(argparse.ArgumentParser):
    """An ArgumentParser that raises OptionError instead of printing usage and exiting."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        raise OptionError(f"analysis flags: {message}; see `ww-spectral analyze --help`")


def _table_columns(options: AnalysisOptions) -> list[str]:
    cols = list(TABLE_COLUMNS)
    at = cols.index("num_evals") + 1
    extra = [c for name, value, names in _OPTION_TABLE_COLUMNS if getattr(options, name) == value for c in names]
    return cols[:at] + list(dict.fromkeys(extra)) + cols[at:]


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
    p.add_argument("--weight-file", metavar="NAME", default=None,
                   help="which weight file of a folder or hub repo holding several models to read, by file name "
                        "(e.g. model.Q4_K_M.gguf); default: safetensors, else torch files, else the GGUF file "
                        "whose name states the highest precision (ww_spectral/layout.py)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze", help="per-layer WeightWatcher metrics of one checkpoint",
        description="Analyse every layer of SOURCE (a .safetensors file, a model folder, a .bin/.pt state "
                    "dict, a Hugging Face cache snapshot or an org/name[@rev] hub id). Exit status 2 with a "
                    "one-line message when SOURCE cannot be read or holds no analysable layer.")
    _add_source_options(p)
    p.add_argument("--base-model", metavar="BASE", default=None,
                   help="the model's base (a file, folder, cache snapshot or org/name[@rev] hub id): also "
                        "analyse the delta W - W_base of every tensor both hold with the same shape (rows with "
                        "delta_kind base_delta and base_ref; others skipped with the reason); for a PEFT adapter "
                        "also the merged W_base + update (lora_merged); default: no base, the model's own rows only")
    p.add_argument("--out", metavar="FILE",
                   help="write the per-layer table, skipped tensors included (status 'skipped' and their "
                        "reason), to FILE (.parquet, .csv or .json); default: print the table")
    p.add_argument("--include-skipped", action="store_true",
                   help="also print tensors that are not layers (biases, norms, filtered, unsupported dtypes); "
                        "default: hidden from the printed table (--out files always hold them)")
    p.add_argument("--workers", type=int, default=None,
                   help="layers analysed at once (default: one per available core)")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="report each layer on stderr (default: on when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress output (default: off when stderr is not a terminal)")
    add_analysis_flags(p)
    p.set_defaults(handler=cmd_analyze)

    d = subparsers.add_parser(
        "describe", help="list the layers of one checkpoint (no eigenvalues)",
        description="List every tensor of SOURCE with its layer plan (shape, N, M, rf, number of "
                    "eigenvalues, analysed or why not) from the file headers alone: no tensor data is read "
                    "and nothing is computed.")
    _add_source_options(d)
    add_analysis_flags(d, planning_only=True)
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
    options = options_from_args(args)  # ... and before any import: bad values fail fast
    import pandas as pd

    from .analysis import analyze_model

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    result = analyze_model(
        args.source, include_skipped=True, progress=progress, revision=args.revision,
        allow_external_links=args.allow_external_links, weight_file=args.weight_file, workers=args.workers,
        base_model=args.base_model,
        **dataclasses.asdict(options),
    )
    deltas = _delta_lines(result.layers)
    if out is not None:
        write_layers(result.layers, out)  # every tensor: skipped ones with their reason
        status = result.layers["status"]
        print(f"{out}: {len(result.layers)} rows ({int((status == 'success').sum())} analysed, "
              f"{int((status == 'failed').sum())} failed, {int((status == 'skipped').sum())} skipped) in "
              f"{result.seconds:.1f} s")
        for line in deltas:
            print(line)
        return 0
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200,
                           "display.max_colwidth", 48, "display.float_format", "{:.4f}".format):
        shown = result.layers if args.include_skipped else result.layers[result.layers["status"] != "skipped"]
        columns = _table_columns(options)
        at = columns.index("longname") + 1
        # which rows are deltas, and which were dequantised from what format: shown only when some are
        columns[at:at] = [c for c in ("quant_format", "delta_kind") if (shown[c] != "").any()]
        print(_one_line_names(shown[columns]).to_string(index=False))
    print(f"\n{safe_text(result.ref.repo_id)} (revision {safe_text(result.ref.revision or '-')}), "
          f"{result.seconds:.1f} s; options: {options.label()} ({options.fingerprint()})")
    print(_fmt_summary(result.summary))
    for line in deltas:
        print(line)
    return 0


def _delta_lines(layers) -> list[str]:
    """Printed lines about delta / adapter rows (none for a model analysed on its own): how many of each
    delta_kind, and the update metrics (ww_spectral/deltas.py delta_summary)."""
    from .deltas import delta_summary

    kinds = layers["delta_kind"][layers["delta_kind"] != ""]
    if kinds.empty:
        return []
    counts = ", ".join(f"{k} x{n}" for k, n in kinds.value_counts().sort_index().items())
    summary = delta_summary(layers)
    base = f" against {safe_text(summary.pop('base_ref'))}" if summary["base_ref"] else ""
    summary.pop("base_ref", None)
    return [f"\ndelta rows: {counts}{base}", _fmt_summary(summary)]


def cmd_describe(args: argparse.Namespace) -> int:
    import pandas as pd

    from .analysis import describe

    table = describe(args.source, revision=args.revision, allow_external_links=args.allow_external_links,
                     weight_file=args.weight_file, **dataclasses.asdict(options_from_args(args)))
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200,
                           "display.max_colwidth", 60):
        print(_one_line_names(table.drop(columns=["skip_reason"])).to_string(index=False))
    n = int(table["analysed"].sum())
    print(f"\n{len(table)} tensors, {n} layers to analyse")
    return 0
