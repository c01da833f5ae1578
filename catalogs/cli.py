"""CLI: `catalog build|compact`, `leaderboard`, `sql`, `show` (registered by the dispatcher, pipelines/cli.py).

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
import shutil
import sys

from .errors import CatalogError
from .metrics import get_group, get_metric

DEFAULT_DATA = "ww-data"
_MAX_CELL = 42


def register(subparsers) -> None:
    cat = subparsers.add_parser("catalog", help="build or compact the DuckDB catalog over a DATA root")
    cat_sub = cat.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    b = cat_sub.add_parser("build", help="create or refresh DATA/catalog.duckdb (views over the Parquet)")
    b.add_argument("--data", default=DEFAULT_DATA, help="DATA root: folder or s3:// / gs:// URI")
    b.add_argument("--db", default=None, help="catalog file (default: DATA/catalog.duckdb)")
    b.set_defaults(handler=_cmd_build)
    c = cat_sub.add_parser("compact", help="merge per-model Parquet files into larger ones (same results)")
    c.add_argument("--data", default=DEFAULT_DATA, help="DATA root: folder or s3:// / gs:// URI")
    c.add_argument(
        "--min-files", type=int, default=2, help="compact partitions with at least this many files"
    )
    c.set_defaults(handler=_cmd_compact)

    lb = subparsers.add_parser("leaderboard", help="rank models by a spectral metric (direction per metric)")
    lb.add_argument("--data", default=DEFAULT_DATA, help="DATA root: folder or s3:// / gs:// URI")
    lb.add_argument("--metric", default="alpha_weighted", help="model-level metric (default alpha_weighted)")
    lb.add_argument("--group-by", default=None, help="rank within groups: architecture, model_type, "
                    "param_bucket, pipeline_tag, family, library, owner")  # fmt: skip
    lb.add_argument(
        "--where", default=None, help='SQL filter over the models columns, e.g. "downloads > 1000"'
    )
    lb.add_argument("--top", type=int, default=None, help="keep ranks <= N (within each group)")
    lb.add_argument("--format", default="table", choices=("table", "csv", "json", "markdown"))
    lb.set_defaults(handler=_cmd_leaderboard)

    sq = subparsers.add_parser(
        "sql", help="run one read-only SELECT over the views layers, models, failures, scans"
    )
    sq.add_argument("query", help="the SELECT statement")
    sq.add_argument("--data", default=DEFAULT_DATA, help="DATA root: folder or s3:// / gs:// URI")
    sq.add_argument("--format", default="table", choices=("table", "csv", "json", "markdown"))
    sq.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                    help="stop the query after this long (default 300)")  # fmt: skip
    sq.set_defaults(handler=_cmd_sql)

    sh = subparsers.add_parser("show", help="one model's summary and its layers")
    sh.add_argument("model", metavar="MODEL", help="repo id (latest revision) or repo_id@revision")
    sh.add_argument("--data", default=DEFAULT_DATA, help="DATA root: folder or s3:// / gs:// URI")
    sh.add_argument("--format", default="table", choices=("table", "json"))
    sh.set_defaults(handler=_cmd_show)


# ---------------------------------------------------------------------------- handlers
def _cmd_build(args: argparse.Namespace) -> int:
    from .catalog import build_catalog, connect, row_counts

    path = build_catalog(args.data, args.db)
    con = connect(args.data, db_path=args.db)
    try:
        counts = row_counts(con)
    finally:
        con.close()
    print(f"catalog: {path}")
    print("rows: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
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
    from .catalog import connect, leaderboard

    get_metric(args.metric)  # unknown names fail before any I/O, listing the allowed ones
    get_group(args.group_by)
    con = connect(args.data)
    try:
        cols, rows = leaderboard(con, args.metric, args.group_by, args.where, args.top)
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


def _cmd_show(args: argparse.Namespace) -> int:
    from .catalog import connect, show_model

    con = connect(args.data)
    try:
        (scols, srows), (lcols, lrows) = show_model(con, args.model)
    finally:
        con.close()
    summary = dict(zip(scols, srows[0]))
    if args.format == "json":
        doc = {"summary": _jsonable(summary), "layers": [_jsonable(dict(zip(lcols, r))) for r in lrows]}
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        return 0
    shown = {k: v for k, v in summary.items() if v is not None and k not in ("extra_json",)}
    width = max(len(k) for k in shown)
    out = [f"{k.rjust(width)}  {_cell(v, 100)}" for k, v in shown.items()]
    sys.stdout.write("\n".join(out) + "\n\n")
    emit(lcols, lrows, "table")
    return 0


# ---------------------------------------------------------------------------- output
def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, _dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


def _cell(v, limit: int = _MAX_CELL) -> str:
    s = _fmt(v).replace("\n", " ")
    return s if len(s) <= limit else s[: limit - 1] + "…"


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


def render_table(cols: list[str], rows: list[tuple], width: int | None = None) -> str:
    """Aligned text table that fits `width` columns (default: the terminal): cells longer than 42
    characters are cut with '…'; trailing columns that do not fit are dropped and counted in a note."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    numeric = [
        all(isinstance(r[i], int | float) or r[i] is None for r in rows) and rows for i in range(len(cols))
    ]
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
    """Write rows in `fmt` (table | csv | json | markdown) to stdout (or `stream`)."""
    stream = stream or sys.stdout
    if fmt == "csv":
        w = csv.writer(stream, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else _fmt(v)) for v in r])
    elif fmt == "json":
        stream.write(json.dumps([_jsonable(dict(zip(cols, r))) for r in rows], indent=1) + "\n")
    elif fmt == "markdown":
        stream.write("| " + " | ".join(cols) + " |\n|" + "|".join("---" for _ in cols) + "|\n")
        for r in rows:
            stream.write("| " + " | ".join(_cell(v).replace("|", "\\|") for v in r) + " |\n")
    else:
        stream.write(render_table(cols, rows) + "\n")
