"""One Prefect task per model revision; the heavy work goes to plain `ray.remote` functions.

Where things run:
- Prefect tasks run in the flow process (a ThreadPoolTaskRunner sized to the Ray slots), so no Prefect
  code ever runs inside a Ray worker and Prefect's ephemeral mode starts no server there.
- Each task resolves its model (stage `list`), downloads it shard by shard when it comes from the hub
  (`download`), plans layers from headers (`read`), fans contiguous chunks of layers out as Ray tasks
  that each declare `memory=` from the header estimate (`analyze`), then writes through the store (`write`).

Faults:
- transient (HTTP 408/429/5xx, timeouts, network errors, a lost Ray worker or node): the task raises and
  Prefect retries it with exponential back-off (`retry_condition_fn=retry_if_transient`); Ray itself
  first re-runs a chunk whose worker died (`max_retries`).
- permanent (gated/private without token, no weights, damaged checkpoint, unsupported dtype/architecture):
  not retried. A model that fails for good becomes one `failures` row (stage, error type, message,
  attempt) and the scan goes on.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# isort: off
from . import ray_runtime  # noqa: F401  (telemetry switches before prefect/ray are imported)
from prefect import task
from prefect.cache_policies import NO_CACHE
# isort: on

from ww_spectral.errors import (
    CheckpointError,
    GatedRepoError,
    NoWeightsError,
    OptionError,
    SourceNotFoundError,
    TransientHubError,
    UnsupportedDtypeError,
    WWSpectralError,
)
from ww_spectral.records import AnalysisOptions, LayerPlan

from .work import Chunk, analyze_chunk, plan_chunks

STAGES = ("list", "download", "read", "analyze", "write")


class UnsupportedArchitectureError(WWSpectralError):
    """The checkpoint has tensors but none is a layer ww-spectral analyses (2-D dense or 4-D conv, float)."""


class StageFailure(WWSpectralError):
    """A model failed at `stage`; `cause` is the original exception (its type is what gets recorded)."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage}: {type(root_cause(cause)).__name__}: {root_cause(cause)}")
        self.stage = stage
        self.cause = cause

    def __reduce__(self):
        return (StageFailure, (self.stage, self.cause))


PERMANENT = (
    GatedRepoError,
    NoWeightsError,
    SourceNotFoundError,
    CheckpointError,
    UnsupportedDtypeError,
    UnsupportedArchitectureError,
    OptionError,
)


def root_cause(exc: BaseException) -> BaseException:
    """Unwrap StageFailure and Ray's RayTaskError to the exception that actually happened."""
    seen = 0
    while seen < 10:
        seen += 1
        if isinstance(exc, StageFailure):
            exc = exc.cause
            continue
        inner = getattr(exc, "cause", None)
        if type(exc).__name__.startswith("RayTaskError") and isinstance(inner, BaseException):
            exc = inner
            continue
        break
    return exc


def _ray_transient_types() -> tuple[type, ...]:
    try:
        import ray.exceptions as rex
    except ImportError:  # pragma: no cover - ray is a dependency
        return ()
    names = ("WorkerCrashedError", "ActorDiedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError",
             "LocalRayletDiedError", "ObjectFetchTimedOutError", "GetTimeoutError", "OutOfMemoryError",
             "RaySystemError", "ActorUnavailableError", "ObjectReconstructionFailedError")
    return tuple(getattr(rex, n) for n in names if hasattr(rex, n))


