"""ResultStore: the Parquet layout under a DATA root (local folder or s3:// / gs:// URI).

Layout (every path below is relative to ROOT):

    layers/owner=<owner>/m-<name>.<key>.parquet      one file per model revision + options
    models/owner=<owner>/m-<name>.<key>.parquet      (same name as its layers file)
    failures/owner=<owner>/m-<name>.<key>.parquet    one file per (revision, options, stage, attempt)
    scans/month=<YYYY-MM>/m-<scan_id>.<key>.parquet  one file per scan run
    <table>/<part>=<value>/c-<UTC time>-<uuid>.parquet   compacted files (catalogs/compact.py)
    <table>/<part>=_seed/c-seed-v<N>.parquet         zero-row file of the current schema (catalog anchor)
    _markers/owner=<owner>/<name>.<key>.json         "model revision complete" marker (has_model)
    links/owner=<owner>/m-<name>.<key>.parquet       a revision linked to a stored one (same weight bytes)
    links/owner=_seed/c-seed-links.parquet           zero-row file of LINKS_SCHEMA (the links reader's anchor)
    _content/<digest>.<options_hash>.json            which revision holds these weight bytes (links)
    _tmp/<host>-<pid>-<hex>.tmp                      files being written (local roots; see Atomicity)
    catalog.duckdb                                   views only (catalogs/catalog.py); rebuildable

<owner> is the hub org ("meta-llama" for "meta-llama/Llama-3-8B") or "_local" for paths; DuckDB prunes
files on it (`WHERE owner = ...`), and compaction keeps one file per owner, so a drill-down to one model
(`show`) reads only that model's per-model files plus its owner's compacted files. Leaderboards read the
small `models` table (one row per revision), so they need no finer partitioning; the model facts they
group on (architecture, pipeline tag, size) are not known from (repo_id, revision, options) alone, and
partitioning on them would cost has_model() its single stat.
<key> = record_key(repo_id, revision, options_hash): the file name is known without listing, so
has_model() is one stat (local) or one HEAD (object store) on the marker.

Links (duplicates on the hub): a hub revision whose weight files have the same sha256s as a revision
already stored (or being analysed) is not downloaded or analysed: `write_link` stores one row saying
which revision holds its rows (LINKS_SCHEMA) and, once that revision is stored, its has_model() marker
(so later scans skip it from the listing). The content index `_content/<digest>.<options_hash>.json`
(digest = content_digest of the sorted weight sha256s) is claimed with `claim_content` before a revision
is analysed (one exclusive create on a local root; on an object store a check-then-write, so two scans
racing on one digest may both analyse it) and marked stored by `content_stored` after write_model.

Atomicity: local files are written to a temp file under ROOT/_tmp/ (named after the writer's host and
pid, never matching "*.parquet") and renamed into place; on an object store the final key is written in
one PUT (or a multipart upload that only becomes visible when completed), never a temp key and a copy.
A model revision is written layers file, then models file, then marker: the views show a layer row only
when a models row has its record_key (catalogs/sql/10_layers.sql), so the models file is the commit
point of SQL readers and the marker that of has_model(). A crash in between leaves rows no view shows;
a re-run rewrites the same names (idempotent). Temp files of a writer that died (same host, pid gone)
or older than STALE_TEMP_S are removed by the next local write and by compaction.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ww_spectral.summary import RANDOM_LIKE_COLUMNS, random_like

from .errors import CatalogError, SchemaError
from .schema import (
    SCHEMA_VERSION,
    SCHEMAS,
    SUMMARY_FLOAT_KEYS,
    SUMMARY_INT_KEYS,
    TABLES,
    Provenance,
    conform,
    read_schema,
    record_key,
    upgrade,
    writer_version,
)

# Hive partition column of each table (the folder level under ROOT/<table>/).
PARTITION_COLUMN = {"layers": "owner", "models": "owner", "failures": "owner", "scans": "month"}
SEED_VALUE = "_seed"
MARKERS_DIR = "_markers"
TEMP_DIR = "_tmp"  # local writes land here first, then are renamed into place
STALE_TEMP_S = 6 * 3600  # a temp file older than this is stale whoever wrote it (no write takes hours)
_CHUNK_BYTES = 1 << 20  # local writes go out in chunks; on_chunk sees progress between them
LINKS_DIR = "links"
CONTENT_DIR = "_content"
LINKS_SEED = f"{LINKS_DIR}/owner={SEED_VALUE}/c-seed-links.parquet"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_GLOB_CHARS = re.compile(r"([][*?{}])")
_HOST = _UNSAFE.sub("_", socket.gethostname())[:64] or "host"

# One row per linked revision (written by write_link, read by read_links and the catalog macro
# model_links_in, catalogs/sql/60_model_links.sql).
LINKS_SCHEMA = pa.schema([
    pa.field("repo_id", pa.string(), nullable=False),    # the duplicate revision (not analysed)
    pa.field("revision", pa.string(), nullable=False),
    pa.field("options_hash", pa.string(), nullable=False),
    pa.field("record_key", pa.string(), nullable=False),  # record_key(repo_id, revision, options_hash)
    pa.field("linked_repo_id", pa.string(), nullable=False),  # the revision whose rows it shares
    pa.field("linked_revision", pa.string(), nullable=False),
    pa.field("linked_stored", pa.bool_()),  # False: that revision was still being analysed when linked
    pa.field("content_digest", pa.string()),  # content_digest(sha256s)
    pa.field("sha256s_json", pa.string()),  # JSON {file name: sha256} of the duplicate's weight files
    pa.field("linked_at", pa.timestamp("us", tz="UTC")),
    pa.field("schema_version", pa.int32()),
])


def owner_of(repo_id: str) -> str:
    """Partition value of a repo id: the hub org for 'org/name' ids, '_local' otherwise."""
    return repo_id.split("/", 1)[0] if _HUB_ID.match(repo_id) else "_local"


def safe_name(repo_id: str) -> str:
    """File-name part of a repo id: the name after the org, reduced to [A-Za-z0-9._-], at most 80 chars."""
    name = repo_id.split("/", 1)[1] if _HUB_ID.match(repo_id) else repo_id
    return (_UNSAFE.sub("_", name).strip("._") or "model")[:80]


def glob_escape(path: str) -> str:
    """`path` as a glob pattern that matches only itself: each of [ ] * ? { } becomes a one-character
    class ("[[]"), which DuckDB's and fsspec's globs both read literally."""
    return _GLOB_CHARS.sub(r"[\1]", path)


def temp_file_name(pid: int | None = None) -> str:
    """A new temp file name under ROOT/_tmp/: '<host>-<pid>-<hex>.tmp' (pid: the writer, default this
    process), so a later writer can tell whether the process that left it is still alive."""
    return f"{_HOST}-{os.getpid() if pid is None else pid}-{uuid.uuid4().hex[:12]}.tmp"


def _temp_owner_gone(name: str) -> bool:
    """True when a temp file name '<host>-<pid>-<hex>.tmp' names a process of this host that has exited."""
    parts = name.removesuffix(".tmp").rsplit("-", 2)
    if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. EPERM: the pid exists (another user's process)
        return False
    return False


def seed_file(table: str) -> str:
    """Relative path of a table's zero-row seed file of the current schema version."""
    return f"{table}/{PARTITION_COLUMN[table]}={SEED_VALUE}/c-seed-v{SCHEMA_VERSION}.parquet"


