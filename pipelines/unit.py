"""One model revision, end to end, wherever it runs: plan -> analyse its layers -> assemble -> write.

The per-model rules are the library's (ww_spectral/model.py: `plan_model`, `assemble_model`); this module
decides the order of the steps and times them, the same way for both places a model is analysed:

- a model task in the flow process (pipelines/tasks.py): its layers go out as chunks on Ray
  (`layers` = a ChunkRunner-backed runner), hub safetensors planned from remote headers first;
- a batch of small models inside one Ray task (pipelines/batch.py): everything in that worker process,
  hub weights downloaded shard by shard and planned from the downloaded headers.

`layers(source, plans, kind=, fetch=, deadline=)` is the only difference: it returns the outputs of
`pipelines.work.analyze_chunk` ({"rows", "seconds", "pid", ...}) for those plans. Neither prefect nor ray is
imported here.

Hub models: shards are fetched one at a time and each is deleted once its layers are analysed (disk
bounded by one shard). A repo without safetensors headers (.bin) is planned per downloaded shard and judged
as a whole once all shards are seen.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator

from catalogs.schema import Provenance
from catalogs.store import ResultStore
from ww_spectral import hub, hub_source
from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.errors import NoWeightsError
from ww_spectral.layers import plan_layer
from ww_spectral.model import ModelPlan, TensorListing, assemble_model, plan_model
from ww_spectral.records import AnalysisOptions, CheckpointRef, LayerPlan

from .deadline import Deadline
from .faults import stage
from .listing import WorkItem
from .settings import ScanSettings
from .work import RemoteFile

# What analyses a list of plans: (source, plans, *, kind, fetch, deadline) -> analyze_chunk outputs.
Layers = Callable[..., list[dict]]

# Stage names of the per-model clock (seconds summed per scan; pipelines/scan_state.py). "download" is time
# the model's own thread spent downloading or waiting for a download; "prefetch" is download time spent
# ahead, in a batch worker's background thread, while the model before was analysed (overlapped).
CLOCK_STAGES = ("download", "prefetch", "plan", "analyze", "assemble", "write")


class Clock:
    """Seconds spent per stage by one model attempt, and bytes downloaded (weights + config)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(CLOCK_STAGES, 0.0)
        self.bytes = 0

    def add(self, name: str, t0: float) -> float:
        now = time.perf_counter()
        self.seconds[name] += now - t0
        return now


