"""One model revision, end to end: plan -> chunks on Ray -> assemble -> write. One Prefect task per model.

Where things run:
- The model task runs in the flow process (a ThreadPoolTaskRunner sized to the Ray slots), so no Prefect
  code ever runs inside a Ray worker and Prefect's ephemeral mode starts no server there.
- The per-model rules are the library's (ww_spectral/model.py): `plan_model` plans every tensor from
  headers, gathers the model's facts and refuses a model with no analysable layer (NoAnalysableLayerError,
  permanent); `assemble_model` turns the rows into the model's table, summary and record. This module
  only decides where each step runs: planning in the flow process under the model's deadline
  (pipelines/deadline.py), the layers in contiguous chunks on Ray (pipelines/dispatch.py, each chunk runs
  `ww_spectral.analysis.analyze_layers` in pipelines/work.py), then the write through the store.
- Hub models: planned from remote headers (HTTP Range reads) before anything is downloaded, then fetched
  shard by shard; each shard is deleted once its chunks are analysed (disk bounded by one shard). A repo
  without safetensors headers (.bin) is planned per downloaded shard and assembled once at the end.

Faults: see pipelines/faults.py. A model that fails for good becomes one `failures` row, whatever the
exception class; the scan goes on.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator

from catalogs.schema import Provenance
from ww_spectral import hub, hub_source
from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.errors import NoWeightsError
from ww_spectral.layers import plan_layer
from ww_spectral.model import ModelPlan, TensorListing, assemble_model, plan_model
from ww_spectral.records import AnalysisOptions, CheckpointRef, LayerPlan

from .deadline import Deadline
from .faults import is_transient, retry_if_transient, retry_options, stage
from .listing import WorkItem
from .scan_state import ScanState
from .work import Chunk, RemoteFile, plan_chunks

# A pickle (torch) checkpoint is loaded whole by each chunk: one chunk, however big.
WHOLE_FILE = 2**62


class Analysed:
    """Rows of one model gathered over its chunks, and how it was spread (chunks, workers, memory)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.outs: list[dict] = []
        self.chunks: list[Chunk] = []

    def run(self, state: ScanState, chunks: list[Chunk], deadline: Deadline) -> None:
        with stage("analyze"):
            outs = state.chunks.run(chunks, deadline=deadline)
        self.rows.extend(r for out in outs for r in out["rows"])
        self.outs.extend(outs)
        self.chunks.extend(chunks)

    def stats(self) -> dict:
        return {"chunks": len(self.chunks), "worker_pids": sorted({o["pid"] for o in self.outs}),
                "max_chunk_memory": max((c.memory for c in self.chunks), default=0),
                "ray_seconds": sum(o["seconds"] for o in self.outs),
                "prefect_in_workers": any(o.get("prefect_loaded") for o in self.outs)}


def _chunks(state: ScanState, source: str, plans, *, kind: str, fetch=None) -> list[Chunk]:
    """Contiguous chunks of `plans`; safetensors spread over every slot, a pickle file stays one chunk."""
    split = kind == "safetensors"
    return plan_chunks(source, list(plans), chunk_bytes=state.settings.chunk_bytes if split else WHOLE_FILE,
                       min_chunks=state.chunks.slots if split else 1, fetch=fetch)


# ------------------------------------------------------------------------------------------------ local


def _worker_source(ref: CheckpointRef, listed: str) -> str:
    """What the Ray workers open: the one file, or the folder holding all the files (for a cached repo
    that is the snapshot planned now, not whatever refs/main points to when a chunk runs)."""
    parents = {os.path.dirname(f) for f in ref.files}
    return ref.files[0] if len(ref.files) == 1 else (parents.pop() if len(parents) == 1 else listed)


def _plan_local(item: WorkItem, state: ScanState) -> tuple[ModelPlan, str]:
    with open_checkpoint(item.source) as ckpt:
        plan = plan_model(ckpt, state.settings.options)
    return plan, _worker_source(plan.ref, item.source)


def _analyse_local(item: WorkItem, state: ScanState, deadline: Deadline) -> tuple[ModelPlan, Analysed]:
    with stage("read"):
        plan, source = deadline.call(lambda: _plan_local(item, state), what=f"planning {item.label}")
    done = Analysed()
    done.run(state, _chunks(state, source, plan.layers, kind=plan.ref.kind), deadline)
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
    """A repo without safetensors headers (.bin): each shard planned once downloaded, layer ids continuing
    across shards; the model-level rules (facts, "any analysable layer") apply once all are seen."""

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
        ref = CheckpointRef(repo_id=self.item.repo_id, revision=self.revision, files=tuple(self.files),
                            kind="torch", config=self.config)
        with stage("read"):
            return plan_model(TensorListing(ref, self.infos), self.options)


def _tensors_of(path: str) -> list:
    with open_checkpoint(path) as ckpt:
        return ckpt.tensors()


