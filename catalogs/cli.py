"""CLI: `catalog build|compact`, `leaderboard`, `sql`, `show`, `scans` (registered by the dispatcher, pipelines/cli.py).

This module is imported when `ww-spectral` starts, so it imports only light modules at the top: the
handlers import catalogs.catalog and catalogs.compact (pyarrow, pandas, DuckDB) when they run, and
`ww-spectral --help` stays fast. The read commands (leaderboard, sql, show) write nothing and run on
a sandboxed connection (catalogs/catalog.py). Output formats: table (fits the terminal: long cells are
cut with '…' and columns that do not fit are dropped, with a note), csv and json (no decorations, full
precision, for pipes), markdown.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import shlex
import shutil
import sys

from ww_spectral.progress import safe_text

from .errors import CatalogError
from .explain import explain
from .metrics import DEFAULT_METRIC, GROUPS, METRICS, get_group, get_metric, tiers_text

DEFAULT_DATA = "ww-data"
_MAX_CELL = 42
_REVISION_CHARS = 12  # tables show revisions this short (csv/json keep them whole); `show` takes a prefix
_DECIMALS = 4  # tables show floats with this many decimals, right-aligned
_FORMATS = ("table", "csv", "json", "markdown")
_FORMAT_HELP = ("output format (default: table, fitted to the terminal; csv and json keep full precision "
                "and whole revisions, for pipes)")


def _data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=DEFAULT_DATA, metavar="ROOT",
                   help=f"DATA root: a folder or an s3:// / gs:// URI (default: ./{DEFAULT_DATA})")


def _metric_names() -> str:
    return ", ".join(m.name for m in METRICS)


def register(subparsers) -> None:
    cat = subparsers.add_parser(
        "catalog", help="build or compact the DuckDB catalog over a DATA root",
        description="The DuckDB catalog: a file of views over the store's Parquet (ROOT/catalog.duckdb). "
                    "The read commands work without it; it makes them start faster.")
    cat_sub = cat.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    b = cat_sub.add_parser(
        "build", help="create or refresh ROOT/catalog.duckdb (views over the Parquet)",
        description="Create or refresh the catalog file. Its views hold no absolute path: they read the "
                    "store the file sits in, wherever the folder is copied. Open it in a plain DuckDB "
                    "client from the DATA folder (cd ROOT && duckdb catalog.duckdb) or after "
                    "SET file_search_path = 'ROOT'.")
    _data(b)
    b.add_argument("--db", default=None, metavar="FILE",
                   help="catalog file (default: ROOT/catalog.duckdb; for s3:// and gs:// roots "
                        "~/.cache/ww-spectral/catalogs/<hash>.duckdb)")
    b.set_defaults(handler=_cmd_build)
    c = cat_sub.add_parser(
        "compact", help="merge per-model Parquet files into larger ones (same results)",
        description="Merge the per-model Parquet files of each owner= folder into one file: the same rows, "
                    "fewer files, much faster leaderboards on large stores. Safe while others read.")
    _data(c)
    c.add_argument("--min-files", type=int, default=2, metavar="N",
                   help="compact a partition when it holds at least N files (default: 2)")
    c.set_defaults(handler=_cmd_compact)

    lb = subparsers.add_parser(
        "leaderboard", help="rank models: tier first (well trained ... random-like), then alpha_weighted",
        description="Rank the latest revision of every stored model. Default: " + tiers_text() + " (the rule "
                    "and its thresholds: catalogs/metrics.py); each row shows its tier, the share of its layers "
                    "with 2 <= alpha <= 6 and the share that look random. --metric NAME ranks by that metric "
                    "alone, as WeightWatcher does (a random-init model can then come first).")
    _data(lb)
    lb.add_argument("--metric", default=None, metavar="NAME",
                    help=f"rank by this metric alone, its direction from catalogs/metrics.py: {_metric_names()} "
                         f"(default: none; the tiered ranking with {DEFAULT_METRIC} within a tier)")
    lb.add_argument("--tiered", action="store_true",
                    help="with --metric: rank by tier first, then by that metric (default: off)")
    lb.add_argument("--group-by", default=None, metavar="GROUP",
                    help=f"rank within groups: {', '.join(g for g in GROUPS if g != 'none')} (default: none)")
    lb.add_argument("--where", default=None, metavar="SQL",
                    help='SQL filter over the ranked columns (the models row with its tier: model_summaries_latest; '
                         'per-layer counts are in model_summaries), e.g. "downloads > 1000" or "tier <= 2" '
                         '(default: none)')
    lb.add_argument("--top", type=int, default=None, metavar="N",
                    help="keep ranks <= N within each group (default: all)")
    lb.add_argument("--family", default=None, metavar="BASE",
                    help="rank the fine-tunes and adapters of base model BASE (a repo_id; 'all': every family) "
                         "by the metrics of their update against it (W - W_base, (alpha/r) B A), with the "
                         "base, its quantised copies and linked re-uploads listed unranked; --metric then "
                         "names a delta metric: delta_alpha (default), delta_alpha_weighted, delta_log_norm, "
                         "delta_log_spectral_norm, delta_stable_rank (catalogs/family.py)")
    _option_set_flags(lb, "ranked", "the default analysis; a store holding one other set only: that set")
    lb.add_argument("--format", default="table", choices=_FORMATS, help=_FORMAT_HELP)
    lb.set_defaults(handler=_cmd_leaderboard)

    sq = subparsers.add_parser(
        "sql", help="run one read-only SELECT over the views layers, models, model_summaries, failures, scans",
        description="Run one read-only SELECT over the catalog views (models: one row per stored revision, "
                    "metrics first; model_summaries: the latest revisions with tiers and layer counts; "
                    "layers; failures; scans; the diagnostic views in catalogs/sql/). The connection "
                    "reads the store's own files and nothing else.")
    sq.add_argument("query", metavar="QUERY", help='the SELECT statement, e.g. "SELECT * FROM models"')
    _data(sq)
    sq.add_argument("--format", default="table", choices=_FORMATS, help=_FORMAT_HELP)
    sq.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                    help="stop the query after this long (default: 300)")  # fmt: skip
    sq.set_defaults(handler=_cmd_sql)

    sc = subparsers.add_parser(
        "scans", help="scan health, newest first: models/min, bytes, stage times, failures by type",
        description="One row per scan, newest first (the view scan_health, catalogs/sql/50_scan_health.sql): "
                    "counts, models per minute, MB downloaded, orchestration ms per model, failures and "
                    "retries by error type, wall seconds per scan phase and seconds per model stage. "
                    "Scans recorded before these figures existed show them empty.")
    _data(sc)
    sc.add_argument("--last", type=int, default=7, metavar="N", help="show the N newest scans (default: 7)")
    sc.add_argument("--format", default="table", choices=_FORMATS, help=_FORMAT_HELP)
    sc.set_defaults(handler=_cmd_scans)

    sh = subparsers.add_parser(
        "show", help="one model: its tier and flags in words, its summary and its layers",
        description="One stored model: why it stands in its tier of the default leaderboard (its flags in "
                    "words), its summary row and its layer rows in depth order.")
    sh.add_argument("model", metavar="MODEL",
                    help="repo id (latest revision) or repo_id@revision (a revision prefix, e.g. the 12 "
                         "characters tables show, is enough)")
    _data(sh)
    _option_set_flags(sh, "shown", "the default analysis when stored, else the latest analysed set")
    sh.add_argument("--format", default="table", choices=("table", "json"),
                    help="output format (default: table; json: explanation, summary and layers in full)")
    sh.set_defaults(handler=_cmd_show)


def _option_set_flags(p: argparse.ArgumentParser, verb: str, default: str) -> None:
    """--options / --options-hash: which ONE option set a store holding several is read in."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--options", default=None, metavar='"FLAGS"',
                   help=f"the option set {verb}: analysis flags as given to analyze / scan, e.g. --options=--mp-fit "
                        "or --options \"--randomize --seed 3\" (one flag alone needs the = form) "
                        f"(default: {default})")
    g.add_argument("--options-hash", default=None, metavar="HASH",
                   help=f"the option set {verb}, by its options_hash (16 hex; `show MODEL` lists them; "
                        "default: none, see --options)")


