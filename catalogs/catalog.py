"""The DuckDB catalog: views over the store's Parquet, built from the SQL files in catalogs/sql/.

The catalog file holds views (and the small `metrics` table from catalogs/metrics.py) and no data: it is
rebuilt from the Parquet at any time and never the only copy of anything. Build writes a new file next
to the old one and renames it over, so readers of the old file are never blocked by the builder's
read-write lock (DuckDB 2.0 locks a file opened read-write against every other process).

Object-store roots: DuckDB's httpfs extension cannot be installed offline here (INSTALL httpfs fails to
download), so every connection registers the fsspec filesystem of the root (s3fs, gcsfs) with
`con.register_filesystem(fs)`; DuckDB then reads s3:// / gs:// globs through it (verified against moto's
S3 server: globs, hive partitions and union_by_name all work). Their catalog file lives in a local cache
folder (the views reference the s3:// globs); the registration happens on connect(), so opening that file
in a bare `duckdb` shell needs httpfs and an S3 secret instead.

Build cost does not grow with the store: a view's CREATE binds it, and binding reads the footer of every
file it matches, so build_catalog binds the views against a folder holding only the zero-row seed files
(DuckDB variable ww_spectral_bind_root); sessions that leave the variable unset read ROOT.

DuckDB 2.0 API: execute() results stream and hold the connection, so every result is consumed with
fetchall() before the next statement.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import metrics as _metrics
from .errors import CatalogError, ReadOnlyError
from .schema import SCHEMA_VERSION
from .store import SEED_VALUE, ResultStore, owner_of, safe_name

SQL_DIR = Path(__file__).parent / "sql"
CATALOG_NAME = "catalog.duckdb"
USER_VIEWS = ("layers", "models", "failures", "scans")
ROOT_VARIABLE = "ww_spectral_bind_root"


def _sql_text(name: str) -> str:
    return (SQL_DIR / name).read_text()


def _render(text: str, **subs: str) -> str:
    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in subs:
            raise CatalogError(f"SQL template placeholder {{{{{key}}}}} has no value (catalogs/sql)")
        return subs[key]

    return re.sub(r"\{\{(\w+)\}\}", sub, text)


def _sql_literal(text: str) -> str:
    return text.replace("'", "''")


def view_sql(root_url: str) -> list[tuple[str, str]]:
    """(file name, rendered CREATE VIEW statement) for every view file, in dependency (file name) order."""
    cols = [m.column for m in _metrics.METRICS]
    subs = {
        # The views read coalesce(getvariable(...), ROOT): build_catalog binds them against a folder of
        # seed files only (binding reads every matched file's footer, 20,000 files for 10,000 models),
        # while every other session leaves the variable unset and reads ROOT.
        "root": f"coalesce(getvariable('{ROOT_VARIABLE}'), '{_sql_literal(root_url.rstrip('/'))}')",
        "metric_columns": ", ".join(cols),
        "metric_lags": ",\n        ".join(f"lag({c}) OVER w AS previous_{c}" for c in cols),
        "metric_deltas": ",\n    ".join(f"{c} - previous_{c} AS delta_{c}" for c in cols),
    }
    return [(p.name, _render(p.read_text(), **subs)) for p in sorted(SQL_DIR.glob("*.sql"))]


def _fingerprint(root_url: str) -> str:
    """Changes when the SQL, the metric table or the schema version changes: then connect() rebuilds."""
    h = hashlib.sha256(f"{SCHEMA_VERSION}\n{root_url}".encode())
    for _, sql in view_sql(root_url):
        h.update(sql.encode())
    h.update(repr(_metrics.metrics_rows()).encode())
    return h.hexdigest()[:16]


def _default_db_path(store: ResultStore) -> Path:
    if not store.remote:
        return Path(store.root) / CATALOG_NAME
    digest = hashlib.sha256(store.root.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ww-spectral" / "catalogs"
    return cache / f"{digest}.duckdb"


def _register_fs(con, store: ResultStore) -> None:
    if store.remote:
        con.register_filesystem(store.fs)


def _create_objects(con, store: ResultStore) -> None:
    con.execute(
        "CREATE OR REPLACE TABLE metrics (name VARCHAR, column_name VARCHAR, direction VARCHAR, "
        "sign INTEGER, value_range VARCHAR, doc VARCHAR)"
    ).fetchall()
    con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)", _metrics.metrics_rows())
    import duckdb

    for name, sql in view_sql(store.url()):
        try:
            for statement in duckdb.extract_statements(sql):  # a file may hold a macro and its view
                con.execute(statement.query).fetchall()
        except duckdb.Error as exc:
            raise CatalogError(f"catalog view {name} failed to build: {exc}") from exc
    con.execute(
        "CREATE OR REPLACE TABLE _catalog_meta AS SELECT ? AS data_root, ? AS fingerprint, ? AS schema_version",
        [store.url(), _fingerprint(store.url()), SCHEMA_VERSION],
    ).fetchall()


def build_catalog(
    data_root: str | os.PathLike,
    db_path: str | os.PathLike | None = None,
    *,
    storage_options: dict | None = None,
) -> Path:
    """Create or refresh the DuckDB file of views over `data_root`; returns its path.

    Default location: ROOT/catalog.duckdb for local roots; ~/.cache/ww-spectral/catalogs/<hash>.duckdb
    for object-store roots (their views read s3:// / gs:// through a registered fsspec filesystem).
    The new file is built under a temporary name and renamed over the old one.
    """
    import duckdb

    store = ResultStore(data_root, storage_options=storage_options)
    if not store.remote and not os.path.isdir(store.root):
        raise CatalogError(f"no store at {store.root}: check --data, or run a scan that writes there first")
    store.ensure_seeds()
    path = Path(db_path) if db_path is not None else _default_db_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # DuckDB must create the file itself
    bind_root = tempfile.mkdtemp(prefix="ww-spectral-bind-")
    try:
        ResultStore(bind_root).ensure_seeds()  # same layout and schema, zero rows: binding costs O(1)
        con = duckdb.connect(tmp)
        try:
            con.execute(f"SET VARIABLE {ROOT_VARIABLE} = ?", [bind_root]).fetchall()
            _create_objects(con, store)
            con.execute("CHECKPOINT").fetchall()
        finally:
            con.close()
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp + ".wal"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        shutil.rmtree(bind_root, ignore_errors=True)
    return path


def connect(
    data_root: str | os.PathLike,
    *,
    read_only: bool = True,
    db_path: str | os.PathLike | None = None,
    storage_options: dict | None = None,
):
    """A DuckDB connection with the catalog's views over `data_root`.

    Builds the catalog first when it is missing or stale (built for another root, older SQL or schema).
    read_only=True opens the file read-only (statements that write fail inside DuckDB too).
    The caller closes the connection.
    """
    import duckdb

    store = ResultStore(data_root, storage_options=storage_options)
    path = Path(db_path) if db_path is not None else _default_db_path(store)
    want = _fingerprint(store.url())
    for attempt in range(2):
        if not path.exists():
            build_catalog(data_root, path, storage_options=storage_options)
        try:
            con = duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            raise CatalogError(
                f"cannot open the catalog {path}: {exc}. Another process holds it read-write; "
                f"retry, or rebuild with `ww-spectral catalog build --data {data_root}`"
            ) from exc
        try:
            rows = con.execute("SELECT fingerprint FROM _catalog_meta").fetchall()
        except duckdb.Error:
            rows = []
        if rows and rows[0][0] == want:
            _register_fs(con, store)
            # Cache Parquet footers across queries on this connection (checked against file mtimes).
            con.execute("SET parquet_metadata_cache = true").fetchall()
            return con
        con.close()
        if attempt == 0:
            build_catalog(data_root, path, storage_options=storage_options)
    raise CatalogError(f"the catalog {path} is stale and could not be rebuilt; delete it and retry")


# ---------------------------------------------------------------------------- read-only SQL
_ALLOWED = ("SELECT",)  # not EXPLAIN: EXPLAIN ANALYZE would run the statement it explains (e.g. a COPY)


def check_read_only(sql: str) -> None:
    """Refuse anything but one SELECT statement (DESCRIBE/SHOW/SUMMARIZE/FROM-first parse as SELECT);
    parse-level, before it reaches DuckDB. The connection is read-only too (the second layer)."""
    import duckdb

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


def query(con, sql: str, params: Any = None) -> tuple[list[str], list[tuple]]:
    """Run one read-only statement; returns (column names, rows). Raises CatalogError on SQL errors."""
    import duckdb

    check_read_only(sql)
    try:
        rows = con.execute(sql, params).fetchall() if params is not None else con.execute(sql).fetchall()
    except duckdb.Error as exc:
        msg = str(exc).splitlines()[0]
        if "No files found" in msg:
            msg += " (the store is empty: run a scan, or `ww-spectral catalog build --data ROOT`)"
        raise CatalogError(f"query failed: {msg}") from None
    columns = [d[0] for d in con.description] if con.description else []
    return columns, rows


def run_sql(data_root: str | os.PathLike, sql: str, **connect_kw) -> tuple[list[str], list[tuple]]:
    """The `sql` command: one SELECT over the catalog views on a read-only connection."""
    check_read_only(sql)
    con = connect(data_root, read_only=True, **connect_kw)
    try:
        return query(con, sql)
    finally:
        con.close()


# ---------------------------------------------------------------------------- leaderboard / show
def leaderboard_sql(metric: str = _metrics.DEFAULT_METRIC, group_by: str | None = None,
                    where: str | None = None, top: int | None = None) -> str:  # fmt: skip
    """The leaderboard query text. metric/group_by are checked against catalogs/metrics.py (unknown
    names raise CatalogError listing the allowed ones); `where` is SQL over the `models` columns applied
    before ranking; top limits the rank within each group."""
    m = _metrics.get_metric(metric)
    group = _metrics.get_group(group_by)
    if top is not None and (not isinstance(top, int) or top < 1):
        raise CatalogError(f"--top must be a positive integer, got {top!r}")
    sql = _render(
        _sql_text("queries/leaderboard.sql"),
        group_select=f"{group}, " if group else "",
        partition=f"PARTITION BY {group}" if group else "",
        group_order=f"{group} NULLS LAST, " if group else "",
        metric=m.column,
        order=m.sql_order,
        where=where.strip() if where and where.strip() else "TRUE",
        top=str(top) if top else "9223372036854775807",
    )
    check_read_only(sql)  # a --where that smuggles a second statement is refused here
    return sql


def leaderboard(con, metric: str = _metrics.DEFAULT_METRIC, group_by: str | None = None,
                where: str | None = None, top: int | None = None) -> tuple[list[str], list[tuple]]:  # fmt: skip
    """(columns, rows) of the leaderboard: [group,] rank, repo_id, <metric>, revision."""
    return query(con, leaderboard_sql(metric, group_by, where, top))


def _model_files(store: ResultStore, table: str, repo_id: str) -> tuple[list[str], list[str]]:
    """(files, compacted files) that can hold `repo_id`'s rows in `table`, as URLs, the seed file first:
    the compacted files of its owner= folder and the per-model files whose name starts with its safe name
    (a safe-name collision only adds a file; the SQL still filters on repo_id)."""
    owner = owner_of(repo_id)
    seed = store.url(f"{table}/owner={SEED_VALUE}/c-seed-v{SCHEMA_VERSION}.parquet")
    rels = store.list(f"{table}/owner={owner}/*.parquet") if owner != SEED_VALUE else []
    mine = f"m-{safe_name(repo_id)}."
    compacted = [store.url(r) for r in rels if r.rsplit("/", 1)[-1].startswith("c-")]
    singles = [store.url(r) for r in rels if r.rsplit("/", 1)[-1].startswith(mine)]
    return [seed, *compacted, *singles], [seed, *compacted]


def show_model(con, model: str, *, storage_options: dict | None = None):
    """Summary and layer rows of MODEL = 'repo_id' (latest revision) or 'repo_id@revision':
    ((summary columns, [one row]), (layer columns, layer rows in depth order)).

    Reads only the files that can hold this model (its per-model files and its owner's compacted files,
    listed here and passed to the *_in macros), so the drill-down costs the same however many other
    models the store holds.
    Raises CatalogError when the model is not in the store."""
    repo_id, _, revision = model.partition("@")
    data_root = query(con, "SELECT data_root FROM _catalog_meta")[1][0][0]
    store = ResultStore(data_root, storage_options=storage_options)
    model_files, model_cfiles = _model_files(store, "models", repo_id)
    layer_files, layer_cfiles = _model_files(store, "layers", repo_id)
    files = {"layer_files": layer_files, "layer_cfiles": layer_cfiles}
    params = {"repo_id": repo_id, "revision": revision or None, "model_files": model_files,
              "model_cfiles": model_cfiles, **files}  # fmt: skip
    summary = query(con, _sql_text("queries/show_model.sql"), params)
    if not summary[1]:
        raise CatalogError(
            f"model {model!r} is not in the store; list stored models with "
            f'`ww-spectral sql --data ROOT "SELECT repo_id, revision FROM models"`'
        )
    key = summary[1][0][summary[0].index("record_key")]
    layer_params = {"repo_id": repo_id, "record_key": key, **files}
    layers = query(con, _sql_text("queries/show_layers.sql"), layer_params)
    return summary, layers
