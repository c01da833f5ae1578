"""The DuckDB catalog: views over the store's Parquet, built from the SQL files in catalogs/sql/.

SQL files (all SQL lives there; Python fills in identifiers, column lists and the tier rule's numbers
from catalogs/metrics.py only):
  catalogs/sql/NN_*.sql      the views and table macros, run in file-name order; a file that uses the
                             placeholder {{table}} (01_raw_table.sql) is run once per table
  catalogs/sql/queries/      the queries of `leaderboard` and `show`, with named parameters
  catalogs/sql/session/      the plumbing statements: metric table, catalog metadata, file variables,
                             the sandbox settings

The catalog file (ROOT/catalog.duckdb) holds views (and the small `metrics` table from catalogs/metrics.py),
no data and no absolute path: the views' globs are relative to the DATA root (00_store_files.sql), so a
copied or moved store keeps a working catalog. connect() names the root in a session variable; a plain
DuckDB client opens it from the DATA folder (`cd DATA && duckdb catalog.duckdb`) or after
`SET file_search_path = 'DATA'`. `catalog build` (and a scan) writes the file under a temporary name
renamed over the old one, so readers of the old file are never blocked by the builder's read-write lock
(DuckDB 2.0 locks a file opened read-write against every other process). connect() never writes: when the file is missing or
stale (older SQL, metric table, tier rule or schema) it builds the same views in an in-memory database
instead.

Every connection connect() returns is sandboxed (catalogs/sql/session/sandbox.sql): after its views
exist, external access is off except for the DATA root and the in-memory seed files, extensions are
neither installed nor loaded, queries have a time limit, and the configuration is locked. So user SQL
(`sql`, `leaderboard --where`) reads the store's own files and nothing else on the host or the network.

Seeds: the views' globs must match at least one file and see every declared column, so each table has a
zero-row "seed" file. `catalog build` writes them into the store; an in-memory copy (fsspec's memory
file system, SEED_ROOT) is what views are bound against (binding reads the footer of every matched
file, 20,000 files for 10,000 models; the seeds make it O(1)) and what a session over a store without
seed files reads beside the store's files.

Object-store roots: DuckDB's httpfs extension cannot be installed offline here, so every connection
registers the fsspec filesystem of the root (s3fs, gcsfs) with `con.register_filesystem(fs)`; DuckDB then
reads s3:// / gs:// globs through it. Their catalog file lives in a local cache folder; opening it in a
bare `duckdb` shell needs httpfs, an S3 secret and SET VARIABLE ww_spectral_root = 's3://bucket/prefix'.

DuckDB 2.0 API: execute() results stream and hold the connection, so every result is consumed with
fetchall() before the next statement.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import fsspec

from ww_spectral.cli_core import options_from_flags
from ww_spectral.errors import WWSpectralError
from ww_spectral.records import AnalysisOptions, make_options

from . import metrics as _metrics
from .errors import CatalogError, ReadOnlyError
from .schema import PROVENANCE_FIELDS, SCHEMA_VERSION, TABLES
from .store import ResultStore, glob_escape, owner_of, safe_name, seed_file

SQL_DIR = Path(__file__).parent / "sql"
CATALOG_NAME = "catalog.duckdb"
SEED_ROOT = f"memory:///ww-spectral-seeds-v{SCHEMA_VERSION}"  # DuckDB spells memory paths so
QUERY_TIMEOUT_S = 300.0  # the longest one query may run on a catalog connection


@functools.cache
def _sql(name: str) -> str:
    """The text of catalogs/sql/<name>."""
    return (SQL_DIR / name).read_text()


def _render(text: str, **subs: str) -> str:
    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in subs:
            raise CatalogError(f"SQL template placeholder {{{{{key}}}}} has no value (catalogs/sql)")
        return subs[key]

    return re.sub(r"\{\{(\w+)\}\}", sub, text)


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _execute(con, sql: str, params: dict | None = None) -> list[tuple]:
    """Run every statement of `sql`, each with the named parameters it uses; the last one's rows."""
    rows: list[tuple] = []
    for statement in duckdb.extract_statements(sql):
        names = statement.named_parameters
        args = {k: (params or {})[k] for k in names} if names else None
        rows = con.execute(statement.query, args).fetchall()
    return rows