# ---------------------------------------------------------------------------- handlers
def _cmd_build(args: argparse.Namespace) -> int:
    from .catalog import CATALOG_NAME, build_catalog, connect, row_counts

    path = build_catalog(args.data, args.db)
    con = connect(args.data, db_path=args.db)
    try:
        counts = row_counts(con)
    finally:
        con.close()
    print(f"catalog: {path}")
    print("rows: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    try:  # a catalog inside its local DATA folder: its views read the folder they sit in (00_store_files.sql)
        inside = path.name == CATALOG_NAME and path.parent.samefile(args.data)
    except OSError:  # s3:// / gs:// roots
        inside = False
    if inside:
        print(f"plain DuckDB: cd {shlex.quote(str(path.parent))} && duckdb {CATALOG_NAME}")
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    from .compact import compact

    stats = compact(args.data, min_files=args.min_files)
    print(
        f"compacted {stats.files_merged} files into {stats.files_written} "
        f"({stats.rows} rows); removed {stats.leftovers_deleted} already-compacted leftovers"
    )
    for table, t in stats.per_table.items():
        print(f"  {table}: {t['files_merged']} -> {t['files_written']} files, {t['rows']} rows")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from .catalog import choose_options_hash, connect, leaderboard

    options_hash = choose_options_hash(args.options, args.options_hash)
    if args.family is not None:
        return _family_leaderboard(args, options_hash)
    get_metric(args.metric or DEFAULT_METRIC)  # unknown names fail before any I/O, listing the allowed ones
    get_group(args.group_by)
    if args.tiered and args.metric is None:
        raise CatalogError("--tiered goes with --metric NAME (the default ranking is tiered already)")
    con = connect(args.data)
    try:
        cols, rows = leaderboard(con, args.metric, args.group_by, args.where, args.top,
                                 tiered=True if args.tiered else None, options_hash=options_hash)
    finally:
        con.close()
    emit(cols, rows, args.format)
    return 0


def _family_leaderboard(args: argparse.Namespace, options_hash: str | None) -> int:
    from .catalog import connect
    from .family import family_leaderboard, get_delta_metric

    get_delta_metric(args.metric)  # unknown names fail before any I/O, listing the allowed ones
    if args.group_by or args.where or args.tiered:
        raise CatalogError("--family ranks within one base family: leave out --group-by, --where and --tiered")
    con = connect(args.data)
    try:
        cols, rows = family_leaderboard(con, None if args.family == "all" else args.family, metric=args.metric,
                                        top=args.top, options_hash=options_hash)
    finally:
        con.close()
    emit(cols, rows, args.format)
    return 0


def _cmd_sql(args: argparse.Namespace) -> int:
    from .catalog import QUERY_TIMEOUT_S, check_read_only, run_sql

    check_read_only(args.query)
    if args.timeout is not None and not args.timeout > 0:
        raise CatalogError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    cols, rows = run_sql(args.data, args.query, timeout_s=args.timeout or QUERY_TIMEOUT_S)
    emit(cols, rows, args.format)
    return 0


def _cmd_scans(args: argparse.Namespace) -> int:
    from .catalog import SQL_DIR, run_sql

    if args.last < 1:
        raise CatalogError(f"--last must be a positive number of scans, got {args.last}")
    cols, rows = run_sql(args.data, (SQL_DIR / "queries" / "scan_health.sql").read_text())
    rows = rows[: args.last]
    if args.format != "table":
        emit(cols, rows, args.format)
        return 0
    # One block per scan, a figure per line: some thirty columns do not fit a terminal's width.
    width = max(len(c) for c in cols)
    blocks = ["\n".join(f"{c.rjust(width)}  {_cell(v, 100, column=c, decimals=2)}" for c, v in zip(cols, r) if v is not None)
              for r in rows]
    sys.stdout.write("\n\n".join(blocks) + f"\n({len(rows)} scan{'s' if len(rows) != 1 else ''}; figures of "
                     "the scan_health view, catalogs/sql/50_scan_health.sql)\n")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from .catalog import choose_options_hash, connect, option_sets, options_label, show_model

    options_hash = choose_options_hash(args.options, args.options_hash)
    con = connect(args.data)
    try:
        (scols, srows), (lcols, lrows) = show_model(con, args.model, options_hash=options_hash)
        ocols, orows = option_sets(con, args.model)
    finally:
        con.close()
    summary = dict(zip(scols, srows[0]))
    why = explain(summary)
    if args.format == "json":
        doc = {"explanation": why, "summary": _jsonable(summary),
               "option_sets": [_jsonable(dict(zip(ocols, r))) for r in orows],
               "layers": [_jsonable(dict(zip(lcols, r))) for r in lrows]}
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        return 0
    shown = {k: v for k, v in summary.items() if v is not None and k not in ("extra_json",)}
    width = max(len(k) for k in shown)
    out = [f"{summary['repo_id']}@{_short(summary['revision'])}:"] + [f"  - {line}" for line in why]
    out += [f"  - options {summary['options_hash']}: {safe_text(options_label(summary.get('options_json')))}", ""]
    out += [f"{k.rjust(width)}  {_cell(v, 100, column=k)}" for k, v in shown.items()]
    sys.stdout.write("\n".join(out) + "\n\noption sets stored for this model (--options-hash HASH shows "
                     "another):\n")
    emit(ocols, orows, "table")
    sys.stdout.write("\n")
    emit(lcols, lrows, "table")
    return 0


# ---------------------------------------------------------------------------- output
def _short(revision: str) -> str:
    return revision[:_REVISION_CHARS]


def _is_revision(column: str | None) -> bool:
    return bool(column) and (column == "revision" or column.endswith("_revision"))


def _fmt(v, *, decimals: int | None = None) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if decimals is not None:
            return f"{v:.{decimals}f}"
        return f"{v:.{_DECIMALS}f}" if v == 0 or 1e-3 <= abs(v) < 1e9 else f"{v:.{_DECIMALS - 1}e}"
    if isinstance(v, _dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


def _cell(v, limit: int = _MAX_CELL, *, column: str | None = None, decimals: int | None = None) -> str:
    """One table cell: revisions cut to 12 characters, floats with fixed decimals, one line, at most
    `limit` characters (cut with '…')."""
    if _is_revision(column) and isinstance(v, str):
        v = _short(v)
    s = _fmt(v, decimals=decimals).replace("\n", " ")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _float_decimals(values: list) -> int | None:
    """Fixed decimals for a column: _DECIMALS, or None when a value would lose its digits so (below
    1e-3 but not 0, or 1e9 and above); each value then picks its own notation (_fmt)."""
    finite = [abs(v) for v in values if isinstance(v, float) and math.isfinite(v)]
    if any(x >= 1e9 or 0 < x < 1e-3 for x in finite):
        return None
    return _DECIMALS


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        elif isinstance(v, _dt.datetime | _dt.date):
            v = v.isoformat()
        elif not isinstance(v, str | int | float | bool | type(None)):
            v = str(v)
        out[k] = v
    return out


def _columns_text(cols: list[str], rows: list[tuple]) -> tuple[list[list[str]], list[bool]]:
    """The cells of a table and which columns are numeric (right-aligned): floats with fixed decimals
    per column, revisions short."""
    numeric = [bool(rows) and all(isinstance(r[i], int | float) and not isinstance(r[i], bool) or r[i] is None
                                  for r in rows) for i in range(len(cols))]  # fmt: skip
    decimals = [_float_decimals([r[i] for r in rows]) if numeric[i] else None for i in range(len(cols))]
    cells = [[_cell(v, column=cols[i], decimals=decimals[i]) for i, v in enumerate(r)] for r in rows]
    return cells, numeric


def render_table(cols: list[str], rows: list[tuple], width: int | None = None) -> str:
    """Aligned text table that fits `width` columns (default: the terminal): numbers right-aligned with
    fixed decimals, revisions cut to 12 characters, other cells longer than 42 characters cut with '…';
    trailing columns that do not fit are dropped and counted in a note."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    cells, numeric = _columns_text(cols, rows)
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    keep, used = 0, 0
    for w in widths:
        if keep and used + 2 + w > width:
            break
        used += (2 if keep else 0) + w
        keep += 1

    def line(vals):
        parts = [v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]) for i, v in enumerate(vals[:keep])]
        return "  ".join(parts).rstrip()

    out = [line(cols), "  ".join("-" * w for w in widths[:keep])]
    out += [line(r) for r in cells]
    note = f"({len(rows)} row{'s' if len(rows) != 1 else ''}"
    if keep < len(cols):
        note += f"; {len(cols) - keep} more columns not shown: {', '.join(cols[keep : keep + 6])}"
        note += "…" if len(cols) - keep > 6 else ""
        note += "; use --format csv or json"
    out.append(note + ")")
    return "\n".join(out)


def emit(cols: list[str], rows: list[tuple], fmt: str, stream=None) -> None:
    """Write rows in `fmt` (table | csv | json | markdown) to stdout (or `stream`). csv and json keep
    full precision and whole revisions; table and markdown show them as tables do."""
    stream = stream or sys.stdout
    if fmt == "csv":
        w = csv.writer(stream, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else _fmt(v)) for v in r])
    elif fmt == "json":
        stream.write(json.dumps([_jsonable(dict(zip(cols, r))) for r in rows], indent=1) + "\n")
    elif fmt == "markdown":
        cells, numeric = _columns_text(cols, rows)
        stream.write("| " + " | ".join(cols) + " |\n|" + "|".join("---:" if n else "---" for n in numeric) + "|\n")
        for r in cells:
            stream.write("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |\n")
    else:
        stream.write(render_table(cols, rows) + "\n")
