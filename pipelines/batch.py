"""Small models analysed many per Ray task, their outcomes streamed back one by one.

Why: for a small model the work per model is milliseconds, so one Prefect task and one Ray task per model
cost more than the analysis (benchmarks/bench_rehearsal.py measures it). A batch runs whole models in one
Ray worker process (pipelines/unit.py with an in-process layer runner): plan, download (hub), analyse,
assemble and, where the store is reachable from that worker, write. Each model's outcome is yielded as soon
as it is known (a Ray streaming generator, pipelines/dispatch.py), so the flow process sees progress per
model, knows which models a lost worker node had not finished, and holds no batch result in memory.

Which models: `is_batchable` (a parameter count known from the listing, at most
`ScanSettings.batch_max_params`, and a working set that one chunk would hold anyway); `make_batches` groups
them. Outcome dicts: see `run_batch`. This module imports neither prefect nor ray (the Ray wrapper is in
pipelines/dispatch.py).
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from catalogs.store import ResultStore, is_remote

from .bases import Resolver, base_of
from .deadline import Deadline
from .faults import is_transient, root_cause, stage_of
from .listing import WorkItem
from .settings import ScanSettings
from .unit import fetch_hub, process_model
from .work import CHUNK_BASE_BYTES, Chunk, analyze_chunk

# Working bytes per parameter of a model analysed whole: float64 copy (8 B) + Gram of the smaller side
# (at most 8 B per element of a square matrix) + slack; what `plan_chunks` would declare, from the count.
WORK_BYTES_PER_PARAM = 24

# Characters of an error message carried back from a worker (the failures table keeps 2000).
MESSAGE_CHARS = 2000

# Hub models downloaded ahead of the one being analysed, in background threads of the batch worker: the
# download's waiting (HTTP round trips, bandwidth) overlaps the analysis instead of adding to it.
PREFETCH = 2


@dataclass(frozen=True)
class BatchSpec:
    """What every model of a batch is analysed with.

    settings: the scan's settings (options, hub client settings, data root, deadlines).
    driver_node: the Ray node id of the flow process; a worker on that node (or any worker, when the data
        root is an object store) writes its models itself, elsewhere it sends the rows back to be written.
        None when unknown (Ray Client): then only an object-store root is written by workers.
    """

    settings: ScanSettings
    driver_node: str | None = None


def estimated_params(item: WorkItem) -> int | None:
    """The model's parameter count as the listing knows it (None when unknown)."""
    value = item.params_hint
    return int(value) if isinstance(value, int | float) and value >= 0 else None


def is_batchable(item: WorkItem, settings: ScanSettings) -> bool:
    """True for a model small enough to analyse whole inside one Ray task among others."""
    params = estimated_params(item)
    if params is None or settings.batch_max_params <= 0:
        return False
    return params <= settings.batch_max_params and params * WORK_BYTES_PER_PARAM <= settings.chunk_bytes


def families(items: list[WorkItem]) -> list[list[WorkItem]]:
    """`items` grouped by base family (pipelines/bases.py base_of: a fine-tune's family is its base, a model
    without a base heads its own), the base first, then its members in their given order; families in the
    order their first model comes."""
    groups: dict[str, list[WorkItem]] = {}
    for item in items:
        groups.setdefault(base_of(item) or item.repo_id, []).append(item)
    return [sorted(members, key=lambda it, name=name: it.repo_id != name) for name, members in groups.items()]


def make_batches(items: list[WorkItem], settings: ScanSettings, *, slots: int) -> list[list[WorkItem]]:
    """Consecutive groups of at most `batch_models` models and `batch_params` parameters each (one model
    at least), and at least ~4 batches per slot when there are enough models, so the last batches to
    finish leave no slot idle for long.

    Fine-tunes are scheduled with their base (pipelines/bases.py): models are taken by `families`, a family of
    several models starts a batch of its own (when the current one could not take it whole) and is not split
    for the ~4-per-slot spread, only by batch_models / batch_params; so the worker that runs the batch reads
    the base once and analyses the base and its fine-tunes from there; a larger family goes on in the next
    batch (consecutive batches, which find the base in the cache of whichever node they land on)."""
    if not items:
        return []
    per = max(1, min(settings.batch_models, math.ceil(len(items) / (4 * max(1, slots)))))
    batches: list[list[WorkItem]] = [[]]
    params = 0
    for members in families(items):
        if batches[-1] and len(members) > 1 and len(batches[-1]) + len(members) > per:
            batches.append([])  # a family starts a batch rather than straddle two
            params = 0
        for j, item in enumerate(members):
            p = estimated_params(item) or 0
            # Within a family the ~4-per-slot spread gives way: only the batch limits split it.
            full = len(batches[-1]) >= (settings.batch_models if j else per)
            if batches[-1] and (full or params + p > settings.batch_params):
                batches.append([])
                params = 0
            batches[-1].append(item)
            params += p
    return batches


