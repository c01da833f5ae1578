"""Compaction: merge a partition's per-model files (m-*.parquet) into one compacted file (c-*.parquet).

Query results do not change: rows are copied as they are (cast to the current schema, so older files
gain NULL columns exactly as union_by_name would give them), sorted by repo_id so row-group statistics
let DuckDB skip most of a compacted file when one model is asked for.

Crash safety, step by step, for one partition:
  1. read the record_keys already held by the partition's compacted files;
  2. per-model files whose record_key (part of their name) is already compacted (left by an earlier
     crash) are deleted;
  3. the remaining per-model files are merged and written as ONE new compacted file, atomically
     (temp name + rename locally; single PUT on an object store);
  4. only then the merged per-model files are deleted.
Readers never see a row twice: the raw macros read a per-model file only while no compacted file holds
its record_key (catalogs/sql/00_raw_table.sql), so between steps 3 and 4 the per-model copies are
shadowed. They never miss a row: before step 3 the per-model files are the only copies and are read.
has_model() stays correct: it looks at the per-model marker under _markers/, which compaction keeps.
Only complete model revisions are merged: a layers or models file whose marker is absent belongs to a
write in flight (or one killed between its files) and stays a per-model file. Files of older schema
versions are upgraded as they are merged (catalogs/schema.py upgrade(): renamed columns keep their values).
Stale temp files (dead writers, see store.py) are removed first.
Run one compaction at a time per root: a lock file guards local roots (a lock left by a killed process
is taken over); on an object store the scheduler must not start two at once.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .errors import CatalogError
from .schema import TABLES, read_schema, upgrade
from .store import MARKERS_DIR, ResultStore

_ROW_GROUP = 64 * 1024  # small enough that min/max stats on repo_id prune a drill-down


@dataclass(frozen=True)
class CompactionStats:
    """What one compaction did: files merged into new compacted files, leftovers deleted, rows moved."""

    files_merged: int = 0
    files_written: int = 0
    leftovers_deleted: int = 0
    rows: int = 0
    per_table: dict = field(default_factory=dict)


def _partition_of(rel: str) -> str:
    return rel.rsplit("/", 1)[0]


def _compacted_keys(store: ResultStore, files: list[str]) -> set[str]:
    keys: set[str] = set()
    for rel in files:
        t = store.read_table(rel, columns=["record_key"])
        keys.update(t.column("record_key").to_pylist())
    return keys


def key_of(rel: str) -> str:
    """record_key of a per-model file: the last dot-separated part of its name (m-<name>.<key>.parquet)."""
    return rel.rsplit("/", 1)[-1].removesuffix(".parquet").rsplit(".", 1)[-1]


def _read_many(store: ResultStore, rels: list[str], table: str) -> pa.Table:
    """Read many small files of `table` as one table of its current schema, multi-threaded (older files
    gain NULL columns; values under a legacy column name move to the current name)."""
    if store.remote:
        paths, fs = [store._join(r) for r in rels], store.fs
    else:
        paths, fs = [os.path.join(store.root, r) for r in rels], None
    dataset = ds.dataset(paths, schema=read_schema(table), format="parquet", filesystem=fs)
    return upgrade(dataset.to_table(), table)


def _complete_keys(store: ResultStore) -> set[str]:
    """record_keys of the model revisions whose marker exists (all their files are written)."""
    return {rel.removesuffix(".json").rsplit(".", 1)[-1] for rel in store.list(f"{MARKERS_DIR}/*/*.json")}


def _compact_partition(store: ResultStore, table: str, part: str, singles: list[str], compacted: list[str],
                       *, min_files: int) -> tuple[int, int, int, int]:  # fmt: skip
    """(merged, written, leftovers_deleted, rows) for one partition folder."""
    done = _compacted_keys(store, compacted)
    # A per-model file holds exactly one record_key, the one in its name.
    leftovers = [rel for rel in singles if key_of(rel) in done]  # already compacted; an earlier run crashed
    todo = [rel for rel in singles if key_of(rel) not in done]
    for rel in leftovers:
        store.remove(rel)
    if len(todo) < max(min_files, 1):
        return 0, 0, len(leftovers), 0
    merged = _read_many(store, todo, table)
    sort = [("repo_id", "ascending"), ("record_key", "ascending")]
    if table == "layers":
        sort.append(("layer_id", "ascending"))
    merged = merged.sort_by(sort)
    buf = io.BytesIO()
    pq.write_table(merged, buf, compression="zstd", row_group_size=_ROW_GROUP)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    store.write_bytes(f"{part}/c-{stamp}-{uuid.uuid4().hex[:8]}.parquet", buf.getvalue())  # step 3
    for rel in todo:  # step 4: only after the compacted file is complete and visible
        store.remove(rel)
    return len(todo), 1, len(leftovers), merged.num_rows


def _take_lock(root: str) -> str:
    """Create ROOT/_compact.lock holding 'host pid'; a lock left by a dead process on this host is taken over."""
    os.makedirs(root, exist_ok=True)
    lock = os.path.join(root, "_compact.lock")
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                host, pid = Path(lock).read_text().split()
                if host == socket.gethostname():
                    os.kill(int(pid), 0)  # raises when that process is gone
            except ProcessLookupError:
                os.unlink(lock)  # stale: its compaction was killed; the store is consistent at every step
                continue
            except (ValueError, OSError):
                pass
            raise CatalogError(
                f"another compaction is running on {root} (lock {lock}); if none is, delete the lock"
            ) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        return lock
    raise CatalogError(f"could not take the compaction lock {lock}; delete it if no compaction runs")


def compact(data_root: str | os.PathLike, *, tables: tuple[str, ...] = TABLES, min_files: int = 2,
            storage_options: dict | None = None,
            on_progress: Callable[[int], None] | None = None) -> CompactionStats:  # fmt: skip
    """Merge each partition's per-model files of `tables` into one compacted file per partition.

    min_files: partitions with fewer per-model files are left alone (leftovers of a crashed run are
    still cleaned). on_progress(bytes_written) is called while a compacted file is written (local roots).
    Returns CompactionStats. Raises CatalogError when another live compaction holds the lock.
    """
    store = ResultStore(data_root, storage_options=storage_options, on_chunk=on_progress)
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise CatalogError(f"unknown tables {unknown}; tables are {list(TABLES)}")
    lock = _take_lock(store.root) if not store.remote else None
    try:
        store.clean_stale_temps()
        complete = _complete_keys(store) if {"layers", "models"} & set(tables) else set()
        totals = {"files_merged": 0, "files_written": 0, "leftovers_deleted": 0, "rows": 0}
        per_table = {}
        for table in tables:
            by_part: dict[str, tuple[list[str], list[str]]] = {}
            for rel in store.files(table):
                name = os.path.basename(rel)
                if table in ("layers", "models") and name.startswith("m-") and key_of(rel) not in complete:
                    continue  # a model revision still being written, or killed between its files
                singles, compacted = by_part.setdefault(_partition_of(rel), ([], []))
                (compacted if name.startswith("c-") else singles).append(rel)
            t_stats = [0, 0, 0, 0]
            for part, (singles, compacted) in sorted(by_part.items()):
                if singles:
                    res = _compact_partition(store, table, part, singles, compacted, min_files=min_files)
                    t_stats = [a + b for a, b in zip(t_stats, res)]
            per_table[table] = dict(zip(totals, t_stats))
            totals = {k: totals[k] + v for k, v in zip(totals, t_stats)}
        return CompactionStats(**totals, per_table=per_table)
    finally:
        if lock is not None:
            os.unlink(lock)
