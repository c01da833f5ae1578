"""The declared Arrow schemas of the store's four tables, owned here and nowhere else.

Tables (one Parquet file per model revision per table, see store.py):
  layers    one row per tensor of a model revision (analysed, failed or skipped): provenance +
            every column of ww_spectral.columns.LAYER_COLUMNS (built from that list, never retyped).
  models    one row per model revision: the summary keys of ww_spectral.summary.summarize() + model facts.
  failures  one row per failed attempt at a model revision (stage, error type, message, attempt).
  scans     one row per scan run (source, filters as JSON, counts, timings).

Every row carries provenance (repo_id, revision, ww_spectral_version, options_hash, analysed_at),
`record_key` (the hash that names the row's source file; compaction de-duplicates on it) and
`schema_version`. Bump SCHEMA_VERSION when a column is added or renamed; never remove or retype a
column (older files are read with union_by_name, so missing columns read as NULL). A renamed column
keeps its old name in LEGACY_COLUMNS: seed files carry both names, so the views (catalogs/sql/) and
upgrade() read the value from whichever name a file has.

Versions: 1 first release; 2 renamed analyzed_at -> analysed_at (one spelling beside n_layers_analysed);
3 layers gained the option columns of ww_spectral.columns (slice_id ... trap_positions: randomize,
mp_fit, TPL fits), NULL when their option was off; 4 models gained n_layers_random_like and
share_random_like (ww_spectral/summary.py random_like; NULL in older files, for which the catalog counts
them from the layers: catalogs/sql/20_model_summaries.sql); 5 layers gained the placement columns of
ww_spectral.columns (block ... base_ref: depth, role, expert, quantisation format, delta rows), NULL in
older files; scans gained the scan-health columns (fanout_seconds ... faults_json), NULL in rows of
older scans; 6 scans gained n_skipped_failed (revisions skipped for a failure recorded before), NULL in rows
of older scans.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import importlib.metadata
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ww_spectral.columns import LAYER_COLUMNS
from ww_spectral.summary import SUMMARY_FLOAT_KEYS, SUMMARY_INT_KEYS

from .errors import SchemaError

SCHEMA_VERSION = 6

TABLES = ("layers", "models", "failures", "scans")

_KIND_TO_ARROW = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
_TS = pa.timestamp("us", tz="UTC")


@functools.cache
def writer_version() -> str:
    """The ww-spectral version this process writes into rows' provenance (`ww_spectral_version`)."""
    try:
        return importlib.metadata.version("ww-spectral")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source tree without install
        return "0+unknown"


@dataclass(frozen=True)
class Provenance:
    """Where a row comes from. revision: commit sha (hub) or content hash (local sources).

    options_hash: AnalysisOptions.fingerprint() (16 hex). analysed_at: tz-aware UTC time.
    """

    repo_id: str
    revision: str
    options_hash: str
    ww_spectral_version: str = field(default_factory=writer_version)
    analysed_at: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.UTC))

    def __post_init__(self) -> None:
        for name in ("repo_id", "revision", "options_hash"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise SchemaError(f"Provenance.{name} must be a non-empty string, got {value!r}")
        if self.analysed_at.tzinfo is None:
            raise SchemaError("Provenance.analysed_at must be timezone-aware (use datetime.now(UTC))")

    def as_columns(self) -> dict:
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "ww_spectral_version": self.ww_spectral_version,
            "options_hash": self.options_hash,
            "analysed_at": self.analysed_at,
        }


def record_key(*parts: str) -> str:
    """Stable 20-hex key of a record's identity (e.g. repo_id, revision, options_hash)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


def _f(name: str, typ: pa.DataType, doc: str, *, required: bool = False) -> pa.Field:
    # `required` is a write-time rule (conform() raises when the column is absent); every column is
    # nullable in Parquet so that files of an older schema version still union by name.
    return pa.field(name, typ, nullable=True, metadata={"doc": doc, "required": "1" if required else "0"})


PROVENANCE_FIELDS = (
    _f("repo_id", pa.string(), "hub id 'org/name' or the local folder/file name", required=True),
    _f("revision", pa.string(), "commit sha (hub) or content hash (local)", required=True),
    _f("ww_spectral_version", pa.string(), "ww-spectral version that wrote the row", required=True),
    _f("options_hash", pa.string(), "AnalysisOptions.fingerprint() of the analysis", required=True),
    _f("analysed_at", _TS, "when the analysis (or failure) happened, UTC", required=True),
    _f(
        "record_key",
        pa.string(),
        "hash naming the source file; compaction de-duplicates on it",
        required=True,
    ),
    _f("schema_version", pa.int32(), "SCHEMA_VERSION of the writer", required=True),
)


def _table_schema(table: str, fields: list[pa.Field]) -> pa.Schema:
    """Provenance fields, then the table's own, with the table name and SCHEMA_VERSION as metadata."""
    return pa.schema([*PROVENANCE_FIELDS, *fields],
                     metadata={"table": table, "schema_version": str(SCHEMA_VERSION)})  # fmt: skip