def batch_memory(items: Iterable[WorkItem]) -> int:
    """Bytes a batch task declares to Ray: the largest model's working set (models run one at a time)."""
    return CHUNK_BASE_BYTES + max((estimated_params(it) or 0) * WORK_BYTES_PER_PARAM for it in items)


def _in_process_layers(options):
    """A layer runner (pipelines/unit.py) that analyses in this process: one chunk, one BLAS thread."""

    def run(source: str, plans, *, kind: str, fetch, deadline: Deadline) -> list[dict]:
        out = analyze_chunk(Chunk(index=0, source=source, plans=tuple(plans), memory=0, fetch=fetch), options)
        if deadline.expired():
            raise deadline.error("model analysis")
        return [out]

    return run


def writes_here(spec: BatchSpec, node_id: str | None) -> bool:
    """Whether a worker on `node_id` writes results itself: the store is an object store, or a local folder
    on the flow's own node (elsewhere that path would be another machine's disk)."""
    return is_remote(spec.settings.data_root) or (node_id is not None and node_id == spec.driver_node)


def run_batch(items: list[WorkItem], spec: BatchSpec, *, node_id: str | None = None) -> Iterator[dict]:
    """Analyse each model in turn (runs in a Ray worker); yield one outcome per model, in order.

    Outcome: {"repo_id", "revision" (as listed), "status", "pid", ...}: status "done" / "skipped" (written
    here / found stored), "analysed" (not written here: "record" and "layers" come back to be written),
    each with "seconds", "n_layers", "stages", "bytes"; or "failed" with "stage", "error_type", "message",
    "transient". A model's fault never stops the batch.
    """
    settings = spec.settings
    store = ResultStore(settings.data_root)
    write = writes_here(spec, node_id)
    layers = _in_process_layers(settings.options)
    pid = os.getpid()
    pool = ThreadPoolExecutor(max_workers=PREFETCH, thread_name_prefix="ww-prefetch")
    ahead: deque = deque()
    pending = iter(items)
    # Bases of this batch's fine-tunes: their own files are read through the node's base cache (kept for the
    # fine-tunes), and their listed revisions are the ones the fine-tunes' deltas are taken against.
    wanted = {base_of(it) for it in items} - {None}
    resolver = Resolver(settings.endpoint, settings.hub,
                        {it.repo_id: it.revision for it in items if it.repo_id in wanted and it.revision})

    def fetch_next() -> None:
        item = next(pending, None)
        if item is not None:
            ahead.append((item, pool.submit(fetch_hub, item, settings, store=store if write else None,
                                            from_cache=item.repo_id in wanted) if item.kind == "hub" else None))

    try:
        for _ in range(PREFETCH + 1):
            fetch_next()
        while ahead:
            item, future = ahead.popleft()
            fetch_next()
            yield _one(item, future, settings, store, layers, write, pid, resolver)
    finally:  # closed early (the task cancelled): whatever was fetched ahead is deleted once it arrives
        for _, future in ahead:
            if future is not None:
                future.add_done_callback(lambda f: f.cancelled() or f.result().close())
        pool.shutdown(wait=False, cancel_futures=True)


def _one(item: WorkItem, future, settings: ScanSettings, store: ResultStore, layers, write: bool, pid: int,
         resolver: Resolver) -> dict:
    """One model's outcome; its download (when prefetched) is awaited here, the wait counted as "download"."""
    t0 = time.perf_counter()
    fetched = future.result() if future is not None else None
    waited = time.perf_counter() - t0
    try:
        result = process_model(item, settings, store, layers, headers_first=False, write=write, fetched=fetched,
                               resolver=resolver)
    except Exception as exc:  # noqa: BLE001 - any fault of one model is that model's outcome
        cause = root_cause(exc)
        return {"repo_id": item.repo_id, "revision": item.revision, "status": "failed", "pid": pid,
                "stage": stage_of(exc), "error_type": type(cause).__name__,
                "message": str(cause)[:MESSAGE_CHARS], "transient": is_transient(exc),
                "seconds": time.perf_counter() - t0}
    result["stages"]["download"] += waited
    result.update(repo_id=item.repo_id, revision=item.revision, pid=pid, stored_revision=result["revision"])
    return result
