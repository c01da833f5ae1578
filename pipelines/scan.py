"""The body every scan flow shares: list -> skip stored (and failed for good) -> analyse on Ray -> compact +
catalog -> scans row.

`run_scan` returns the scan summary dict: scan_id, source, requested, done, skipped (already stored),
skipped_failed (last attempt failed for good: pipelines/faults.py skips_rescan), failed, seconds,
fanout_seconds (wall time of the analysis phase: first task submitted to last one finished),
models_per_minute, failures (list of final failure rows), models (per model analysed by a model task of
its own: seconds, chunks, worker_pids, max_chunk_memory, ray_seconds; batched models are only counted),
stages (seconds per stage summed over models, analysis_seconds, bytes_downloaded, retried_attempts,
batches, batched_models), timings (wall seconds of list / select / ray_start / fanout / ray_stop / catalog),
slots, catalog (path or None).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
import uuid
from collections.abc import Callable

from catalogs.catalog import build_catalog
from catalogs.compact import compact
from catalogs.schema import writer_version
from ww_spectral.errors import OptionError, WWSpectralError
from ww_spectral.progress import safe_text

from . import ray_runtime
from .batch import is_batchable, make_batches
from .dispatch import ChunkRunner, driver_node_id
from .faults import skips_rescan
from .listing import Listed, WorkItem
from .scan_state import ScanState, describe_error
from .settings import ScanSettings
from .tasks import Batch, batch_task, failure_task, model_task


def new_scan_id(now: _dt.datetime) -> str:
    return f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def run_scan(*, source: str, filters: dict, list_fn: Callable[[], Listed], settings: ScanSettings) -> dict:
    """List with `list_fn`, skip what the store holds, analyse the rest, record the scan; the summary."""
    t0 = time.perf_counter()
    started_at = _dt.datetime.now(_dt.UTC)
    state = ScanState(settings, scan_id=new_scan_id(started_at))
    timings: dict[str, float] = {}
    listed = list_fn()
    t1 = _lap(timings, "list", t0)
    todo = _select(state, *listed)
    del listed
    t1 = _lap(timings, "select", t1)
    failed_before = (f"{state.skipped_failed} skipped for a failure recorded before (--retry-failed tries them "
                     "again), " if state.skipped_failed else "")
    state.say(f"scan {source}: {state.total} model revision(s), {state.skipped} already in the store, "
              f"{failed_before}{len(todo)} to analyse")
    slots = _analyse(state, todo, timings) if todo else 0
    seconds = time.perf_counter() - t0
    if not state.store.remote:
        # The catalog refresh needs the root, which nothing has created yet when nothing was listed.
        os.makedirs(state.store.root, exist_ok=True)
    catalog = _timed(timings, "catalog", lambda: refresh_catalog(state))
    # The scans row after the catalog refresh, so it holds the refresh's time too: the catalog's views read
    # the store's files when queried, so they include this row all the same.
    state.store.write_scan({
        "scan_id": state.scan_id, "source": source, "filters": filters, "options_hash": settings.fingerprint,
        "n_requested": state.total, "n_done": state.done, "n_skipped": state.skipped,
        "n_skipped_failed": state.skipped_failed, "n_failed": state.failed,
        "seconds": seconds, "started_at": started_at, "finished_at": _dt.datetime.now(_dt.UTC),
        **health_columns(state, timings, slots),
    })
    summary = {
        "scan_id": state.scan_id,
        "source": source,
        "requested": state.total,
        "done": state.done,
        "skipped": state.skipped,
        "skipped_failed": state.skipped_failed,
        "failed": state.failed,
        "seconds": round(seconds, 3),
        "fanout_seconds": round(timings.get("fanout", 0.0), 3),
        "models_per_minute": round(60.0 * state.done / seconds, 3) if seconds > 0 else 0.0,
        "failures": list(state.failures),
        "models": sorted(state.results, key=lambda r: (r["repo_id"], r["revision"])),
        "stages": state.stages(),
        "slots": slots,
        "catalog": catalog,
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    publish_summary(state, summary)
    return summary


def publish_summary(state: ScanState, summary: dict) -> None:
    """The scan's counts and stage totals as a Prefect markdown artifact of the flow run (what Prefect's UI
    shows for the models analysed in batches, which have no task run of their own). Never fails the scan."""
    st = summary["stages"]
    lines = ["| requested | analysed | skipped | failed | retried attempts | batches (models) | seconds |",
             "|---|---|---|---|---|---|---|",
             f"| {summary['requested']} | {summary['done']} | {summary['skipped']} | {summary['failed']} | "
             f"{st['retried_attempts']} | {st['batches']} ({st['batched_models']}) | {summary['seconds']:.0f} |", "",
             "| stage | seconds (summed over models) |", "|---|---|",
             *(f"| {k} | {v:.1f} |" for k, v in st["stage_seconds"].items()), "",
             f"bytes downloaded: {st['bytes_downloaded']:,}"]
    if summary["skipped_failed"]:
        lines += ["", f"skipped for a failure recorded before: {summary['skipped_failed']} "
                      "(`ww-spectral scan --retry-failed` tries them again)"]
    lines += [f"- failed [{f['stage']}] {safe_text(f['repo_id'])}: {safe_text(f['error_type'])}"
              for f in summary["failures"][:50]]
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact("\n".join(lines), key="scan-summary", description=f"scan {state.scan_id}")
    except Exception as exc:  # noqa: BLE001 - a display; the scan's results are in the store
        state.warn(f"scan: warning: the summary artifact was not published ({describe_error(exc)})")


def health_columns(state: ScanState, timings: dict, slots: int) -> dict:
    """The scan-health columns of the scans row (catalogs/schema.py SCANS_SCHEMA; read by the view
    scan_health, catalogs/sql/50_scan_health.sql): fan-out wall time, slots, retried attempts, batches,
    bytes, seconds per model stage and per scan phase, failed attempts by stage and error type."""
    st = state.stages()
    return {"fanout_seconds": timings.get("fanout", 0.0), "slots": slots, "n_retried": st["retried_attempts"],
            "n_batches": st["batches"], "n_batched": st["batched_models"], "bytes_downloaded": st["bytes_downloaded"],
            "analysis_seconds": st["analysis_seconds"],
            "stage_seconds_json": json.dumps(st["stage_seconds"], sort_keys=True),
            "timings_json": json.dumps({k: round(v, 3) for k, v in timings.items()}, sort_keys=True),
            "faults_json": json.dumps(state.faults_by_type())}


def _lap(timings: dict, name: str, t0: float) -> float:
    now = time.perf_counter()
    timings[name] = timings.get(name, 0.0) + now - t0
    return now


def _timed(timings: dict, name: str, fn: Callable[[], object]):
    t0 = time.perf_counter()
    try:
        return fn()
    finally:
        _lap(timings, name, t0)


def _select(state: ScanState, items: list[WorkItem], listing_failures: list) -> list[WorkItem]:
    """Record listing failures, drop duplicates, revisions already stored with these options and (unless
    settings.retry_failed) revisions whose last attempt with these options failed for good; the rest in a
    deterministic order (sorted by repo id and revision)."""
    unique, seen = [], set()
    for item in sorted(items, key=lambda it: (it.repo_id, it.revision or "")):
        if item.key not in seen:  # the same revision may be listed twice (e.g. a folder and its cache entry)
            seen.add(item.key)
            unique.append(item)
    state.total = len(unique) + len(listing_failures)
    for item, exc in sorted(listing_failures, key=lambda p: p[0].repo_id):
        state.fail(item, exc, 1)
    fingerprint = state.settings.fingerprint
    todo = [it for it in unique
            if it.revision is None or not state.store.has_model(it.repo_id, it.revision, fingerprint)]
    state.skipped = len(unique) - len(todo)
    if all(it.revision is None for it in todo):
        return todo
    # One read of the failures table for the whole listing (10,000 revisions: one query, not 10,000).
    last = state.store.last_failures(fingerprint, repo_ids={it.repo_id for it in todo if it.revision is not None})
    running = writer_version()
    settled = {it.key: f["attempt"] for it in todo
               if (f := last.get(it.key)) is not None
               and skips_rescan(f["error_type"], f["ww_spectral_version"], running=running)}
    if state.settings.retry_failed:
        state.attempts_before = settled
        return todo
    state.skipped_failed = len(settled)
    return [it for it in todo if it.key not in settled]


def _analyse(state: ScanState, todo: list[WorkItem], timings: dict) -> int:
    """Start (or attach) Ray, fan the models out, release Ray; the number of Ray slots used."""
    settings = state.settings
    t0 = time.perf_counter()
    handle = ray_runtime.ensure_ray(ray_address=settings.ray_address, workers=settings.workers)
    try:
        if settings.uses_gpus and not handle.gpus:
            raise OptionError("the analysis asks for GPUs (device cuda, or WW_SCAN_GPU_TASKS=1) but the Ray cluster "
                              "has none; attach a cluster with GPU nodes (--ray-address) or use --device cpu")
        if handle.started and settings.prewarm:
            _wait_warm(ray_runtime.prewarm(handle.slots))
        state.chunks = ChunkRunner(slots=handle.slots, options=settings.options, max_task_memory=handle.node_memory,
                                   chunk_bytes=settings.chunk_bytes, driver_node=driver_node_id(),
                                   task_env=handle.task_env,
                                   gpu_large_bytes=settings.gpu_large_bytes if settings.uses_gpus else None)
        state.say(f"scan: Ray at {safe_text(handle.address)}: {handle.slots} slot(s)"
                  f"{' (started here)' if handle.started else ''}")
        t1 = _lap(timings, "ray_start", t0)
        state.started = time.monotonic()  # throughput in the progress lines counts from here
        _fan_out(state, todo)
        _lap(timings, "fanout", t1)
        return handle.slots
    finally:
        t2 = time.perf_counter()
        ray_runtime.release(handle)
        _lap(timings, "ray_stop", t2)


# The longest a scan waits for its fresh Ray workers' warm-up (imports + a tiny analysis, pipelines/work.py
# warm_up) before the fan-out starts; past it the fan-out starts anyway (the warm-ups hold their slots).
PREWARM_WAIT_S = 120.0


def _wait_warm(refs: list) -> None:
    """Wait for the warm-up tasks, so each worker's first imports are a fixed cost of starting Ray (timed
    as ray_start) rather than of the first models' analysis (fanout). A warm-up that fails only costs
    the wait: the first chunk on that worker imports what it needs itself."""
    import ray

    ray.wait(refs, num_returns=len(refs), timeout=PREWARM_WAIT_S)


def _fan_out(state: ScanState, todo: list[WorkItem]) -> None:
    """Large models first (one "analyze-model" task each, their layers spread over the slots), then the
    small ones in batches; then a task per model that failed in a batch (pipelines/tasks.py).

    `slots + 1` tasks run at once (threads of this process): Ray tasks in flight stay capped at `slots` by
    the ChunkRunner, and the extra thread does the next task's Prefect bookkeeping, download and planning
    while the Ray slots are busy. At most `2 * (slots + 1)` tasks are submitted and not yet finished, so the
    flow's memory does not grow with the number of models.
    """
    from prefect.task_runners import ThreadPoolTaskRunner

    settings = state.settings
    slots = state.chunks.slots
    small = [it for it in todo if is_batchable(it, settings)]
    large = [it for it in todo if not is_batchable(it, settings)]
    # Largest first: a long model started last would leave the other slots idle at the end.
    large.sort(key=lambda it: -(it.params_hint or 0))
    batches = make_batches(small, settings, slots=slots)
    del todo, small
    tasks = {"model": model_task(state), "batch": batch_task(state), "failed": failure_task(state)}
    retry_tasks: dict[int, object] = {}

    def model_with(first_attempt: int):
        retries = max(0, settings.retries - first_attempt + 1)
        if retries == settings.retries:
            return tasks["model"]
        return retry_tasks.setdefault(retries, model_task(state, retries=retries))

    with ThreadPoolTaskRunner(max_workers=slots + 1) as runner:
        pump = _Pump(runner, limit=2 * (slots + 1))

        def finished(kind: str, subject, future) -> None:
            if kind == "batch":
                for what, item, fault, attempt in subject.after:
                    if what == "model":
                        pump.submit("model", item, model_with(attempt),
                                    {"item": item, "state": state, "first_attempt": attempt})
                    else:
                        pump.submit("failed", item, tasks["failed"],
                                    {"item": item, "state": state, "error": fault, "attempt": attempt})
                subject.after = []
                if not future.state.is_completed():
                    # The batch task itself crashed (not a model's fault): every model it held, alone.
                    for item in subject.items:
                        if item.key not in subject.reported:
                            pump.submit("model", item, tasks["model"], {"item": item, "state": state})
            elif not future.state.is_completed() and not state.has_failed(subject):
                # The task writes its own failure row; a Prefect-level crash or cancellation did not.
                state.fail(subject, _state_exception(future), settings.retries + 1)

        pump.on_done = finished
        for item in large:
            pump.submit("model", item, tasks["model"], {"item": item, "state": state})
        for i, items in enumerate(batches):
            batch = Batch(i, items)
            pump.submit("batch", batch, tasks["batch"], {"batch": batch, "state": state})
        pump.drain()


class _Pump:
    """Submits Prefect tasks with at most `limit` unfinished; `on_done(kind, subject, future)` runs in this
    (the flow's) thread for each finished one, and may submit more."""

    def __init__(self, runner, *, limit: int) -> None:
        import queue

        self.runner = runner
        self.limit = limit
        self.in_flight = 0
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.on_done = lambda kind, subject, future: None

    def submit(self, kind: str, subject, task, parameters: dict) -> None:
        while self.in_flight >= self.limit:
            self._handle_one()
        future = self.runner.submit(task, parameters)
        self.in_flight += 1
        future.add_done_callback(lambda f: self.done.put((kind, subject, f)))

    def _handle_one(self) -> None:
        kind, subject, future = self.done.get()
        self.in_flight -= 1
        future.wait()  # the done callback may run before the final state is set on the future
        self.on_done(kind, subject, future)

    def drain(self) -> None:
        while self.in_flight:
            self._handle_one()


def _state_exception(future) -> BaseException:
    """The exception a finished, not completed Prefect future ended with."""
    state = future.state
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = future.result(raise_on_failure=False)
        except Exception as e:  # noqa: BLE001
            exc = e
    if not isinstance(exc, BaseException):
        exc = WWSpectralError(f"task ended in state {state.type.value}: {state.message}")
    return exc


def refresh_catalog(state: ScanState) -> str | None:
    """Compact this scan's files, then rebuild the DuckDB catalog; the catalog's path, or None on failure.

    Compaction first: DuckDB opens every file footer, so a store of thousands of single-model files makes
    the leaderboard slow (bench_catalog: 6.4 s for 10,000 models uncompacted, 0.13 s compacted). Both are
    crash-safe and re-runnable, so a failure is a warning naming the command that finishes the job.
    """
    _or_warn(state, "compaction", "compact", compact)
    catalog = _or_warn(state, "catalog refresh", "build", build_catalog)
    return None if catalog is None else str(catalog)


def _or_warn(state: ScanState, what: str, command: str, step: Callable[[str], object]) -> object | None:
    root = state.settings.data_root
    try:
        return step(root)
    except Exception as exc:  # noqa: BLE001 - the Parquet files are the data; the step can re-run
        state.warn(f"scan: warning: {what} failed ({describe_error(exc)}); run "
                   f"`ww-spectral catalog {command} --data {safe_text(root)}`")
        return None