class Analysed:
    """Rows of one model gathered over its layer runs, and how it was spread (runs, workers, memory)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.outs: list[dict] = []

    def add(self, outs: list[dict]) -> None:
        self.rows.extend(r for out in outs for r in out["rows"])
        self.outs.extend(outs)

    def stats(self) -> dict:
        return {"chunks": len(self.outs), "worker_pids": sorted({o["pid"] for o in self.outs}),
                "max_chunk_memory": max((o.get("memory", 0) for o in self.outs), default=0),
                "ray_seconds": sum(o["seconds"] for o in self.outs),
                "prefect_in_workers": any(o.get("prefect_loaded") for o in self.outs),
                "cuda_devices": sorted({o["cuda_devices"] for o in self.outs if o.get("cuda_devices") is not None})}


def _run_layers(layers: Layers, done: Analysed, clock: Clock, source: str, plans: list[LayerPlan], *,
                kind: str, fetch: RemoteFile | None, deadline: Deadline) -> None:
    t0 = time.perf_counter()
    with stage("analyze"):
        done.add(layers(source, plans, kind=kind, fetch=fetch, deadline=deadline))
    clock.add("analyze", t0)


# ------------------------------------------------------------------------------------------------ local


def worker_source(ref: CheckpointRef, listed: str) -> str:
    """What the layer runs open: the one file, or the folder holding all the files (for a cached repo
    that is the snapshot planned now, not whatever refs/main points to when a chunk runs)."""
    parents = {os.path.dirname(f) for f in ref.files}
    return ref.files[0] if len(ref.files) == 1 else (parents.pop() if len(parents) == 1 else listed)


def _plan_local(item: WorkItem, options: AnalysisOptions) -> tuple[ModelPlan, str]:
    with open_checkpoint(item.source) as ckpt:
        plan = plan_model(ckpt, options)
    return plan, worker_source(plan.ref, item.source)


def _analyse_local(item: WorkItem, settings: ScanSettings, layers: Layers, deadline: Deadline,
                   clock: Clock) -> tuple[ModelPlan, Analysed]:
    t0 = time.perf_counter()
    with stage("read"):
        plan, source = deadline.call(lambda: _plan_local(item, settings.options), what=f"planning {item.label}")
    clock.add("plan", t0)
    done = Analysed()
    _run_layers(layers, done, clock, source, list(plan.layers), kind=plan.ref.kind, fetch=None, deadline=deadline)
    return plan, done


# ------------------------------------------------------------------------------------------------ hub


class _HeaderPlan:
    """A safetensors repo, planned from its remote headers (HTTP Range reads) before any download."""

    def __init__(self, plan: ModelPlan, files: list[str]) -> None:
        self.plan = plan
        self._files = files  # the file holding each planned tensor (plan.layers order)

    def shard_plans(self, shard, deadline: Deadline) -> list[LayerPlan]:
        return [p for p, f in zip(self.plan.layers, self._files) if f == shard.filename]

    def model_plan(self) -> ModelPlan:
        return self.plan


class _ShardPlan:
    """A repo planned shard by shard once each is downloaded, layer ids continuing across shards; the
    model-level rules (facts, "any analysable layer") apply once all shards are seen. Used for repos without
    safetensors headers (.bin), and for small models analysed whole in one worker (no Range reads first)."""

    def __init__(self, item: WorkItem, revision: str, options: AnalysisOptions) -> None:
        self.item, self.revision, self.options = item, revision, options
        self.infos: list = []
        self.files: list[str] = []
        self.config: dict = {}

    def shard_plans(self, shard, deadline: Deadline) -> list[LayerPlan]:
        with stage("read"):
            infos = deadline.call(lambda: _tensors_of(shard.path), what=f"reading {self.item.label}")
        plans = [plan_layer(info, len(self.infos) + i, self.options) for i, info in enumerate(infos)]
        self.infos.extend(infos)
        self.files.append(shard.filename)
        self.config = shard.config or self.config
        return plans

    def model_plan(self) -> ModelPlan:
        kind = "safetensors" if self.files and all(f.endswith(".safetensors") for f in self.files) else "torch"
        ref = CheckpointRef(repo_id=self.item.repo_id, revision=self.revision, files=tuple(self.files),
                            kind=kind, config=self.config)
        with stage("read"):
            return plan_model(TensorListing(ref, self.infos), self.options)


def _tensors_of(path: str) -> list:
    with open_checkpoint(path) as ckpt:
        return ckpt.tensors()


def _plan_from_headers(item: WorkItem, revision: str, settings: ScanSettings) -> _HeaderPlan | None:
    """The plan from remote safetensors headers; None for a repo without safetensors weights."""
    try:
        ckpt = hub_source.open_remote_checkpoint(item.repo_id, revision, endpoint=settings.endpoint,
                                                 settings=settings.hub)
    except NoWeightsError:
        return None  # .bin repo, or no weights at all (iter_weight_shards says which)
    with ckpt:
        return _HeaderPlan(plan_model(ckpt, settings.options), [info.file for info in ckpt.tensors()])


def _shards(item: WorkItem, revision: str, settings: ScanSettings, dest: str, deadline: Deadline,
            clock: Clock) -> Iterator:
    """The repo's weight files one at a time (each deleted when the next is asked for), each download under
    the model's deadline."""
    shards = hub_source.iter_weight_shards(item.repo_id, revision, endpoint=settings.endpoint, dest=dest,
                                           settings=settings.hub)
    while True:
        t0 = time.perf_counter()
        with stage("download"):
            shard = deadline.call(lambda: next(shards, None), what=f"downloading {item.label}")
        clock.add("download", t0)
        if shard is None:
            return
        clock.bytes += _size(shard.path)
        yield shard