LAYERS_SCHEMA = _table_schema(
    "layers", [_f(c.name, _KIND_TO_ARROW[c.kind], c.doc, required=True) for c in LAYER_COLUMNS]
)

# Summary keys of ww_spectral.summary.summarize(), then model facts (NULL when the source does not know them).
MODELS_SCHEMA = _table_schema(
    "models",
    [_f(k, pa.float64(), f"model summary: {k} (see catalogs/metrics.py)") for k in SUMMARY_FLOAT_KEYS]
    + [_f(k, pa.int64(), f"model summary: {k}") for k in SUMMARY_INT_KEYS]
    + [
        _f("parameter_count", pa.int64(), "total parameters (hub metadata or sum of tensor sizes)"),
        _f("dtype", pa.string(), "dominant stored dtype code (BF16, F16, F32, ...)"),
        _f("architecture", pa.string(), "config.json architectures[0], e.g. LlamaForCausalLM"),
        _f("model_type", pa.string(), "config.json model_type, e.g. llama"),
        _f("library", pa.string(), "hub library_name, e.g. transformers"),
        _f("pipeline_tag", pa.string(), "hub pipeline_tag, e.g. text-generation"),
        _f("downloads", pa.int64(), "hub downloads (30 days) at scan time"),
        _f("likes", pa.int64(), "hub likes at scan time"),
        _f("base_model", pa.string(), "hub base_model (first), NULL for base models"),
        _f("source_kind", pa.string(), "hub | cache | folder | file | module | mapping"),
        _f("analysis_seconds", pa.float64(), "wall time of the analysis, seconds"),
        _f("options_json", pa.string(), "the analysis options as JSON"),
        _f("extra_json", pa.string(), "model-dict keys not in this schema, as JSON"),
    ],
)

FAILURES_SCHEMA = _table_schema(
    "failures",
    [
        _f("stage", pa.string(), "where it failed: list | download | read | analyze | write", required=True),
        _f("error_type", pa.string(), "exception class name, e.g. GatedRepoError", required=True),
        _f("message", pa.string(), "exception message (first 2000 chars)", required=True),
        _f("attempt", pa.int64(), "1-based attempt number", required=True),
        _f("failed_at", _TS, "when it failed, UTC", required=True),
    ],
)

SCANS_SCHEMA = _table_schema(
    "scans",
    [
        _f("scan_id", pa.string(), "unique id of the scan run", required=True),
        _f("source", pa.string(), "hub | folder | models | other", required=True),
        _f("filters_json", pa.string(), "the scan's filters/arguments as JSON"),
        _f("n_requested", pa.int64(), "models the scan considered"),
        _f("n_done", pa.int64(), "models analysed and written"),
        _f("n_skipped", pa.int64(), "models already in the store (no-op)"),
        _f("n_skipped_failed", pa.int64(), "models skipped because their last attempt failed for good "
                                           "(pipelines/faults.py skips_rescan; NULL before schema version 6)"),
        _f("n_failed", pa.int64(), "models that failed"),
        _f("seconds", pa.float64(), "wall time of the scan, seconds"),
        _f("started_at", _TS, "scan start, UTC"),
        _f("finished_at", _TS, "scan end, UTC"),
        # Scan health (written by pipelines/scan.py health_columns; NULL in rows of older scans); the view
        # scan_health (catalogs/sql/50_scan_health.sql) reads them.
        _f("fanout_seconds", pa.float64(), "wall time of the analysis phase (first task to last), seconds"),
        _f("slots", pa.int64(), "Ray slots the analysis ran on"),
        _f("n_retried", pa.int64(), "failed attempts that were retried (each has a failures row)"),
        _f("n_batches", pa.int64(), "batch tasks (many small models per Ray task)"),
        _f("n_batched", pa.int64(), "models analysed in batches"),
        _f("bytes_downloaded", pa.int64(), "bytes of weights and config downloaded by the analysed models"),
        _f("analysis_seconds", pa.float64(), "seconds inside the spectral analysis, summed over models"),
        _f("stage_seconds_json", pa.string(), "seconds per model stage summed over models, JSON {stage: s}"),
        _f("timings_json", pa.string(), "wall seconds per scan phase (list, select, ray_start, fanout, "
                                        "ray_stop, catalog), JSON {phase: s}"),
        _f("faults_json", pa.string(), "failed attempts by stage and error type, JSON "
                                       "[{stage, error_type, failed, retried}]"),
    ],
)