def is_transient(exc: BaseException) -> bool:
    """True for faults worth retrying later: hub 408/429/5xx and network errors, timeouts, a lost Ray worker."""
    exc = root_cause(exc)
    if isinstance(exc, TransientHubError):
        return True
    if isinstance(exc, PERMANENT):
        return False
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if isinstance(exc, _ray_transient_types()):
        return True
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int) and (status in (408, 429) or status >= 500):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"TimeoutException", "NetworkError", "RemoteProtocolError", "TransportError"})


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry only transient faults (the exception is the Failed state's data)."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as e:  # noqa: BLE001 - the state's exception itself
            exc = e
    return isinstance(exc, BaseException) and is_transient(exc)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Tag any exception raised inside with the stage it happened in (the first tag wins)."""
    try:
        yield
    except StageFailure:
        raise
    except Exception as exc:
        raise StageFailure(name, exc) from exc


# ------------------------------------------------------------------------------------------------ work items


@dataclass(frozen=True)
class WorkItem:
    """One model revision to analyse.

    kind: "local" (source = folder, file or cache snapshot visible to the Ray workers) or "hub"
        (source = repo id; revision = commit sha, or None to resolve "main" first).
    facts: what the listing knows (downloads, likes, library, pipeline_tag, base_model, parameter_count).
    """

    repo_id: str
    revision: str | None
    kind: str
    source: str
    facts: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        return f"{self.repo_id}@{(self.revision or 'main')[:12]}"


@dataclass
class ScanRuntime:
    """Per-scan state shared by the model tasks of one flow run (they run as threads of the flow process)."""

    scan_id: str
    data_root: str
    options: AnalysisOptions
    slots: int
    endpoint: str | None = None
    retries: int = 3
    retry_delay_s: float = 2.0
    model_timeout_s: float = 6 * 3600.0
    chunk_bytes: int = 512 * 2**20
    max_task_memory: int | None = None
    total: int = 0
    progress: bool = False
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    failed: int = 0
    skipped: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    limiter: threading.BoundedSemaphore | None = None
    failures: list[dict] = field(default_factory=list)
    failure_recorded: set = field(default_factory=set)
    results: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.limiter = threading.BoundedSemaphore(max(1, self.slots))

    @property
    def fingerprint(self) -> str:
        return self.options.fingerprint()

    def store(self):
        from catalogs.store import ResultStore

        return ResultStore(self.data_root)

    def log(self, status: str, item: WorkItem, detail: str = "") -> None:
        with self.lock:
            if status == "done":
                self.done += 1
            elif status == "failed":
                self.failed += 1
            elif status == "skipped":
                self.skipped += 1
            if not self.progress:
                return
            elapsed = max(time.monotonic() - self.started, 1e-9)
            finished = self.done + self.failed
            rate = 60.0 * self.done / elapsed
            line = (f"[scan {finished + self.skipped}/{self.total}] done {self.done} | failed {self.failed} | "
                    f"skipped {self.skipped} | {rate:.1f} models/min  {status:7s} {item.label} {detail}")
        print(line, file=sys.stderr, flush=True)


RUNTIMES: dict[str, ScanRuntime] = {}  # scan_id -> runtime; tasks get the id, not the object (no hashing)


# ------------------------------------------------------------------------------------------------ Ray side

_REMOTE = None
_REMOTE_LOCK = threading.Lock()


def _remote_analyze_chunk():
    """`analyze_chunk` as a Ray remote function (created once per process, at first use)."""
    global _REMOTE
    with _REMOTE_LOCK:
        if _REMOTE is None:
            import ray

            # max_retries: Ray re-runs a chunk whose worker process died (SIGKILL, OOM kill) by itself.
            _REMOTE = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(analyze_chunk)
        return _REMOTE


def _node_memory_cap() -> int | None:
    """Largest `memory` resource of any node: a request above it would never schedule."""
    import ray

    try:
        mems = [n.get("Resources", {}).get("memory", 0) for n in ray.nodes() if n.get("Alive")]
    except Exception:  # noqa: BLE001 - Ray Client may not expose nodes(); then no cap
        return None
    return int(max(mems)) if mems else None


def run_chunks(rt: ScanRuntime, chunks: list[Chunk], *, deadline: float) -> list[dict]:
    """Run chunks on Ray, at most `rt.slots` in flight over the whole scan; results in chunk order.

    Each Ray task declares memory= its chunk's peak (largest layer + base), capped at the biggest node.
    Raises TimeoutError (after cancelling what is in flight) when `deadline` (monotonic) passes.
    """
    import ray

    remote = _remote_analyze_chunk()
    results: list[dict | None] = [None] * len(chunks)
    pending: dict = {}
    nxt = 0

    def submit(i: int):
        mem = chunks[i].memory
        if rt.max_task_memory:
            mem = min(mem, rt.max_task_memory)
        ref = remote.options(memory=int(mem), name=f"ww-chunk:{chunks[i].source[-40:]}#{i}").remote(
            chunks[i], rt.options)
        pending[ref] = i

    try:
        while nxt < len(chunks) or pending:
            # Non-blocking while something is in flight (its completion must be collected); else wait.
            while nxt < len(chunks) and (rt.limiter.acquire(blocking=False) if pending
                                         else rt.limiter.acquire(timeout=1.0)):
                submit(nxt)
                nxt += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"model analysis exceeded its timeout ({rt.model_timeout_s:.0f} s)")
            if not pending:
                continue
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                i = pending.pop(ref)
                rt.limiter.release()
                results[i] = ray.get(ref)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
            rt.limiter.release()
    return [r for r in results if r is not None]


# ------------------------------------------------------------------------------------------------ one model


class _Headers:
    """The minimal checkpoint interface plan_layers needs (tensors()), over TensorInfos from remote headers."""

    def __init__(self, infos) -> None:
        self._infos = list(infos)

    def tensors(self):
        return list(self._infos)


def _facts(item: WorkItem, tensors, config: dict) -> dict:
    from collections import Counter

    dtypes = Counter()
    n_params = 0
    for info in tensors:
        count = 1
        for d in info.shape:
            count *= int(d)
        n_params += count
        dtypes[info.dtype] += count
    archs = config.get("architectures") or []
    facts = {
        "parameter_count": item.facts.get("parameter_count") or (n_params or None),
        "dtype": dtypes.most_common(1)[0][0] if dtypes else None,
        "architecture": archs[0] if archs and isinstance(archs, list) else None,
        "model_type": config.get("model_type"),
    }
    for key in ("library", "pipeline_tag", "downloads", "likes", "base_model"):
        facts[key] = item.facts.get(key)
    return facts


def _check_architecture(item: WorkItem, plans: list[LayerPlan]) -> None:
    if plans and not any(p.analysed for p in plans):
        reasons = sorted({p.skip_reason for p in plans})
        raise UnsupportedArchitectureError(
            f"{item.label}: none of its {len(plans)} tensors is an analysable layer (skip reasons: "
            f"{', '.join(reasons)}); ww-spectral analyses float 2-D (dense) and 4-D (conv2d) weights only")


def _analyze_local(item: WorkItem, rt: ScanRuntime, deadline: float):
    from ww_spectral.analysis import plan_layers
    from ww_spectral.checkpoint import open_checkpoint

    with stage("read"), open_checkpoint(item.source) as ckpt:
        ref = ckpt.ref
        tensors = ckpt.tensors()
        plans = plan_layers(ckpt, rt.options)
        _check_architecture(item, plans)
        # What the workers open: the one file, or the folder holding all the files (for a cached repo that is
        # the snapshot listed now, not whatever refs/main points to when a chunk runs).
        parents = {os.path.dirname(f) for f in ref.files}
        source = ref.files[0] if len(ref.files) == 1 else (parents.pop() if len(parents) == 1 else item.source)
    # A pickle (torch) checkpoint is loaded whole by each chunk: keep it to one chunk.
    chunk_bytes = rt.chunk_bytes if ref.kind == "safetensors" else 2**62
    chunks = plan_chunks(source, plans, chunk_bytes=chunk_bytes, min_chunks=rt.slots if ref.kind == "safetensors"
                         else 1)
    with stage("analyze"):
        outs = run_chunks(rt, chunks, deadline=deadline)
    rows = [r for out in outs for r in out["rows"]]
    return ref.revision, rows, _facts(item, tensors, ref.config), "folder", _chunk_stats(outs, chunks)


def _analyze_hub(item: WorkItem, rt: ScanRuntime, deadline: float):
    """Hub model: plan from remote headers (Range reads), then download shard by shard; each shard is deleted
    once its chunks are analysed, so disk use is bounded by one shard."""
    from ww_spectral import hub
    from ww_spectral.analysis import plan_layers

    revision = item.revision
    if revision is None:
        with stage("list"):
            revision = hub.model_info(item.repo_id, endpoint=rt.endpoint).sha
    plans_by_file: dict[str, list[LayerPlan]] | None = None
    tensors = []
    with stage("read"):
        try:
            tensors = hub.remote_tensor_infos(item.repo_id, revision, endpoint=rt.endpoint)
        except NoWeightsError:
            # No safetensors headers to range-read (.bin repo) or no weights at all: plan per downloaded
            # shard below (iter_weight_shards raises NoWeightsError again when there are no weights).
            tensors = []
        if tensors:
            plans = plan_layers(_Headers(tensors), rt.options)
            _check_architecture(item, plans)
            plans_by_file = {}
            for plan, info in zip(plans, tensors):
                plans_by_file.setdefault(info.file, []).append(plan)
    rows: list[dict] = []
    all_outs: list[dict] = []
    all_chunks: list[Chunk] = []
    config: dict = {}
    dest = tempfile.mkdtemp(prefix="ww-shards-")
    offset = 0
    try:
        with stage("download"):
            shards = hub.iter_weight_shards(item.repo_id, revision, endpoint=rt.endpoint, dest=dest)
            shard = next(shards, None)
        while shard is not None:
            config = shard.config or config
            if plans_by_file is not None:
                plans = plans_by_file.get(shard.filename, [])
            else:
                from ww_spectral.checkpoint import open_checkpoint

                with stage("read"), open_checkpoint(shard.path) as ckpt:
                    local = plan_layers(ckpt, rt.options)
                    tensors.extend(ckpt.tensors())
                # layer ids continue across shards (plan_layers numbers each file from 0)
                import dataclasses

                plans = [dataclasses.replace(p, layer_id=p.layer_id + offset) for p in local]
                offset += len(local)
            if plans:
                is_st = shard.path.endswith(".safetensors")
                chunks = plan_chunks(shard.path, plans, chunk_bytes=rt.chunk_bytes if is_st else 2**62,
                                     min_chunks=rt.slots if is_st else 1,
                                     fetch=(item.repo_id, revision, shard.filename, rt.endpoint))
                with stage("analyze"):
                    outs = run_chunks(rt, chunks, deadline=deadline)
                rows.extend(r for out in outs for r in out["rows"])
                all_outs += outs
                all_chunks += chunks
            with stage("download"):
                shard = next(shards, None)  # the generator deletes the previous shard here
        if plans_by_file is None:
            with stage("read"):
                _check_architecture(item, [_plan_of_row(r) for r in rows])
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    return revision, rows, _facts(item, tensors, config), "hub", _chunk_stats(all_outs, all_chunks)


def _chunk_stats(outs: list[dict], chunks: list[Chunk]) -> dict:
    """How the model was spread: chunks, distinct worker processes, largest declared memory, Ray seconds."""
    return {"chunks": len(chunks), "worker_pids": sorted({o["pid"] for o in outs}),
            "max_chunk_memory": max((c.memory for c in chunks), default=0),
            "ray_seconds": sum(o["seconds"] for o in outs),
            "prefect_in_workers": any(o.get("prefect_loaded") for o in outs)}


def _plan_of_row(row: dict):
    class _P:  # only .analysed / .skip_reason are read by _check_architecture
        analysed = row.get("status") != "skipped"
        skip_reason = row.get("skip_reason") or "skipped"

    return _P()


def process_model(item: WorkItem, rt: ScanRuntime) -> dict:
    """Analyse one model revision and write it; returns {"repo_id", "revision", "status", "seconds", ...}."""
    from catalogs.schema import Provenance
    from ww_spectral.analysis import rows_to_frame, summarize

    t0 = time.perf_counter()
    deadline = time.monotonic() + rt.model_timeout_s
    if item.kind == "hub":
        revision, rows, facts, source_kind, stats = _analyze_hub(item, rt, deadline)
    else:
        revision, rows, facts, source_kind, stats = _analyze_local(item, rt, deadline)
    # Local sources: the revision of the bytes actually analysed (a folder edited since listing is stored as
    # its new revision); hub sources: the listed commit.
    revision = revision if item.kind == "local" else (item.revision or revision)
    seconds = time.perf_counter() - t0
    with stage("write"):
        layers = rows_to_frame(rows)
        summary = summarize(layers)
        import dataclasses
        import json

        model = {**summary, **facts, "source_kind": source_kind, "analysis_seconds": seconds,
                 "options_json": json.dumps(dataclasses.asdict(rt.options), sort_keys=True)}
        wrote = rt.store().write_model(
            model=model, layers=layers,
            provenance=Provenance(repo_id=item.repo_id, revision=revision, options_hash=rt.fingerprint))
    return {"repo_id": item.repo_id, "revision": revision, "status": "done" if wrote else "skipped",
            "seconds": seconds, "n_layers": int((layers["status"] == "success").sum()),
            "finished_monotonic": time.monotonic(), **stats}


def record_failure(rt: ScanRuntime, item: WorkItem, exc: BaseException, attempt: int) -> dict:
    """Write the failures row of a model that failed for good (once per model per scan)."""
    key = (item.repo_id, item.revision)
    cause = root_cause(exc)
    stage_name = exc.stage if isinstance(exc, StageFailure) else "analyze"
    row = {"repo_id": item.repo_id, "revision": item.revision or "unknown", "stage": stage_name,
           "error_type": type(cause).__name__, "message": str(cause)[:2000], "attempt": int(attempt)}
    with rt.lock:
        if key in rt.failure_recorded:
            return row
        rt.failure_recorded.add(key)
        rt.failures.append(row)
    from catalogs.schema import Provenance

    rt.store().write_failure(
        repo_id=item.repo_id, revision=item.revision, stage=stage_name, error_type=row["error_type"],
        message=row["message"], attempt=attempt,
        provenance=Provenance(repo_id=item.repo_id, revision=item.revision or "unknown",
                              options_hash=rt.fingerprint))
    return row


@task(name="analyze-model", cache_policy=NO_CACHE, persist_result=False, retry_condition_fn=retry_if_transient,
      log_prints=False)
def analyze_model_task(item: WorkItem, scan_id: str) -> dict:
    """Prefect task: one model revision end to end. Retries (set by the flow) apply to transient faults only;
    on the final failure the `failures` row is written here and the exception re-raised (the flow counts it)."""
    from prefect.runtime import task_run

    rt = RUNTIMES[scan_id]
    attempt = int(task_run.run_count or 1)
    try:
        result = process_model(item, rt)
    except Exception as exc:
        final = (not is_transient(exc)) or attempt > rt.retries
        if final:
            row = record_failure(rt, item, exc, attempt)
            rt.log("failed", item, f"[{row['stage']}] {row['error_type']}: {row['message'][:160]}")
        elif rt.progress:
            print(f"[scan] retrying {item.label} (attempt {attempt} of {rt.retries + 1}): "
                  f"{type(root_cause(exc)).__name__}: {str(root_cause(exc))[:160]}", file=sys.stderr, flush=True)
        raise
    rt.log("done" if result["status"] == "done" else "skipped", item, f"{result['seconds']:.1f} s")
    with rt.lock:
        rt.results.append(result)
    return result


def default_retry_settings() -> tuple[int, float]:
    """(retries, base delay s) from WW_SCAN_RETRIES / WW_SCAN_RETRY_DELAY_S (defaults 3 and 2 s)."""
    return int(os.environ.get("WW_SCAN_RETRIES", "3")), float(os.environ.get("WW_SCAN_RETRY_DELAY_S", "2"))