def _session(con, name: str, **params) -> list[tuple]:
    """Run catalogs/sql/session/<name>.sql with named parameters."""
    return _execute(con, _sql(f"session/{name}.sql"), params)


def _view_subs() -> dict[str, str]:
    """The placeholders of the view files: column lists (catalogs/metrics.py, catalogs/schema.py) and the
    tier rule's thresholds and names (catalogs/metrics.py TIER_RULE, TIERS)."""
    return {
        "metric_columns": ", ".join(m.column for m in _metrics.METRICS),
        "provenance_columns": ", ".join(f.name for f in PROVENANCE_FIELDS if f.name not in ("repo_id", "revision")),
        "tier_names": " ".join(f"WHEN {t} THEN {_sql_literal(n)}" for t, n in _metrics.TIERS.items()),
        **_metrics.TIER_RULE.sql_constants(),
    }


def view_sql() -> list[tuple[str, str]]:
    """(file name, rendered SQL) for every view file, in dependency (file name) order; a file using the
    {{table}} placeholder comes once per table, named 'file[table]'."""
    subs = _view_subs()
    out = []
    for path in sorted(SQL_DIR.glob("*.sql")):
        text = path.read_text()
        if "{{table}}" in text:
            out += [(f"{path.name}[{t}]", _render(text, table=t, **subs)) for t in TABLES]
        else:
            out.append((path.name, _render(text, **subs)))
    return out


@functools.cache
def _fingerprint() -> str:
    """Changes when the SQL, the metric table, the tier rule or the schema version changes: then the
    catalog is stale. Not the DATA root: the views hold none."""
    h = hashlib.sha256(f"{SCHEMA_VERSION}\n".encode())
    for _, sql in view_sql():
        h.update(sql.encode())
    h.update(repr(_metrics.metrics_rows()).encode())
    return h.hexdigest()[:16]


