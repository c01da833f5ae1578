"""The body every scan flow shares: list -> skip stored -> analyse on Ray -> compact + catalog -> scans row.

`run_scan` returns the scan summary dict: scan_id, source, requested, done, skipped, failed, seconds,
fanout_seconds (wall time of the analysis phase: first model task submitted to last one finished),
models_per_minute, failures (list of rows), models (per analysed model: seconds, chunks, worker_pids,
max_chunk_memory, ray_seconds), catalog (path or None).
"""

from __future__ import annotations

import datetime as _dt
import time
import uuid
from collections.abc import Callable

from catalogs.catalog import build_catalog
from catalogs.compact import compact
from ww_spectral.errors import WWSpectralError
from ww_spectral.progress import safe_text

from . import ray_runtime
from .dispatch import ChunkRunner
from .listing import Listed, WorkItem
from .scan_state import ScanState, describe_error
from .settings import ScanSettings
from .tasks import model_task


def new_scan_id(now: _dt.datetime) -> str:
    return f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def run_scan(*, source: str, filters: dict, list_fn: Callable[[], Listed], settings: ScanSettings) -> dict:
    """List with `list_fn`, skip what the store holds, analyse the rest, record the scan; the summary."""
    t0 = time.perf_counter()
    started_at = _dt.datetime.now(_dt.UTC)
    state = ScanState(settings, scan_id=new_scan_id(started_at))
    todo = _select(state, *list_fn())
    state.say(f"scan {source}: {state.total} model revision(s), {state.skipped} already in the store, "
              f"{len(todo)} to analyse")
    fanout_seconds = _analyse(state, todo) if todo else 0.0
    seconds = time.perf_counter() - t0
    # The scans row first, so the refreshed catalog includes this scan (and the root exists even when
    # nothing was listed).
    state.store.write_scan({
        "scan_id": state.scan_id, "source": source, "filters": filters, "options_hash": settings.fingerprint,
        "n_requested": state.total, "n_done": state.done, "n_skipped": state.skipped, "n_failed": state.failed,
        "seconds": seconds, "started_at": started_at, "finished_at": _dt.datetime.now(_dt.UTC),
    })
    return {
        "scan_id": state.scan_id,
        "source": source,
        "requested": state.total,
        "done": state.done,
        "skipped": state.skipped,
        "failed": state.failed,
        "seconds": round(seconds, 3),
        "fanout_seconds": round(fanout_seconds, 3),
        "models_per_minute": round(60.0 * state.done / seconds, 3) if seconds > 0 else 0.0,
        "failures": list(state.failures),
        "models": sorted(state.results, key=lambda r: (r["repo_id"], r["revision"])),
        "catalog": refresh_catalog(state),
    }


def _select(state: ScanState, items: list[WorkItem], listing_failures: list) -> list[WorkItem]:
    """Record listing failures, drop duplicates and revisions already stored with these options; the rest
    in a deterministic order (sorted by repo id and revision)."""
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
    return todo


def _analyse(state: ScanState, todo: list[WorkItem]) -> float:
    """Start (or attach) Ray, fan the models out, release Ray; the fan-out's wall seconds."""
    settings = state.settings
    handle = ray_runtime.ensure_ray(ray_address=settings.ray_address, workers=settings.workers)
    try:
        if handle.started and settings.prewarm:
            ray_runtime.prewarm(handle.slots)
        state.chunks = ChunkRunner(slots=handle.slots, options=settings.options,
                                   max_task_memory=handle.node_memory)
        state.say(f"scan: Ray at {safe_text(handle.address)}: {handle.slots} slot(s)"
                  f"{' (started here)' if handle.started else ''}")
        t0 = time.perf_counter()
        state.started = time.monotonic()  # throughput in the progress lines counts from here
        _fan_out(state, todo)
        return time.perf_counter() - t0
    finally:
        ray_runtime.release(handle)


def _fan_out(state: ScanState, todo: list[WorkItem]) -> None:
    """One Prefect task per model, `slots + 1` models in flight (threads of this process).

    Ray chunks in flight stay capped at `slots` by the ChunkRunner; the one extra model thread does the
    next model's Prefect bookkeeping, download and header planning while the Ray slots are busy, so that
    per-model overhead overlaps with analysis instead of adding to it.
    """
    from prefect.task_runners import ThreadPoolTaskRunner

    task = model_task(state)
    with ThreadPoolTaskRunner(max_workers=state.chunks.slots + 1) as runner:
        futures = [(item, runner.submit(task, {"item": item, "state": state})) for item in todo]
        for item, future in futures:
            future.wait()
            if not future.state.is_completed() and not state.has_failed(item):
                # The task writes its own failure row; a Prefect-level crash or cancellation did not.
                state.fail(item, _state_exception(future), state.settings.retries + 1)


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
