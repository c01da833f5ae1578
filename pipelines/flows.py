"""Prefect flows of ww-spectral: the nightly hub scan, an explicit list of models, a local folder.

Each flow: list the work (stage `list`), sort it (deterministic fan-out), skip revisions already in the
store with the same analysis options, analyse the rest as one Prefect task per model revision (threads
of this process) whose heavy work runs on Ray, refresh the DuckDB catalog, and record a `scans` row.
Every flow returns the scan summary dict: scan_id, source, requested, done, skipped, failed, seconds,
fanout_seconds (wall time of the analysis phase: first model task submitted to last one
finished), models_per_minute, failures (list of rows), models (per analysed model: seconds, chunks, worker_pids,
max_chunk_memory, ray_seconds), catalog (path or None).

Runs with nothing configured: Prefect's ephemeral API (no PREFECT_API_URL needed: no Prefect code runs in
Ray workers) and a private local Ray with the machine's cores. With ray_address / RAY_ADDRESS the same
flow body runs on an existing cluster.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
import uuid
from pathlib import Path

# isort: off
from . import ray_runtime  # noqa: F401  (sets the telemetry switches before prefect/ray are imported)
from prefect import flow
# isort: on

from ww_spectral.errors import CheckpointError, NoWeightsError, WWSpectralError
from ww_spectral.records import AnalysisOptions

from .tasks import (
    RUNTIMES,
    ScanRuntime,
    WorkItem,
    analyze_model_task,
    default_retry_settings,
    record_failure,
    root_cause,
    stage,
)

HEX40 = frozenset("0123456789abcdef")
PROGRESS = {"enabled": os.environ.get("WW_SCAN_PROGRESS", "") not in ("", "0")}  # the CLI turns it on


def _is_commit(rev: str | None) -> bool:
    return bool(rev) and len(rev) == 40 and set(rev) <= HEX40


# ------------------------------------------------------------------------------------------------ listing


def list_folder(folder: str) -> tuple[list[WorkItem], list[tuple[WorkItem, BaseException]]]:
    """Model folders under `folder` (each subfolder a model), or the repos of a Hugging Face cache.

    A plain subfolder: repo_id = its name, revision = content hash of its weight files (editing weights
    makes a new revision). A cache root (models--org--name folders; also HF_HOME with a hub/ inside):
    repo_id = org/name, revision = the commit sha refs/main points to. Hidden entries are ignored.
    Returns (items, listing failures).
    """
    from ww_spectral.sources import resolve_source

    root = Path(folder).expanduser()
    if not root.is_dir():
        from ww_spectral.errors import SourceNotFoundError

        raise SourceNotFoundError(f"{folder}: not a folder; pass a folder of model folders or a Hugging Face cache")
    if not any(p.name.startswith("models--") for p in root.iterdir()) and (root / "hub").is_dir():
        root = root / "hub"  # HF_HOME given instead of its hub cache
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs and any(p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth") for p in root.iterdir()):
        subdirs = [root]  # the folder itself is one model
    items, failed = [], []
    for sub in subdirs:
        try:
            ref = resolve_source(str(sub.resolve())).ref
        except Exception as exc:  # noqa: BLE001 - recorded as this model's failure; the scan goes on
            name = sub.name.removeprefix("models--").replace("--", "/") if sub.name.startswith("models--") \
                else sub.name
            where = "read" if isinstance(exc, NoWeightsError | CheckpointError) else "list"
            failed.append((WorkItem(name, None, "local", str(sub)), _tag(where, exc)))
            continue
        items.append(WorkItem(ref.repo_id, ref.revision, "local", str(sub.resolve())))
    return items, failed


def _tag(where: str, exc: BaseException) -> BaseException:
    try:
        with stage(where):
            raise exc
    except Exception as tagged:  # noqa: BLE001
        return tagged


def list_ids(model_ids: list[str], *, endpoint: str | None) -> tuple[list[WorkItem], list]:
    """Explicit ids "org/name[@rev]" (revisions other than commit shas are resolved with one info call
    each) or local paths."""
    from ww_spectral import hub
    from ww_spectral.sources import resolve_source

    items, failed = [], []
    for model_id in model_ids:
        if Path(model_id).expanduser().exists():
            try:
                ref = resolve_source(str(Path(model_id).expanduser().resolve())).ref
                items.append(WorkItem(ref.repo_id, ref.revision, "local", str(Path(model_id).expanduser().resolve())))
            except Exception as exc:  # noqa: BLE001
                failed.append((WorkItem(Path(model_id).name, None, "local", model_id), _tag("read", exc)))
            continue
        repo_id, rev = hub.parse_model_id(model_id)
        if _is_commit(rev):
            items.append(WorkItem(repo_id, rev, "hub", repo_id))
            continue
        try:
            with stage("list"):
                info = hub.model_info(repo_id, revision=rev, endpoint=endpoint)
        except Exception as exc:  # noqa: BLE001
            failed.append((WorkItem(repo_id, rev, "hub", repo_id), exc))
            continue
        items.append(WorkItem(repo_id, info.sha, "hub", repo_id, facts=_hub_facts(info)))
    return items, failed


def _hub_facts(m) -> dict:
    return {"downloads": m.downloads, "likes": m.likes, "library": m.library, "pipeline_tag": m.pipeline_tag,
            "base_model": m.base_model, "parameter_count": m.parameter_count}


# ------------------------------------------------------------------------------------------------ engine


def _options() -> AnalysisOptions:
    return AnalysisOptions()


def run_scan(
    *,
    source: str,
    filters: dict,
    data_root: str,
    list_fn,
    ray_address: str | None,
    workers: int | None,
    endpoint: str | None = None,
) -> dict:
    """The body every flow shares: list -> skip -> analyse on Ray -> catalog -> scans row -> summary."""
    from catalogs.store import ResultStore

    from .ray_runtime import ensure_ray, prewarm, release

    t0 = time.perf_counter()
    started_at = _dt.datetime.now(_dt.UTC)
    scan_id = f"{started_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    options = _options()
    retries, delay = default_retry_settings()
    rt = ScanRuntime(scan_id=scan_id, data_root=data_root, options=options, slots=1, endpoint=endpoint,
                     retries=retries, retry_delay_s=delay, progress=PROGRESS["enabled"],
                     model_timeout_s=float(os.environ.get("WW_SCAN_MODEL_TIMEOUT_S", 6 * 3600)),
                     chunk_bytes=int(os.environ.get("WW_SCAN_CHUNK_BYTES", 512 * 2**20)))
    RUNTIMES[scan_id] = rt
    store = ResultStore(data_root)
    try:
        items, list_failures = list_fn()
        items = sorted(items, key=lambda it: (it.repo_id, it.revision or ""))
        for item, exc in sorted(list_failures, key=lambda p: p[0].repo_id):
            record_failure(rt, item, exc, 1)
            rt.log("failed", item, f"{type(root_cause(exc)).__name__}: {str(root_cause(exc))[:160]}")
        fp = options.fingerprint()
        todo, seen = [], set()
        skipped = 0
        for item in items:
            key = (item.repo_id, item.revision)
            if key in seen:
                continue  # the same revision listed twice (e.g. a folder and its cache entry)
            seen.add(key)
            if item.revision is not None and store.has_model(item.repo_id, item.revision, fp):
                skipped += 1
                continue
            todo.append(item)
        rt.total = len(seen) + len(list_failures)
        with rt.lock:
            rt.skipped = skipped
        if rt.progress:
            print(f"[scan] {source}: {rt.total} model revision(s), {skipped} already in the store, "
                  f"{len(todo)} to analyse", file=sys.stderr, flush=True)
        handle = None
        if todo:
            handle = ensure_ray(ray_address=ray_address, workers=workers)
            # Opt-in (WW_SCAN_PREWARM=1): warm fresh workers' imports up front. Off by default: in
            # bench_scan it did not pay off (2-worker speed-up 1.50-1.51x with it, 1.73-1.95x without).
            if handle.started and os.environ.get("WW_SCAN_PREWARM", "0") == "1":
                prewarm(handle.slots)
            rt.slots = handle.slots
            rt.limiter = type(rt.limiter)(handle.slots)
            from .tasks import _node_memory_cap

            rt.max_task_memory = _node_memory_cap()
            if rt.progress:
                print(f"[scan] Ray at {handle.address}: {handle.slots} slot(s)"
                      f"{' (started here)' if handle.started else ''}", file=sys.stderr, flush=True)
        fan_t0 = time.perf_counter()
        rt.started = time.monotonic()  # throughput in the progress lines counts from here
        try:
            if todo:
                _fan_out(rt, todo)
        finally:
            fanout_seconds = time.perf_counter() - fan_t0
            if handle is not None:
                release(handle)
        seconds = time.perf_counter() - t0
        # The scans row first, so the refreshed catalog includes this scan (and the root exists even when
        # nothing was listed).
        store.write_scan({
            "scan_id": scan_id, "source": source, "filters": filters, "options_hash": fp,
            "n_requested": rt.total, "n_done": rt.done, "n_skipped": rt.skipped, "n_failed": rt.failed,
            "seconds": seconds, "started_at": started_at, "finished_at": _dt.datetime.now(_dt.UTC),
        })
        catalog = None
        try:
            # Merge this scan's per-model files first: DuckDB opens every file footer, so a store of
            # thousands of single-model files makes the leaderboard slow (bench_catalog: 6.4 s for 10,000
            # models uncompacted, 0.13 s compacted). Crash-safe and incremental (only new files move).
            from catalogs.compact import compact

            compact(data_root)
        except Exception as exc:  # noqa: BLE001 - the per-model files stay valid; compaction can re-run
            print(f"[scan] warning: compaction failed ({type(exc).__name__}: {exc}); run "
                  f"`ww-spectral catalog compact --data {data_root}`", file=sys.stderr)
        try:
            from catalogs.catalog import build_catalog

            catalog = str(build_catalog(data_root))
        except Exception as exc:  # noqa: BLE001 - the Parquet is the data; the catalog is rebuildable
            print(f"[scan] warning: catalog refresh failed ({type(exc).__name__}: {exc}); run "
                  f"`ww-spectral catalog build --data {data_root}`", file=sys.stderr)
        summary = {
            "scan_id": scan_id,
            "source": source,
            "requested": rt.total,
            "done": rt.done,
            "skipped": rt.skipped,
            "failed": rt.failed,
            "seconds": round(seconds, 3),
            "fanout_seconds": round(fanout_seconds, 3),
            "models_per_minute": round(60.0 * rt.done / seconds, 3) if seconds > 0 else 0.0,
            "failures": list(rt.failures),
            "models": sorted(rt.results, key=lambda r: (r["repo_id"], r["revision"])),
            "catalog": catalog,
        }
        return summary
    finally:
        RUNTIMES.pop(scan_id, None)


def _fan_out(rt: ScanRuntime, todo: list[WorkItem]) -> None:
    """One Prefect task per model, `rt.slots + 1` models in flight (threads of this process).

    Ray chunks in flight stay capped at `rt.slots` by the shared limiter; the one extra model thread does the
    next model's Prefect bookkeeping, download and header planning while the Ray slots are busy, so that
    per-model overhead overlaps with analysis instead of adding to it.
    """
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect.tasks import exponential_backoff

    task = analyze_model_task.with_options(
        retries=rt.retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=rt.retry_delay_s) if rt.retries else 0,
        # Jitter: models rate-limited together (HTTP 429) must not come back together.
        retry_jitter_factor=0.5,
    )
    with ThreadPoolTaskRunner(max_workers=max(1, rt.slots) + 1) as runner:
        futures = [(item, runner.submit(task, {"item": item, "scan_id": rt.scan_id})) for item in todo]
        for item, future in futures:
            future.wait()
            state = future.state
            if state.is_completed():
                continue
            exc = state.data if isinstance(state.data, BaseException) else None
            if exc is None:
                try:
                    exc = future.result(raise_on_failure=False)
                except Exception as e:  # noqa: BLE001
                    exc = e
            if not isinstance(exc, BaseException):
                exc = WWSpectralError(f"task ended in state {state.type.value}: {state.message}")
            # Normally the task wrote its failure row itself; a Prefect-level timeout/crash did not.
            if (item.repo_id, item.revision) not in rt.failure_recorded:
                record_failure(rt, item, exc, rt.retries + 1)
                rt.log("failed", item, f"{type(root_cause(exc)).__name__}: {str(root_cause(exc))[:160]}")


# ------------------------------------------------------------------------------------------------ flows


@flow(name="nightly-scan", persist_result=False, log_prints=False)
def nightly_scan(
    data_root: str = "ww-data",
    author: str | None = None,
    library: str | None = None,
    pipeline_tag: str | None = None,
    min_downloads: int | None = None,
    min_params: int | None = None,
    max_params: int | None = None,
    sort: str = "downloads",
    limit: int = 100,
    ray_address: str | None = None,
    workers: int | None = None,
    endpoint: str | None = None,
) -> dict:
    """List hub models (one listing call with expand fields), skip stored revisions, analyse the rest."""
    from ww_spectral import hub

    filters = {"author": author, "library": library, "pipeline_tag": pipeline_tag, "min_downloads": min_downloads,
               "min_params": min_params, "max_params": max_params, "sort": sort, "limit": limit,
               "endpoint": hub.resolve_endpoint(endpoint)}

    def list_fn():
        with stage("list"):
            models = hub.list_models(endpoint=endpoint, author=author, library=library, pipeline_tag=pipeline_tag,
                                     min_downloads=min_downloads, min_params=min_params, max_params=max_params,
                                     sort=sort, limit=limit)
        return [WorkItem(m.repo_id, m.sha, "hub", m.repo_id, facts=_hub_facts(m)) for m in models], []

    try:
        return run_scan(source="hub", filters=filters, data_root=data_root, list_fn=list_fn,
                        ray_address=ray_address, workers=workers, endpoint=endpoint)
    except Exception as exc:
        cause = root_cause(exc)
        if isinstance(cause, WWSpectralError) and cause is not exc:
            raise cause from exc  # listing failed for good: one clear error (the CLI prints it, exit 2)
        raise


@flow(name="analyze-models", persist_result=False, log_prints=False)
def analyze_models(
    model_ids: list[str],
    data_root: str = "ww-data",
    ray_address: str | None = None,
    workers: int | None = None,
    endpoint: str | None = None,
) -> dict:
    """Analyse explicit models: hub ids "org/name[@revision]" (or local paths)."""
    ids = sorted(dict.fromkeys(model_ids))
    return run_scan(source="models", filters={"model_ids": ids}, data_root=data_root,
                    list_fn=lambda: list_ids(ids, endpoint=endpoint), ray_address=ray_address, workers=workers,
                    endpoint=endpoint)


@flow(name="scan-folder", persist_result=False, log_prints=False)
def scan_folder(
    folder: str,
    data_root: str = "ww-data",
    ray_address: str | None = None,
    workers: int | None = None,
) -> dict:
    """Analyse every model folder under `folder` (or every repo of a Hugging Face cache)."""
    folder_abs = str(Path(folder).expanduser().resolve())
    return run_scan(source="folder", filters={"folder": folder_abs}, data_root=data_root,
                    list_fn=lambda: list_folder(folder_abs), ray_address=ray_address, workers=workers)


__all__ = ["nightly_scan", "analyze_models", "scan_folder", "run_scan", "list_folder", "list_ids"]