def _default_db_path(store: ResultStore) -> Path:
    """ROOT/catalog.duckdb; in the user's cache folder for object-store roots and for roots whose path
    holds '?' (DuckDB reads '?' in a database path as the start of URL parameters)."""
    if not store.remote and "?" not in store.root:
        return Path(store.root) / CATALOG_NAME
    digest = hashlib.sha256(store.root.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ww-spectral" / "catalogs"
    return cache / f"{digest}.duckdb"


def _open_store(data_root: str | os.PathLike, storage_options: dict | None) -> ResultStore:
    """The store at `data_root`; CatalogError (one line, names the fix) when it cannot be read."""
    store = ResultStore(data_root, storage_options=storage_options)
    if not store.remote and not os.path.isdir(store.root):
        raise CatalogError(f"no store at {store.root}: check --data, or run a scan that writes there first")
    if "\\" in store.root:
        raise CatalogError(
            f"the DATA root {store.root!r} contains a backslash, which DuckDB's file globs cannot match; "
            f"move the store to a folder without one"
        )
    return store


def _seed_files(table: str) -> str:
    """Glob of the in-memory seed file of `table` (written once per process)."""
    seeds = ResultStore(SEED_ROOT)
    seeds.ensure_seeds()
    return glob_escape(seeds.url(seed_file(table)))


def _seed_struct() -> dict[str, list[str]]:
    """A store_files() STRUCT (catalogs/sql/00_store_files.sql) naming only the in-memory seeds."""
    return {f"{t}{suffix}": [_seed_files(t)] for t in TABLES for suffix in ("", "_compacted")}


def _register_filesystems(con, store: ResultStore) -> None:
    con.register_filesystem(fsspec.filesystem("memory"))
    if store.remote:
        con.register_filesystem(store.fs)


def _create_objects(con, store: ResultStore) -> None:
    """The metric table, every view and macro, and _catalog_meta, bound against the in-memory seeds."""
    _register_filesystems(con, store)
    _session(con, "set_files", files=_seed_struct())
    _session(con, "create_metrics")
    con.executemany(_sql("session/insert_metric.sql"), _metrics.metrics_rows())
    for name, sql in view_sql():
        try:
            _execute(con, sql)
        except duckdb.Error as exc:
            raise CatalogError(f"catalog view {name} failed to build: {exc}") from exc
    _session(con, "create_meta", fingerprint=_fingerprint(), schema_version=SCHEMA_VERSION)


def _set_root(con, store: ResultStore) -> None:
    """Name the DATA root in this session (catalogs/sql/session/set_root.sql): the views read under it."""
    _session(con, "set_root", root=glob_escape(store.url()), data_root=store.url())


def _read_store_files(con) -> None:
    """Point an in-memory session's views at the store: its globs that match a file, plus the seeds
    (a store without seed files, e.g. an empty folder, still has every table and column)."""
    _session(con, "reset_files")
    root_globs = _session(con, "store_files")[0][0]
    files = {}
    for key, seeds in _seed_struct().items():
        files[key] = seeds + [g for g in root_globs[key] if _session(con, "glob_matches", pattern=g)[0][0]]
    _session(con, "set_files", files=files)


def _sandbox(con, store: ResultStore, timeout_s: float) -> None:
    """Lock the connection down (catalogs/sql/session/sandbox.sql): the store's files only."""
    # The root as a path, and as the views spell it (glob characters escaped; such a prefix is always
    # read as a pattern, which matches only files under the root itself).
    roots = dict.fromkeys([store.url(), glob_escape(store.url()), ResultStore(SEED_ROOT).url()])
    allowed = [r + "/" for r in roots]
    _session(con, "sandbox", allowed=allowed, timeout_ms=max(1, round(timeout_s * 1000)))


def build_catalog(
    data_root: str | os.PathLike,
    db_path: str | os.PathLike | None = None,
    *,
    storage_options: dict | None = None,
) -> Path:
    """Create or refresh the DuckDB file of views over `data_root` and write the store's seed files;
    returns the file's path.

    Default location: ROOT/catalog.duckdb for local roots; ~/.cache/ww-spectral/catalogs/<hash>.duckdb
    for object-store roots (their views read s3:// / gs:// through a registered fsspec filesystem) and
    roots whose path holds '?'.
    The new file is built under a temporary name and renamed over the old one.
    """
    store = _open_store(data_root, storage_options)
    path = Path(db_path) if db_path is not None else _default_db_path(store)
    if "?" in str(path):
        raise CatalogError(
            f"DuckDB cannot write a catalog file at {path} (a '?' in the path); choose another --db"
        )
    store.ensure_seeds()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # DuckDB must create the file itself
    try:
        con = duckdb.connect(tmp)
        try:
            _create_objects(con, store)
            _session(con, "checkpoint")
        finally:
            con.close()
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp + ".wal"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return path


def _open_catalog(path: Path, fingerprint: str):
    """A read-only connection to the catalog file when it exists and is current, else None."""
    if not path.exists():
        return None
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        raise CatalogError(
            f"cannot open the catalog {path}: {str(exc).splitlines()[0]}. Another process holds it "
            f"read-write; retry when it is done"
        ) from None
    try:
        rows = _session(con, "read_meta")
    except duckdb.Error:
        rows = []
    if rows and rows[0][0] == fingerprint:
        return con
    con.close()
    return None


def connect(
    data_root: str | os.PathLike,
    *,
    db_path: str | os.PathLike | None = None,
    storage_options: dict | None = None,
    timeout_s: float = QUERY_TIMEOUT_S,
):
    """A sandboxed DuckDB connection with the catalog's views over `data_root`; writes nothing.

    Uses the catalog file when it is current, else builds the views in memory (a missing, stale or
    never-built catalog; run `ww-spectral catalog build` to make later connections start faster).
    The connection reads only the store's files (see the module doc) and stops any query after
    `timeout_s` seconds. The caller closes it. Raises CatalogError when the root does not exist.
    """
    store = _open_store(data_root, storage_options)
    path = Path(db_path) if db_path is not None else _default_db_path(store)
    con = _open_catalog(path, _fingerprint())
    if con is None:
        con = duckdb.connect()
        _create_objects(con, store)
        _set_root(con, store)
        _read_store_files(con)
    else:
        _register_filesystems(con, store)
        _set_root(con, store)
    _sandbox(con, store, timeout_s)
    return con


# ---------------------------------------------------------------------------- read-only SQL
_ALLOWED = ("SELECT",)  # not EXPLAIN: EXPLAIN ANALYZE would run the statement it explains (e.g. a COPY)


def check_read_only(sql: str) -> None:
    """Refuse anything but one SELECT statement (DESCRIBE/SHOW/SUMMARIZE/FROM-first parse as SELECT);
    parse-level, before it reaches DuckDB, so no COPY, EXPORT, ATTACH, SET, INSTALL or CALL runs. The
    second layer is the connection: a catalog file is opened read-only, and the sandbox keeps every
    statement away from files outside the store."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise CatalogError(f"SQL does not parse: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise ReadOnlyError(f"give exactly one SELECT statement (got {len(statements)})")
    kind = statements[0].type.name
    if kind not in _ALLOWED:
        raise ReadOnlyError(
            f"refused: {kind} statement; the sql command is read-only and runs one SELECT over the views "
            f"layers, models, failures, scans (and the other catalog views)"
        )


def _hint(msg: str) -> str:
    if "No files found" in msg:
        return " (the store is empty: run a scan, or `ww-spectral catalog build --data ROOT`)"
    if "disabled by configuration" in msg:
        return " (catalog SQL reads the store's own files only)"
    if "maximum execution time" in msg:
        return " (the query ran past the time limit of catalog connections; narrow it)"
    return ""


def query(con, sql: str, params: Any = None) -> tuple[list[str], list[tuple]]:
    """Run one read-only statement; returns (column names, rows). Raises CatalogError on SQL errors."""
    check_read_only(sql)
    try:
        rows = con.execute(sql, params).fetchall() if params is not None else con.execute(sql).fetchall()
    except duckdb.Error as exc:
        msg = str(exc).splitlines()[0]
        raise CatalogError(f"query failed: {msg}{_hint(msg)}") from None
    columns = [d[0] for d in con.description] if con.description else []
    return columns, rows


def run_sql(data_root: str | os.PathLike, sql: str, **connect_kw) -> tuple[list[str], list[tuple]]:
    """The `sql` command: one SELECT over the catalog views on a sandboxed connection."""
    check_read_only(sql)
    con = connect(data_root, **connect_kw)
    try:
        return query(con, sql)
    finally:
        con.close()


def row_counts(con) -> dict[str, int]:
    """Rows of the models, failures and scans views (catalogs/sql/session/row_counts.sql)."""
    cols, rows = query(con, _sql("session/row_counts.sql"))
    return dict(zip(cols, rows[0]))


# ---------------------------------------------------------------------------- leaderboard / show
_NO_TOP = 2**63 - 1
# The option set leaderboards rank and `show` shows unless told otherwise: the default analysis's.
DEFAULT_OPTIONS_HASH = AnalysisOptions().fingerprint()
_HASH_RE = re.compile(r"[0-9a-f]{16}")


def choose_options_hash(options: str | None = None, options_hash: str | None = None) -> str | None:
    """The options_hash a leaderboard or `show` reads: from analysis flags in one string (`--options
    "--mp-fit"`, ww_spectral/cli_core.py; "" = the default analysis) or a hash as stored (16 hex chars);
    None when neither is given (the caller's default). Raises CatalogError on both, or on a bad value."""
    if options is not None and options_hash is not None:
        raise CatalogError("give --options or --options-hash, not both")
    if options_hash is not None:
        if not _HASH_RE.fullmatch(options_hash):
            raise CatalogError(f"--options-hash {options_hash!r} is not an options hash (16 hex characters, "
                               "as `ww-spectral show MODEL` lists them)")
        return options_hash
    return None if options is None else options_from_flags(options).fingerprint()


def store_option_sets(con) -> tuple[list[str], list[tuple]]:
    """Every option set the store holds: (columns, rows) with options_hash, options_label, n_models (latest
    revisions), the largest set first (catalogs/sql/queries/option_sets.sql)."""
    rows = query(con, _sql("queries/option_sets.sql"))[1]
    return ["options_hash", "options_label", "n_models"], [(h, options_label(j), n) for h, j, n in rows]


def ranked_options_hash(con) -> str:
    """The option set a leaderboard ranks when none is chosen: the default analysis's (DEFAULT_OPTIONS_HASH)
    when the store holds it or is empty; else the store's only option set; else CatalogError listing the
    stored sets (several non-default sets: the user must choose one, rankings never mix option sets)."""
    _, sets = store_option_sets(con)
    hashes = [h for h, *_ in sets]
    if not hashes or DEFAULT_OPTIONS_HASH in hashes:
        return DEFAULT_OPTIONS_HASH
    if len(hashes) == 1:
        return hashes[0]
    listed = ", ".join(f"{h} ({label}, {n} models)" for h, label, n in sets)
    raise CatalogError(f"the store holds no default-analysis rows but several option sets: {listed}; choose one "
                       "with --options-hash HASH or --options \"FLAGS\"")


def options_label(options_json: str | None) -> str:
    """The readable text of a stored options_json (AnalysisOptions.label(), e.g. "mp_fit, randomize";
    "default"); "?" when the stored text is not options this version understands."""
    try:
        return make_options(json.loads(options_json or "{}")).label()
    except (ValueError, TypeError, WWSpectralError):
        return "?"


_TIER_COLUMNS = ("tier", "tier_name", "share_alpha_2_6", "share_random_like")


def _is_tiered(metric: str | None, tiered: bool | None) -> bool:
    """The default ranking is tiered; naming a metric ranks by it alone unless tiered=True."""
    return metric is None if tiered is None else bool(tiered)


def leaderboard_sql(metric: str | None = None, group_by: str | None = None, where: str | None = None, *,
                    tiered: bool | None = None) -> str:  # fmt: skip
    """The leaderboard query text (catalogs/sql/queries/leaderboard.sql; parameter $top).

    metric None: the default ranking, tiered (catalogs/metrics.py TIER_RULE), then DEFAULT_METRIC within
    a tier; a metric name ranks by that metric alone (tiered=True keeps the tiers first). metric and
    group_by are checked against catalogs/metrics.py (unknown names raise CatalogError listing the
    allowed ones); `where` is SQL over the ranked view's columns (model_summaries_latest when tiered,
    else models_latest), applied before ranking. Parameters: $top, $options_hash (one option set)."""
    m = _metrics.get_metric(metric or _metrics.DEFAULT_METRIC)
    if _is_tiered(metric, tiered):
        subs = {"source": "model_summaries_latest", "keep": "TRUE",
                "order": _metrics.tiered_order(m),
                "columns": ", ".join(dict.fromkeys([*_TIER_COLUMNS, m.column]))}  # fmt: skip
    else:
        subs = {"source": "models_latest", "keep": f"{m.column} IS NOT NULL",
                "order": f"{m.column} {m.sql_order}", "columns": m.column}  # fmt: skip
    sql = _render(
        _sql("queries/leaderboard.sql"),
        group=_metrics.get_group(group_by) or "NULL",
        where=where.strip() if where and where.strip() else "TRUE",
        **subs,
    )
    check_read_only(sql)  # a --where that smuggles a second statement is refused here
    return sql


def leaderboard(con, metric: str | None = None, group_by: str | None = None, where: str | None = None,
                top: int | None = None, *, tiered: bool | None = None,
                options_hash: str | None = None) -> tuple[list[str], list[tuple]]:  # fmt: skip
    """(columns, rows) of the leaderboard: [group,] rank, repo_id, [tier, tier_name, share_alpha_2_6,
    share_random_like,] <metric>, revision; `top` keeps the ranks <= top within each group.

    metric None (the default): every latest model, tier first, then DEFAULT_METRIC (alpha_weighted) within
    a tier (catalogs/metrics.py). A metric name: the models with a value, ranked by it alone, exactly
    as WeightWatcher ranks; tiered=True ranks by tier first with that metric. One option set is ranked:
    options_hash (AnalysisOptions.fingerprint(), choose_options_hash), default ranked_options_hash(con)."""
    if top is not None and (not isinstance(top, int) or top < 1):
        raise CatalogError(f"--top must be a positive integer, got {top!r}")
    group = _metrics.get_group(group_by)
    params = {"top": top or _NO_TOP, "options_hash": options_hash or ranked_options_hash(con)}
    cols, rows = query(con, leaderboard_sql(metric, group_by, where, tiered=tiered), params)
    if group:
        return [group, *cols[1:]], rows
    return cols[1:], [r[1:] for r in rows]


def _model_files(store: ResultStore, repo_id: str) -> dict[str, list[str]]:
    """A store_files() STRUCT (catalogs/sql/00_store_files.sql) of the layers and models files that can
    hold `repo_id`'s rows, as escaped paths, the seed first: the compacted files of its owner= folder
    and the per-model files whose name starts with its safe name (a safe-name collision only adds a
    file; the SQL still filters on repo_id)."""
    owner = owner_of(repo_id)
    mine = f"m-{safe_name(repo_id)}."
    files = {}
    for table in ("layers", "models"):
        rels = store.list(f"{table}/owner={owner}/*.parquet")
        compacted = [glob_escape(store.url(r)) for r in rels if r.rsplit("/", 1)[-1].startswith("c-")]
        singles = [glob_escape(store.url(r)) for r in rels if r.rsplit("/", 1)[-1].startswith(mine)]
        seed = _seed_files(table)
        files[table], files[f"{table}_compacted"] = [seed, *compacted, *singles], [seed, *compacted]
    return files


def show_model(con, model: str, *, storage_options: dict | None = None, options_hash: str | None = None):
    """Summary and layer rows of MODEL = 'repo_id' (latest revision) or 'repo_id@revision' (a revision
    or a prefix of one, e.g. the 12 characters tables show): ((summary columns, [one row]), (layer
    columns, layer rows in depth order)). The summary holds the model's tier (catalogs/metrics.py) and
    the layer counts behind it; catalogs/explain.py puts them in words.

    options_hash: the option set shown (choose_options_hash); None = the default analysis's when the model
    has it, else its latest analysed option set (option_sets lists them all).
    Reads only the files that can hold this model (its per-model files and its owner's compacted files,
    listed here and passed to the *_in macros), so the drill-down costs the same however many other
    models the store holds.
    Raises CatalogError when the model is not in the store."""
    repo_id, _, revision = model.partition("@")
    data_root = _session(con, "data_root")[0][0]
    files = _model_files(ResultStore(data_root, storage_options=storage_options), repo_id)
    params = {"repo_id": repo_id, "revision": revision or None, "files": files, "options_hash": options_hash,
              "default_hash": DEFAULT_OPTIONS_HASH}
    summary = query(con, _sql("queries/show_model.sql"), params)
    if not summary[1] and options_hash is not None:
        stored = ", ".join(f"{h} ({options_label(j)})" for h, j, *_ in _option_set_rows(con, repo_id, files))
        raise CatalogError(f"model {model!r} has no rows for options_hash {options_hash}; its option sets: "
                           f"{stored or 'none'} (choose one with --options-hash)")
    if not summary[1]:
        raise CatalogError(
            f"model {model!r} is not in the store; list stored models with "
            f'`ww-spectral sql --data ROOT "SELECT repo_id, revision FROM models"`'
        )
    key = summary[1][0][summary[0].index("record_key")]
    layers = query(
        con, _sql("queries/show_layers.sql"), {"repo_id": repo_id, "record_key": key, "files": files}
    )
    return summary, layers


def _option_set_rows(con, repo_id: str, files: dict[str, list[str]]) -> list[tuple]:
    return query(con, _sql("queries/show_option_sets.sql"), {"repo_id": repo_id, "files": files})[1]


def option_sets(con, model: str, *, storage_options: dict | None = None) -> tuple[list[str], list[tuple]]:
    """Every option set stored for MODEL ('repo_id' or 'repo_id@...', the revision is ignored): (columns,
    rows) with options_hash, options_label (AnalysisOptions.label()), n_revisions, latest_revision,
    analysed_at; the most recently analysed set first. Reads only the model's files, as show_model."""
    repo_id = model.partition("@")[0]
    data_root = _session(con, "data_root")[0][0]
    files = _model_files(ResultStore(data_root, storage_options=storage_options), repo_id)
    rows = [(h, options_label(j), *rest) for h, j, *rest in _option_set_rows(con, repo_id, files)]
    return ["options_hash", "options_label", "n_revisions", "latest_revision", "analysed_at"], rows