def is_remote(root: str) -> bool:
    return "://" in str(root) and not str(root).startswith("file://")


def filesystem_for(root: str, storage_options: dict | None = None):
    """(fsspec filesystem, path without protocol) for a remote root. Credentials/endpoint come from
    storage_options or the usual environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(root), **(storage_options or {}))
    return fs, path.rstrip("/")


class ResultStore:
    """Writes and lists the store's Parquet files under `root`.

    root: local folder (created on first write) or 's3://bucket/prefix' / 'gs://bucket/prefix'.
    storage_options: passed to fsspec for remote roots (e.g. {"client_kwargs": {"endpoint_url": ...}}).
    on_chunk: optional progress callback(bytes_written) called between local write chunks.
    durable: fsync each local file before its rename (survives power loss, ~5 ms per file); False
    still never shows a partial file to readers after a process kill (bulk loads, benchmarks).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        storage_options: dict | None = None,
        on_chunk: Callable[[int], None] | None = None,
        durable: bool = True,
    ) -> None:
        self.durable = durable
        self.root = str(root).rstrip("/")
        self.remote = is_remote(self.root)
        self.storage_options = storage_options
        self._on_chunk = on_chunk
        if self.remote:
            self.fs, self._base = filesystem_for(self.root, storage_options)
        else:
            self.root = str(Path(self.root.removeprefix("file://")).expanduser().absolute())
            self.fs, self._base = None, self.root

    def __repr__(self) -> str:
        return f"ResultStore({self.root!r})"

    # ---------------------------------------------------------------- paths
    def _join(self, *parts: str) -> str:
        return "/".join((self._base, *parts))

    def url(self, rel: str = "") -> str:
        """Absolute location of `rel` as DuckDB/readers see it (protocol kept for remote roots)."""
        return f"{self.root}/{rel}" if rel else self.root

    @staticmethod
    def model_key(repo_id: str, revision: str, options_hash: str) -> str:
        return record_key(repo_id, revision, options_hash)

    def model_file(self, table: str, repo_id: str, revision: str, options_hash: str) -> str:
        """Relative path of a model revision's file in `layers` or `models`."""
        key = self.model_key(repo_id, revision, options_hash)
        return f"{table}/owner={owner_of(repo_id)}/m-{safe_name(repo_id)}.{key}.parquet"

    def marker_file(self, repo_id: str, revision: str, options_hash: str) -> str:
        key = self.model_key(repo_id, revision, options_hash)
        return f"{MARKERS_DIR}/owner={owner_of(repo_id)}/{safe_name(repo_id)}.{key}.json"

    # ---------------------------------------------------------------- file primitives
    def exists(self, rel: str) -> bool:
        if self.remote:
            return self.fs.exists(self._join(rel))
        return os.path.exists(self._join(rel))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Make `rel` appear complete or not at all (see module doc)."""
        path = self._join(rel)
        if self.remote:
            # One PUT of the finished body: the object is invisible until the upload completes.
            self.fs.pipe_file(path, data)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temp_dir = self._join(TEMP_DIR)
        os.makedirs(temp_dir, exist_ok=True)
        self.clean_stale_temps()
        tmp = os.path.join(temp_dir, temp_file_name())
        try:
            with open(tmp, "wb") as fh:
                for start in range(0, len(data), _CHUNK_BYTES):
                    fh.write(data[start : start + _CHUNK_BYTES])
                    if self._on_chunk is not None:
                        fh.flush()
                        self._on_chunk(min(start + _CHUNK_BYTES, len(data)))
                if self.durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)  # atomic on POSIX (same file system); replaces an identical earlier write
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def clean_stale_temps(self, *, now: float | None = None) -> int:
        """Remove temp files under ROOT/_tmp/ whose writer died (this host, pid gone) or that are older
        than STALE_TEMP_S; returns how many. Live writers' temp files are kept. Local roots only."""
        if self.remote:
            return 0
        now = time.time() if now is None else now
        removed = 0
        try:
            entries = list(os.scandir(self._join(TEMP_DIR)))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                stale = _temp_owner_gone(entry.name) or now - entry.stat().st_mtime > STALE_TEMP_S
                if stale and entry.name.endswith(".tmp"):
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:  # its writer renamed it, or another cleaner was first
                continue
        return removed

    def read_bytes(self, rel: str) -> bytes:
        if self.remote:
            return self.fs.cat_file(self._join(rel))
        return Path(self._join(rel)).read_bytes()

    def remove(self, rel: str) -> None:
        if self.remote:
            self.fs.rm_file(self._join(rel))
        else:
            os.unlink(self._join(rel))

    def list(self, pattern: str) -> list[str]:
        """Relative paths matching a glob like 'layers/*/*.parquet', sorted (ROOT itself is literal)."""
        base = self._base
        if self.remote:
            self.fs.invalidate_cache()  # another process may have written since fsspec cached a listing
            hits = self.fs.glob("/".join((glob_escape(base), pattern)))
        else:
            hits = [p.as_posix() for p in Path(base).glob(pattern)]
        return sorted(h[len(base) + 1 :] for h in hits)

    def write_table(self, rel: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(rel, buf.getvalue())

    def read_table(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        if self.remote:
            return pq.read_table(io.BytesIO(self.read_bytes(rel)), columns=columns)
        return pq.read_table(self._join(rel), columns=columns)

    # ---------------------------------------------------------------- the contract
    def has_model(self, repo_id: str, revision: str, options_hash: str) -> bool:
        """True when this revision was stored with these options (one stat / HEAD)."""
        return self.exists(self.marker_file(repo_id, revision, options_hash))

    def write_model(
        self,
        *,
        model: dict,
        layers: pd.DataFrame | list[dict] | pa.Table,
        provenance: Provenance,
    ) -> bool:
        """Store one model revision: its layer rows and its summary row. Returns False (no-op, nothing
        written) when has_model() is already true for this provenance, True when written.

        model: summary keys (ww_spectral.summary.summarize()) and facts (parameter_count, architecture, ...); keys that the
        `models` schema lacks go to extra_json. Counts (n_tensors, n_layers_*) missing from `model` are
        filled from the layers' status column. layers: rows with the columns of LAYER_COLUMN_NAMES.
        """
        p = provenance
        if self.has_model(p.repo_id, p.revision, p.options_hash):
            return False
        key = self.model_key(p.repo_id, p.revision, p.options_hash)
        layer_tbl = _layers_table(layers, p, key)
        model_tbl = _models_table(model, layer_tbl, p, key)
        self.write_table(self.model_file("layers", p.repo_id, p.revision, p.options_hash), layer_tbl)
        self.write_table(self.model_file("models", p.repo_id, p.revision, p.options_hash), model_tbl)
        marker = {
            "repo_id": p.repo_id,
            "revision": p.revision,
            "options_hash": p.options_hash,
            "record_key": key,
            "written_at": _dt.datetime.now(_dt.UTC).isoformat(),
            "schema_version": SCHEMA_VERSION,
        }
        self.write_bytes(self.marker_file(p.repo_id, p.revision, p.options_hash), json.dumps(marker).encode())
        return True

    def last_failures(self, options_hash: str, repo_ids: Iterable[str] | None = None) -> dict[tuple[str, str], dict]:
        """The newest failures row of each (repo_id, revision) recorded under `options_hash`:
        {(repo_id, revision): {"error_type", "stage", "attempt", "failed_at", "ww_spectral_version"}}, newest
        by failed_at, then attempt. Revisions never stored as failed are absent; a revision stored since
        keeps its entry (has_model answers that). repo_ids: read only their owners' partitions (None: all).

        One read of the failures table per call, not one per model: a single dataset scan of the table's
        files (compacted ones are one per owner), only these columns, only rows of these options. A file
        compaction removes between listing and reading makes it list again."""
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        names = ["repo_id", "revision", "ww_spectral_version", "options_hash", "stage", "error_type", "attempt",
                 "failed_at"]
        schema = pa.schema([SCHEMAS["failures"].field(n) for n in names])  # columns every version has
        for tries_left in (2, 1, 0):
            files = self.files("failures")
            if repo_ids is not None:
                owners = {f"{PARTITION_COLUMN['failures']}={owner_of(r)}" for r in repo_ids}
                files = [f for f in files if f.split("/")[1] in owners]
            if not files:
                return {}
            try:
                data = ds.dataset([self._join(f) for f in files], schema=schema, format="parquet",
                                  filesystem=self.fs)
                tbl = data.to_table(filter=pc.field("options_hash") == options_hash)
                break
            except FileNotFoundError:
                if not tries_left:
                    raise
        tbl = tbl.sort_by([("failed_at", "ascending"), ("attempt", "ascending")])
        cols = {n: tbl.column(n).to_pylist() for n in names if n != "options_hash"}
        last: dict[tuple[str, str], dict] = {}
        for i, key in enumerate(zip(cols["repo_id"], cols["revision"], strict=True)):
            last[key] = {n: cols[n][i] for n in ("error_type", "stage", "attempt", "failed_at",
                                                 "ww_spectral_version")}
        return last

    def write_failure(
        self,
        *,
        repo_id: str,
        revision: str | None,
        stage: str,
        error_type: str,
        message: str,
        attempt: int = 1,
        provenance: Provenance | None = None,
        options_hash: str | None = None,
        failed_at: _dt.datetime | None = None,
    ) -> str:
        """Record one failed attempt; returns its relative path. The same (revision, options, stage,
        attempt) overwrites its own file, so retried bookkeeping never duplicates rows.
        revision may be unknown (listing/download failures): stored as 'unknown'."""
        failed_at = failed_at or _dt.datetime.now(_dt.UTC)
        if provenance is None:
            provenance = Provenance(
                repo_id=repo_id,
                revision=revision or "unknown",
                options_hash=options_hash or "unknown",
                analysed_at=failed_at,
            )
        p = provenance
        key = record_key(p.repo_id, p.revision, p.options_hash, stage, str(int(attempt)))
        row = {
            **p.as_columns(),
            "record_key": key,
            "schema_version": SCHEMA_VERSION,
            "stage": stage,
            "error_type": error_type,
            "message": str(message)[:2000],
            "attempt": int(attempt),
            "failed_at": failed_at,
        }
        rel = f"failures/owner={owner_of(p.repo_id)}/m-{safe_name(p.repo_id)}.{key}.parquet"
        self.write_table(rel, conform([row], "failures"))
        return rel

    def write_scan(self, scan: dict) -> str:
        """Record one scan run; returns its relative path. `scan` keys: scan_id (generated when absent),
        source, filters (dict, stored as JSON) or filters_json, n_requested, n_done, n_skipped, n_failed,
        seconds, started_at, finished_at (datetimes, UTC), options_hash."""
        scan = dict(scan)
        now = _dt.datetime.now(_dt.UTC)
        scan_id = str(scan.pop("scan_id", None) or f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}")
        if "filters" in scan:
            scan["filters_json"] = json.dumps(scan.pop("filters"), sort_keys=True, default=str)
        counts = scan.pop("counts", None) or {}
        for name in ("done", "skipped", "failed", "requested"):
            if name in counts:
                scan.setdefault(f"n_{name}", counts[name])
        finished = scan.get("finished_at") or now
        scan.setdefault("finished_at", finished)
        row = {
            "repo_id": "",
            "revision": "",
            "ww_spectral_version": writer_version(),
            "options_hash": scan.pop("options_hash", None) or "",
            "analysed_at": finished,
            "record_key": record_key("scan", scan_id),
            "schema_version": SCHEMA_VERSION,
            "scan_id": scan_id,
            "source": scan.pop("source", "other"),
            **scan,
        }
        month = f"{finished:%Y-%m}"
        rel = f"scans/month={month}/m-{_UNSAFE.sub('_', scan_id)[:80]}.{row['record_key']}.parquet"
        self.write_table(rel, conform([row], "scans"))
        return rel

    # ---------------------------------------------------------------- duplicates (links)
    @staticmethod
    def content_digest(sha256s) -> str:
        """One digest for a revision's weight bytes: sha256 of its files' sha256s, sorted (file names do not
        count: a re-upload under other names is the same weights)."""
        return hashlib.sha256("\n".join(sorted(str(s).lower() for s in sha256s)).encode()).hexdigest()

    def content_file(self, digest: str, options_hash: str) -> str:
        return f"{CONTENT_DIR}/{_UNSAFE.sub('_', digest)[:64]}.{_UNSAFE.sub('_', options_hash)[:32]}.json"

    def find_content(self, digest: str, options_hash: str) -> dict | None:
        """The holder of these weight bytes under these options: {"repo_id", "revision", "state" ("claimed" |
        "stored"), "at" (epoch s)}; None when no revision holds them."""
        rel = self.content_file(digest, options_hash)
        try:
            return json.loads(self.read_bytes(rel))
        except (FileNotFoundError, ValueError):
            return None

    def claim_content(self, digest: str, options_hash: str, repo_id: str, revision: str, *,
                      stale_s: float = STALE_TEMP_S) -> dict | None:
        """Claim these weight bytes for (repo_id, revision) before analysing it. Returns None when the claim is
        ours (new, or ours from an earlier attempt, or taken over from a claim older than `stale_s` whose
        revision was never stored); else the holder (find_content's dict): link to it instead."""
        rel = self.content_file(digest, options_hash)
        mine = {"repo_id": repo_id, "revision": revision, "state": "claimed", "at": time.time()}
        for _ in range(3):
            held = self.find_content(digest, options_hash)
            if held is not None:
                if (held.get("repo_id"), held.get("revision")) == (repo_id, revision):
                    return None
                stale = (held.get("state") != "stored" and time.time() - float(held.get("at") or 0) > stale_s
                         and not self.has_model(held.get("repo_id", ""), held.get("revision", ""), options_hash))
                if not stale:
                    return held
                self.write_bytes(rel, json.dumps(mine).encode())
                return None
            if self._create_exclusive(rel, json.dumps(mine).encode()):
                return None
        return self.find_content(digest, options_hash)

    def _create_exclusive(self, rel: str, data: bytes) -> bool:
        """Write `rel` only if it does not exist; False when it does. Local: a complete temp file hard-linked
        into place (link(2) fails on an existing name, so exactly one writer wins); object store: check, then
        one PUT (racy: see the module doc)."""
        if self.remote:
            if self.exists(rel):
                return False
            self.write_bytes(rel, data)
            return True
        path = self._join(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.makedirs(self._join(TEMP_DIR), exist_ok=True)
        tmp = os.path.join(self._join(TEMP_DIR), temp_file_name())
        with open(tmp, "wb") as fh:
            fh.write(data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def content_stored(self, digest: str, options_hash: str, repo_id: str, revision: str) -> None:
        """Mark these weight bytes as held by (repo_id, revision), now stored (after write_model)."""
        data = {"repo_id": repo_id, "revision": revision, "state": "stored", "at": time.time()}
        self.write_bytes(self.content_file(digest, options_hash), json.dumps(data).encode())

    def link_file(self, repo_id: str, revision: str, options_hash: str) -> str:
        key = self.model_key(repo_id, revision, options_hash)
        return f"{LINKS_DIR}/owner={owner_of(repo_id)}/m-{safe_name(repo_id)}.{key}.parquet"

    def write_link(self, *, repo_id: str, revision: str, options_hash: str, linked_repo_id: str,
                   linked_revision: str, sha256s: dict[str, str], linked_stored: bool) -> str:
        """Record that (repo_id, revision) has the weight bytes of (linked_repo_id, linked_revision) and was not
        analysed; returns the link file's path. With linked_stored, also its has_model() marker (later scans
        skip it); without (the other revision was still being analysed), the next scan checks again."""
        key = self.model_key(repo_id, revision, options_hash)
        now = _dt.datetime.now(_dt.UTC)
        row = {"repo_id": repo_id, "revision": revision, "options_hash": options_hash, "record_key": key,
               "linked_repo_id": linked_repo_id, "linked_revision": linked_revision,
               "linked_stored": bool(linked_stored), "content_digest": self.content_digest(sha256s.values()),
               "sha256s_json": json.dumps(dict(sorted(sha256s.items()))), "linked_at": now,
               "schema_version": SCHEMA_VERSION}
        rel = self.link_file(repo_id, revision, options_hash)
        self.write_table(rel, pa.Table.from_pylist([row], schema=LINKS_SCHEMA))
        if linked_stored:
            marker = {"repo_id": repo_id, "revision": revision, "options_hash": options_hash, "record_key": key,
                      "written_at": now.isoformat(), "schema_version": SCHEMA_VERSION,
                      "linked_repo_id": linked_repo_id, "linked_revision": linked_revision}
            self.write_bytes(self.marker_file(repo_id, revision, options_hash), json.dumps(marker).encode())
        return rel

    def link_files(self) -> list[str]:
        """Relative paths of the link files (the seed excluded)."""
        return [f for f in self.list(f"{LINKS_DIR}/*/*.parquet") if f != LINKS_SEED]

    def read_links(self) -> pa.Table:
        """Every link row (LINKS_SCHEMA); a revision linked twice (a later scan, once its target was stored)
        keeps one row, the latest."""
        parts = [self.read_table(rel).cast(LINKS_SCHEMA) for rel in self.link_files()]
        return pa.concat_tables(parts) if parts else LINKS_SCHEMA.empty_table()

    # ---------------------------------------------------------------- listing helpers
    def files(self, table: str, *, kind: str = "*") -> list[str]:
        """Relative paths of a table's data files; kind 'm' (per model), 'c' (compacted) or '*'."""
        if table not in TABLES:
            raise CatalogError(f"unknown table {table!r}; tables are {list(TABLES)}")
        return [f for f in self.list(f"{table}/*/{kind}-*.parquet") if f"={SEED_VALUE}/" not in f]

    def list_models(self) -> list[dict]:
        """The stored model revisions (from their markers): repo_id, revision, options_hash, record_key."""
        return [json.loads(self.read_bytes(rel)) for rel in self.list(f"{MARKERS_DIR}/*/*.json")]

    def read(self, table: str) -> pa.Table:
        """A whole table as Arrow in the current schema, de-duplicated as the catalog views do (compacted
        files win). Every stored row: unlike the `layers` view it keeps layer rows whose models file was
        never written (a killed writer). For tests and small stores; use the DuckDB catalog otherwise."""
        schema = SCHEMAS[table]
        compacted, single = [], []
        for rel in self.files(table):
            (compacted if os.path.basename(rel).startswith("c-") else single).append(self.read_table(rel))
        done = {k for t in compacted for k in t.column("record_key").to_pylist()}
        single = [t for t in single if not (set(t.column("record_key").to_pylist()) & done)]
        parts = [upgrade(t, table) for t in compacted + single]
        return pa.concat_tables(parts) if parts else schema.empty_table()

    def ensure_seeds(self) -> None:
        """Write the zero-row seed file of each table's current schema (idempotent). The catalog's globs
        then always match a file, and columns added in later schema versions exist even when every
        data file is older; seeds also hold the legacy names of renamed columns (schema.read_schema).
        A seed of the current version whose columns differ (a column added without a version bump) is
        rewritten."""
        for table in TABLES:
            rel = seed_file(table)
            want = read_schema(table)
            if not self.exists(rel) or not self._parquet_schema(rel).equals(want):
                self.write_table(rel, want.empty_table())
        if not self.exists(LINKS_SEED) or not self._parquet_schema(LINKS_SEED).equals(LINKS_SCHEMA):
            self.write_table(LINKS_SEED, LINKS_SCHEMA.empty_table())

    def _parquet_schema(self, rel: str) -> pa.Schema:
        source = io.BytesIO(self.read_bytes(rel)) if self.remote else self._join(rel)
        return pq.read_schema(source).remove_metadata()


def _layers_table(layers, p: Provenance, key: str) -> pa.Table:
    if isinstance(layers, pa.Table):
        tbl = layers
    elif isinstance(layers, list):
        tbl = pa.Table.from_pylist(layers) if layers else None
    else:
        tbl = pa.Table.from_pandas(layers, preserve_index=False)
    if tbl is None:
        return SCHEMAS["layers"].empty_table()
    for name in ("repo_id", "revision", "options_hash"):
        if name in tbl.column_names and set(tbl.column(name).to_pylist()) - {getattr(p, name)}:
            raise SchemaError(f"layers: column {name!r} disagrees with the provenance ({getattr(p, name)!r})")
    n = tbl.num_rows
    prov = {**p.as_columns(), "record_key": key, "schema_version": SCHEMA_VERSION}
    for name, value in prov.items():
        if name in tbl.column_names:
            tbl = tbl.drop_columns([name])
        typ = SCHEMAS["layers"].field(name).type
        tbl = tbl.append_column(name, pa.array([value] * n, typ))
    return conform(tbl, "layers")


def _models_table(model: dict, layer_tbl: pa.Table, p: Provenance, key: str) -> pa.Table:
    names = set(SCHEMAS["models"].names)
    row = {k: v for k, v in model.items() if k in names}
    extra = {k: v for k, v in model.items() if k not in names}
    if extra:
        row["extra_json"] = json.dumps(extra, sort_keys=True, default=str)
    if isinstance(row.get("options_json"), dict):
        row["options_json"] = json.dumps(row["options_json"], sort_keys=True)
    for name in ("repo_id", "revision", "options_hash"):
        if name in row and row[name] != getattr(p, name):
            raise SchemaError(f"model[{name!r}]={row[name]!r} disagrees with the provenance")
    status = layer_tbl.column("status").to_pylist()
    counts = {
        "n_tensors": len(status),
        "n_layers_analysed": status.count("success"),
        "n_layers_skipped": status.count("skipped"),
        "n_layers_failed": status.count("failed"),
    }
    if row.get("n_layers_random_like") is None:  # a caller's partial summary: counted like the rest
        present = [c for c in RANDOM_LIKE_COLUMNS if c in layer_tbl.column_names]
        counts.update(random_like({c: layer_tbl.column(c).to_pylist() for c in present}))
        row["share_random_like"] = counts["share_random_like"]
    for k in SUMMARY_INT_KEYS:
        if row.get(k) is None:
            row[k] = counts[k]
    for k in SUMMARY_FLOAT_KEYS:
        if row.get(k) is not None:
            row[k] = float(row[k])
    row.update(p.as_columns(), record_key=key, schema_version=SCHEMA_VERSION)
    return conform([row], "models")