def _plan_from_headers(item: WorkItem, revision: str, state: ScanState) -> _HeaderPlan | None:
    """The plan from remote safetensors headers; None for a repo without safetensors weights."""
    try:
        ckpt = hub_source.open_remote_checkpoint(item.repo_id, revision, endpoint=state.settings.endpoint,
                                                 settings=state.settings.hub)
    except NoWeightsError:
        return None  # .bin repo, or no weights at all (iter_weight_shards says which)
    with ckpt:
        return _HeaderPlan(plan_model(ckpt, state.settings.options), [info.file for info in ckpt.tensors()])


def _shards(item: WorkItem, revision: str, state: ScanState, dest: str, deadline: Deadline) -> Iterator:
    """The repo's weight files one at a time (each deleted when the next is asked for), each download under
    the model's deadline."""
    shards = hub_source.iter_weight_shards(item.repo_id, revision, endpoint=state.settings.endpoint, dest=dest,
                                           settings=state.settings.hub)
    while True:
        with stage("download"):
            shard = deadline.call(lambda: next(shards, None), what=f"downloading {item.label}")
        if shard is None:
            return
        yield shard


def _analyse_hub(item: WorkItem, state: ScanState, deadline: Deadline) -> tuple[ModelPlan, Analysed]:
    endpoint = state.settings.endpoint
    revision = item.revision
    if revision is None:
        with stage("list"):
            revision = deadline.call(lambda: hub.model_info(item.repo_id, endpoint=endpoint,
                                                            settings=state.settings.hub).sha,
                                     what=f"model info of {item.label}")
    with stage("read"):
        planner = deadline.call(lambda: _plan_from_headers(item, revision, state), what=f"planning {item.label}")
    planner = planner or _ShardPlan(item, revision, state.settings.options)
    done = Analysed()
    dest = tempfile.mkdtemp(prefix="ww-shards-")
    try:
        for shard in _shards(item, revision, state, dest, deadline):
            plans = planner.shard_plans(shard, deadline)
            if plans:
                kind = "safetensors" if shard.path.endswith(".safetensors") else "torch"
                fetch = RemoteFile(item.repo_id, revision, shard.filename, endpoint, state.settings.hub)
                done.run(state, _chunks(state, shard.path, plans, kind=kind, fetch=fetch), deadline)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    return planner.model_plan(), done


# ------------------------------------------------------------------------------------------------ the unit


def process_model(item: WorkItem, state: ScanState) -> dict:
    """Analyse one model revision and write it; returns {"repo_id", "revision", "status", "seconds", ...}."""
    t0 = time.perf_counter()
    deadline = Deadline(state.settings.model_timeout_s)
    analyse = _analyse_hub if item.kind == "hub" else _analyse_local
    plan, done = analyse(item, state, deadline)
    seconds = time.perf_counter() - t0
    # Local sources: the revision of the bytes actually analysed (a folder edited since listing is stored
    # as its new revision); hub sources: the listed commit.
    revision = plan.ref.revision if item.kind == "local" else (item.revision or plan.ref.revision)
    with stage("write"):
        analysis = assemble_model(plan, done.rows, seconds=seconds)
        # Listing facts (hub: downloads, likes, ...) beside the analysis; a None from the listing keeps ours.
        record = analysis.model_record(source_kind="hub" if item.kind == "hub" else "folder", **item.facts)
        wrote = state.store.write_model(
            model=record, layers=analysis.layers,
            provenance=Provenance(repo_id=item.repo_id, revision=revision, options_hash=state.settings.fingerprint))
    return {"repo_id": item.repo_id, "revision": revision, "status": "done" if wrote else "skipped",
            "seconds": seconds, "n_layers": int((analysis.layers["status"] == "success").sum()),
            "finished_monotonic": time.monotonic(), **done.stats()}


def run_model(item: WorkItem, state: ScanState) -> dict:
    """The model task's body. Retries (set by `model_task`) apply to transient faults only; on the final
    failure the `failures` row is written here, for any exception class, and the exception re-raised."""
    from prefect.runtime import task_run

    attempt = int(task_run.run_count or 1)
    try:
        result = process_model(item, state)
    except Exception as exc:
        if is_transient(exc) and attempt <= state.settings.retries:
            state.retrying(item, exc, attempt)
        else:
            state.fail(item, exc, attempt)
        raise
    state.finished(item, result)
    return result


def model_task(state: ScanState):
    """The Prefect task "analyze-model" with this scan's retry policy (transient faults only, jittered
    exponential back-off). NO_CACHE: its parameters (the ScanState) are never hashed or serialised."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    return task(name="analyze-model", cache_policy=NO_CACHE, persist_result=False, log_prints=False,
                retry_condition_fn=retry_if_transient,
                **retry_options(state.settings.retries, state.settings.retry_delay_s))(run_model)