class Fetched:
    """A hub model's weight files downloaded ahead of its analysis (pipelines/batch.py prefetches them).

    revision: the commit; shards: hub_source.Shard's with `path` in `folder` (kept until `close`);
    seconds, bytes: the download's; error: the download's fault (raised when the model is analysed).
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.revision: str | None = None
        self.shards: list = []
        self.seconds = 0.0
        self.bytes = 0
        self.error: BaseException | None = None

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def fetch_hub(item: WorkItem, settings: ScanSettings) -> Fetched:
    """Download every weight file of a (small) hub model now, under its own deadline; never raises (the fault
    is kept in `error`). Each shard is hard-linked aside before iter_weight_shards deletes it."""
    import dataclasses

    fetched = Fetched(tempfile.mkdtemp(prefix="ww-fetch-"))
    clock = Clock()
    deadline = Deadline(settings.model_timeout_s)
    t0 = time.perf_counter()
    try:
        fetched.revision = item.revision or _revision(item, settings, deadline)
        dest = os.path.join(fetched.folder, "dl")
        for shard in _shards(item, fetched.revision, settings, dest, deadline, clock):
            kept = os.path.join(fetched.folder, f"{len(fetched.shards)}-{os.path.basename(shard.path)}")
            os.link(shard.path, kept)
            fetched.shards.append(dataclasses.replace(shard, path=kept))
    except Exception as exc:  # noqa: BLE001 - handed over with the model, raised where it is analysed
        fetched.error = exc
    fetched.seconds = time.perf_counter() - t0
    fetched.bytes = clock.bytes
    return fetched


def _revision(item: WorkItem, settings: ScanSettings, deadline: Deadline) -> str:
    with stage("list"):
        return deadline.call(lambda: hub.model_info(item.repo_id, endpoint=settings.endpoint, settings=settings.hub).sha,
                             what=f"model info of {item.label}")


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _analyse_hub(item: WorkItem, settings: ScanSettings, layers: Layers, deadline: Deadline, clock: Clock, *,
                 headers_first: bool, fetched: Fetched | None = None) -> tuple[ModelPlan, Analysed]:
    endpoint = settings.endpoint
    if fetched is not None:
        clock.seconds["prefetch"] += fetched.seconds
        clock.bytes += fetched.bytes
        if fetched.error is not None:
            raise fetched.error
    t0 = time.perf_counter()
    revision = fetched.revision if fetched is not None else (item.revision or _revision(item, settings, deadline))
    planner = None
    if headers_first:
        with stage("read"):
            planner = deadline.call(lambda: _plan_from_headers(item, revision, settings), what=f"planning {item.label}")
    planner = planner or _ShardPlan(item, revision, settings.options)
    clock.add("plan", t0)
    done = Analysed()
    dest = tempfile.mkdtemp(prefix="ww-shards-")
    shards = fetched.shards if fetched is not None else _shards(item, revision, settings, dest, deadline, clock)
    try:
        for shard in shards:
            t0 = time.perf_counter()
            plans = planner.shard_plans(shard, deadline)
            clock.add("plan", t0)
            if plans:
                kind = "safetensors" if shard.path.endswith(".safetensors") else "torch"
                fetch = RemoteFile(item.repo_id, revision, shard.filename, endpoint, settings.hub)
                _run_layers(layers, done, clock, shard.path, plans, kind=kind, fetch=fetch, deadline=deadline)
        t0 = time.perf_counter()
        plan = planner.model_plan()
        clock.add("plan", t0)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    return plan, done


# ------------------------------------------------------------------------------------------------ the unit


def process_model(item: WorkItem, settings: ScanSettings, store: ResultStore, layers: Layers, *,
                  headers_first: bool, write: bool = True, fetched: Fetched | None = None) -> dict:
    """Analyse one model revision and (when `write`) store it.

    fetched: a hub model's files downloaded ahead (`fetch_hub`); deleted here once analysed.

    Returns {"repo_id", "revision", "status" ("done" | "skipped": already stored), "seconds", "n_layers",
    "stages" (seconds per CLOCK_STAGES), "bytes", chunks/worker stats}; with write=False also "record"
    and "layers" (the `models` row and the layers DataFrame) for the caller to store, status "analysed".
    Raises the model's fault tagged with its stage (pipelines/faults.py).
    """
    t0 = time.perf_counter()
    clock = Clock()
    deadline = Deadline(settings.model_timeout_s)
    if item.kind == "hub":
        try:
            plan, done = _analyse_hub(item, settings, layers, deadline, clock, headers_first=headers_first,
                                      fetched=fetched)
        finally:
            if fetched is not None:
                fetched.close()
    else:
        plan, done = _analyse_local(item, settings, layers, deadline, clock)
    seconds = time.perf_counter() - t0
    # Local sources: the revision of the bytes actually analysed (a folder edited since listing is stored
    # as its new revision); hub sources: the listed commit.
    revision = plan.ref.revision if item.kind == "local" else (item.revision or plan.ref.revision)
    with stage("write"):
        t1 = time.perf_counter()
        analysis = assemble_model(plan, done.rows, seconds=seconds)
        # Listing facts (hub: downloads, likes, ...) beside the analysis; a None from the listing keeps ours.
        record = analysis.model_record(source_kind="hub" if item.kind == "hub" else "folder", **item.facts)
        t1 = clock.add("assemble", t1)
        result = {"repo_id": item.repo_id, "revision": revision, "seconds": seconds,
                  "n_layers": int((analysis.layers["status"] == "success").sum()), **done.stats()}
        if write:
            wrote = store_model(store, settings, item, revision, record, analysis.layers)
            clock.add("write", t1)
            result["status"] = "done" if wrote else "skipped"
        else:
            result.update(status="analysed", record=record, layers=analysis.layers)
    result.update(stages=dict(clock.seconds), bytes=clock.bytes, finished_monotonic=time.monotonic())
    return result


def store_model(store: ResultStore, settings: ScanSettings, item: WorkItem, revision: str, record: dict,
                layers) -> bool:
    """Write one analysed model revision; False when it was already stored (a no-op)."""
    return store.write_model(model=record, layers=layers,
                             provenance=Provenance(repo_id=item.repo_id, revision=revision,
                                                   options_hash=settings.fingerprint))