SCHEMAS: dict[str, pa.Schema] = {
    "layers": LAYERS_SCHEMA,
    "models": MODELS_SCHEMA,
    "failures": FAILURES_SCHEMA,
    "scans": SCANS_SCHEMA,
}

# Columns renamed in a later schema version: old name -> current name (same type). Files written before
# the rename hold the old name; readers take the value from whichever of the two a file has.
LEGACY_COLUMNS: dict[str, str] = {"analyzed_at": "analysed_at"}


def read_schema(table: str) -> pa.Schema:
    """The declared schema plus the legacy names of renamed columns: what seed files are written with
    (so a union by name over old and new files always has both names) and what readers of many files ask
    for before upgrade()."""
    schema = schema_for(table)
    extra = [schema.field(new).with_name(old) for old, new in LEGACY_COLUMNS.items() if new in schema.names]
    return pa.schema([*schema, *extra], metadata=schema.metadata)


def upgrade(tbl: pa.Table, table: str) -> pa.Table:
    """A table read from files of any schema version, as the current declared schema: values of renamed
    columns move to their current name, columns an older file lacks become NULL, columns are ordered
    as declared. Rows are not otherwise changed."""
    schema = schema_for(table)
    names = set(tbl.column_names)
    n = tbl.num_rows
    arrays = []
    for fld in schema:
        col = tbl.column(fld.name).cast(fld.type) if fld.name in names else pa.nulls(n, fld.type)
        for old, new in LEGACY_COLUMNS.items():
            if new == fld.name and old in names:
                col = pc.coalesce(col, tbl.column(old).cast(fld.type))
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=schema)


def schema_for(table: str) -> pa.Schema:
    try:
        return SCHEMAS[table]
    except KeyError:
        raise SchemaError(f"unknown table {table!r}; tables are {list(SCHEMAS)}") from None


def conform(data, table: str) -> pa.Table:
    """Cast `data` (pa.Table, pandas DataFrame or list of row dicts) to the declared schema of `table`.

    Columns are reordered to the declared order; optional columns that are absent become NULL;
    float NaN becomes NULL (so SQL avg/median skip undefined values rather than return NaN).
    Raises SchemaError naming the column when a required column is missing, a column is not declared,
    or a value cannot be cast losslessly to the declared type (e.g. text in a float column).
    """
    schema = schema_for(table)
    if isinstance(data, pa.Table):
        tbl = data
    elif isinstance(data, list):
        tbl = (
            pa.Table.from_pylist(data)
            if data
            else pa.table({n: pa.array([], pa.null()) for n in schema.names})
        )
    else:  # pandas DataFrame
        tbl = pa.Table.from_pandas(data, preserve_index=False)
    unknown = [n for n in tbl.column_names if n not in schema.names]
    if unknown:
        raise SchemaError(
            f"{table}: columns {unknown} are not in the declared schema; add them to catalogs/schema.py "
            f"(and bump SCHEMA_VERSION) or drop them"
        )
    n = tbl.num_rows
    arrays = []
    for fld in schema:
        if fld.name not in tbl.column_names:
            if fld.metadata.get(b"required") == b"1":
                raise SchemaError(f"{table}: required column {fld.name!r} ({fld.type}) is missing")
            arrays.append(pa.nulls(n, fld.type))
            continue
        col = tbl.column(fld.name)
        if col.type != fld.type:
            try:
                col = col.cast(fld.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise SchemaError(
                    f"{table}: column {fld.name!r} has type {col.type}, which does not cast to the declared "
                    f"{fld.type}: {str(exc).splitlines()[0]}"
                ) from None
        if pa.types.is_floating(fld.type) and col.null_count < n:
            # NaN (undefined maths) is stored as NULL so SQL aggregates skip it instead of returning NaN.
            col = pc.if_else(pc.is_nan(col), pa.scalar(None, fld.type), col)
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=schema)
