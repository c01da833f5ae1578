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

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator

from catalogs.schema import Provenance
from catalogs.store import ResultStore
from ww_spectral import adapters, deltas, hub, hub_source
from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.errors import NoWeightsError
from ww_spectral.layout import CONFIG, check_member_name, file_kind
from ww_spectral.model import ModelPlan, TensorListing, assemble_model, plan_infos, plan_model
from ww_spectral.records import AnalysisOptions, CheckpointRef, LayerPlan

from . import bases, duplicates
from .bases import BaseRef
from .deadline import Deadline
from .faults import is_transient, root_cause, stage
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

    def __init__(self, plan: ModelPlan, files: dict[str, str]) -> None:
        self.plan = plan
        self._files = files  # tensor name -> the file holding it (plans are in depth order, not file order)

    def shard_plans(self, shard, deadline: Deadline) -> list[LayerPlan]:
        return [p for p in self.plan.layers if self._files.get(p.tensor_name) == shard.filename]

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
        # The library's whole planning (plan steps: experts, quantised parts, adapter pairs) on this shard;
        # assemble_model matches rows to the model's plan by tensor identity, so shard-local ids are fine.
        plans = plan_infos(infos, self.options, config=shard.config or self.config)
        self.infos.extend(infos)
        self.files.append(shard.filename)
        self.config = shard.config or self.config
        return plans

    def model_plan(self) -> ModelPlan:
        kinds = {file_kind(f) for f in self.files}
        kind = kinds.pop() if len(kinds) == 1 else "torch"
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
        return _HeaderPlan(plan_model(ckpt, settings.options), {info.name: info.file for info in ckpt.tensors()})


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

    revision: the commit; shards: hub_source.Shard's with `path` in `folder` (kept until `close`), or in the
    node's base cache for a base model (pipelines/bases.py; kept there); seconds, bytes: the download's;
    error: the download's fault (raised when the model is analysed); duplicate: the weight bytes' Claim, or
    the Link to the revision that has them (then nothing was downloaded), or None (pipelines/duplicates.py).
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.revision: str | None = None
        self.shards: list = []
        self.seconds = 0.0
        self.bytes = 0
        self.error: BaseException | None = None
        self.duplicate: duplicates.Claim | duplicates.Link | None = None
        self.model_dir: str | None = None  # the files under their repo names (+ config.json, adapter_config.json)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def fetch_hub(item: WorkItem, settings: ScanSettings, *, store: ResultStore | None = None,
              from_cache: bool = False) -> Fetched:
    """Download every weight file of a (small) hub model now, under its own deadline; never raises (the fault
    is kept in `error`). Each shard is hard-linked aside before iter_weight_shards deletes it.

    store: where the scan writes, when this process reaches it: the revision's weight bytes are checked for a
    duplicate first (pipelines/duplicates.py), and a duplicate is not downloaded (process_model looks at its
    holder again and downloads it then if the holder has no rows). from_cache: the model is the
    base of fine-tunes analysed after it here: its files come from (and stay in) the node's base cache."""
    fetched = Fetched(tempfile.mkdtemp(prefix="ww-fetch-"))
    clock = Clock()
    deadline = Deadline(settings.model_timeout_s)
    t0 = time.perf_counter()
    try:
        fetched.revision = item.revision or _revision(item, settings, deadline)
        if store is not None:
            fetched.duplicate = deadline.call(lambda: duplicates.check(item, fetched.revision, settings, store),
                                              what=f"model info of {item.label}")
            if isinstance(fetched.duplicate, duplicates.Link):
                return fetched
        if from_cache:
            with stage("download"):
                fetched.shards = deadline.call(lambda: bases.base_shards(item, fetched.revision, settings.endpoint,
                                                                         settings.hub),
                                               what=f"downloading {item.label}")
            fetched.model_dir = os.path.dirname(fetched.shards[0].path) if fetched.shards else None
            return fetched
        dest = os.path.join(fetched.folder, "dl")
        # Laid out as a hub-cache snapshot (models--org--name/snapshots/<commit>): the folder opens as that repo
        # revision, with no content hash of its weights to compute (ww_spectral/sources.py folder_ref).
        model_dir = os.path.join(fetched.folder, "models--" + item.repo_id.replace("/", "--"), "snapshots",
                                 fetched.revision)
        config: dict = {}
        for shard in _shards(item, fetched.revision, settings, dest, deadline, clock):
            # the repo's own names (the folder opens as the repo); a hub's name is untrusted: checked again here
            kept = os.path.join(model_dir, check_member_name(shard.filename, where=item.label))
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            os.link(shard.path, kept)
            fetched.shards.append(dataclasses.replace(shard, path=kept))
            config = shard.config or config
        _configs(model_dir, config)
        fetched.model_dir = model_dir
    except Exception as exc:  # noqa: BLE001 - handed over with the model, raised where it is analysed
        fetched.error = exc
    finally:
        fetched.seconds = time.perf_counter() - t0
        fetched.bytes = clock.bytes
    return fetched


def _configs(model_dir: str, config: dict) -> None:
    """The configs beside a downloaded model's weights, as the folder rule reads them back
    (ww_spectral/sources.py): config.json as read, and a PEFT adapter's adapter_config.json, which
    hub_source.iter_weight_shards already fetched into the shard's config (adapters.with_adapter_config)."""
    adapter = config.get(adapters.ADAPTER_CONFIG_KEY)
    own = {k: v for k, v in config.items() if k != adapters.ADAPTER_CONFIG_KEY}
    for name, content in ((CONFIG, own), (adapters.ADAPTER_CONFIG_FILE, adapter)):
        if content:
            with open(os.path.join(model_dir, name), "w") as fh:
                json.dump(content, fh)


def _revision(item: WorkItem, settings: ScanSettings, deadline: Deadline) -> str:
    with stage("list"):
        return deadline.call(lambda: hub.model_info(item.repo_id, endpoint=settings.endpoint, settings=settings.hub).sha,
                             what=f"model info of {item.label}")


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _analyse_hub(item: WorkItem, revision: str, settings: ScanSettings, layers: Layers, deadline: Deadline,
                 clock: Clock, *, headers_first: bool, fetched: Fetched | None = None,
                 base: _Base | None = None) -> tuple[ModelPlan, Analysed]:
    if fetched is not None and fetched.model_dir is not None:
        return _analyse_folder(item, revision, fetched.model_dir, settings, layers, deadline, clock, base=base)
    endpoint = settings.endpoint
    t0 = time.perf_counter()
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
                kind = file_kind(shard.path)
                fetch = RemoteFile(item.repo_id, revision, shard.filename, endpoint, settings.hub)
                _run_layers(layers, done, clock, shard.path, plans, kind=kind, fetch=fetch, deadline=deadline)
                if base is not None and base.ref is not None:
                    t0 = time.perf_counter()
                    extra = base.shard_deltas(item, revision, shard, plans, settings.options)
                    clock.add("plan", t0)
                    if extra:
                        fetch = dataclasses.replace(fetch, base=base.ref)
                        _run_layers(layers, done, clock, shard.path, extra, kind=kind, fetch=fetch, deadline=deadline)
        t0 = time.perf_counter()
        plan = planner.model_plan()
        if base is not None:
            plan = base.with_deltas(plan)
        clock.add("plan", t0)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    return plan, done


def _analyse_folder(item: WorkItem, revision: str, folder: str, settings: ScanSettings, layers: Layers,
                    deadline: Deadline, clock: Clock, *, base: _Base | None) -> tuple[ModelPlan, Analysed]:
    """A hub model downloaded whole (`fetch_hub`), analysed as the folder of its files: the library's own
    planning (ww_spectral/model.py plan_model; with a base, ww_spectral/deltas.py plan_with_base: its own plans
    then its delta plans), one layer run over the folder (paired with the base's node-cache folder)."""
    t0 = time.perf_counter()
    options = settings.options
    with stage("read"):
        plan = deadline.call(lambda: _folder_plan(folder, options, base), what=f"planning {item.label}")
    # Stored under the hub's names: the repo and commit, its files as the repo names them.
    names = tuple(os.path.relpath(f, folder) for f in plan.ref.files)
    plan = dataclasses.replace(plan, ref=dataclasses.replace(plan.ref, repo_id=item.repo_id, revision=revision,
                                                             files=names))
    clock.add("plan", t0)
    done = Analysed()
    with_base = base is not None and base.ref is not None and bool(base.plans)
    fetch = RemoteFile(item.repo_id, revision, "", settings.endpoint, settings.hub,
                       base=base.ref if with_base else None)
    _run_layers(layers, done, clock, folder, list(plan.layers), kind=plan.ref.kind, fetch=fetch, deadline=deadline)
    return plan, done


def _folder_plan(folder: str, options: AnalysisOptions, base: _Base | None) -> ModelPlan:
    if base is None or base.ref is None:
        with open_checkpoint(folder) as ckpt:
            return plan_model(ckpt, options)
    try:
        with deltas.open_with_base(folder, base.folder) as pair:
            plan = deltas.plan_with_base(pair, options)
    except deltas.BaseModelError as exc:
        base.error = str(exc)[:500]
        with open_checkpoint(folder) as ckpt:
            return plan_model(ckpt, options)
    base.plans = [p for p in plan.layers if p.delta_kind in deltas.BASE_KINDS]
    return plan


class _Base:
    """A fine-tune's base model in one model's analysis: its BaseRef and tensor headers (from the node cache,
    pipelines/bases.py), the delta plans added shard by shard, and why there are none (`error`)."""

    def __init__(self, ref: BaseRef | None, error: str = "") -> None:
        self.ref = ref
        self.error = error
        self.folder = ""  # the base's snapshot folder in this node's cache
        self.plans: list[LayerPlan] = []
        self._infos: list | None = None
        self._label: CheckpointRef | None = None

    @classmethod
    def resolve(cls, item: WorkItem, resolver: bases.Resolver, deadline: Deadline) -> _Base | None:
        """The item's base, read into this node's cache; None for a model without a base. A base that cannot
        be had for good (not found, gated, no weights) is a _Base without ref: the model's own rows are stored,
        with `delta_error` saying why there are no deltas; a transient fault is the model's (retried)."""
        name = bases.base_of(item)
        if name is None:
            return None
        try:
            with stage("download"):
                ref = deadline.call(lambda: resolver.ref(name), what=f"model info of base {name}")
                local = deadline.call(lambda: bases.node_ref(ref), what=f"downloading base {name}")
        except Exception as exc:  # noqa: BLE001 - a permanent fault of the base: no deltas, said in the record
            if is_transient(exc):
                raise
            return cls(None, f"{type(root_cause(exc)).__name__}: {root_cause(exc)}"[:500])
        base = cls(ref)
        base.folder = os.path.dirname(local.files[0])
        with stage("read"):
            base._infos = _tensors_of(base.folder)
        base._label = CheckpointRef(repo_id=ref.repo_id, revision=ref.revision, files=local.files, kind=local.kind,
                                    config=local.config)
        return base

    def shard_deltas(self, item: WorkItem, revision: str, shard, plans: list[LayerPlan],
                     options: AnalysisOptions) -> list[LayerPlan]:
        """The delta plans of one shard's own plans (ww_spectral/deltas.py add_base_deltas); none when the
        shard shares no tensor with the base (its reason kept for `delta_error`)."""
        kind = file_kind(shard.path)
        ref = CheckpointRef(repo_id=item.repo_id, revision=revision, files=(shard.path,), kind=kind,
                            config=shard.config or {})
        own = ModelPlan(ref=ref, options=options, layers=tuple(plans), facts=None)
        with stage("read"):
            try:
                both = deltas.add_base_deltas(own, infos=_tensors_of(shard.path), base_infos=self._infos,
                                              base_ref=self._label)
            except deltas.BaseModelError as exc:
                self.error = str(exc)[:500]
                return []
        extra = list(both.layers[len(plans):])
        self.plans.extend(extra)
        return extra

    def with_deltas(self, plan: ModelPlan) -> ModelPlan:
        """The model's plan with every delta plan after its own (layer ids continue; rows take them when the
        model is assembled)."""
        first = len(plan.layers)
        extra = tuple(dataclasses.replace(p, layer_id=first + i) for i, p in enumerate(self.plans))
        return dataclasses.replace(plan, layers=plan.layers + extra)

    def facts(self, layers) -> dict:
        """What the model's record says about its deltas: delta_* summary keys (deltas.delta_summary), or
        delta_error when it has none."""
        if self.plans and any(p.analysed for p in self.plans):
            return deltas.delta_summary(layers)
        return {"delta_error": self.error or "no tensor shared with the base"}


# ------------------------------------------------------------------------------------------------ the unit


def process_model(item: WorkItem, settings: ScanSettings, store: ResultStore, layers: Layers, *,
                  headers_first: bool, write: bool = True, fetched: Fetched | None = None,
                  resolver: bases.Resolver | None = None) -> dict:
    """Analyse one model revision and (when `write`) store it.

    fetched: a hub model's files downloaded ahead (`fetch_hub`); deleted here once analysed.
    Hub models, where the store is reachable (`write`): a revision whose weight bytes another revision holds
    is linked, not analysed (pipelines/duplicates.py; status "linked", "linked_to" = "repo@revision"). A model
    naming a base model (WorkItem.facts["base_model"]) also gets delta rows against the base, read from this
    node's base cache (pipelines/bases.py; resolver: base revisions known to the caller).

    Returns {"repo_id", "revision", "status" ("done" | "skipped": already stored | "linked"), "seconds", "n_layers",
    "stages" (seconds per CLOCK_STAGES), "bytes", chunks/worker stats}; with write=False also "record"
    and "layers" (the `models` row and the layers DataFrame) for the caller to store, status "analysed".
    Raises the model's fault tagged with its stage (pipelines/faults.py).
    """
    t0 = time.perf_counter()
    clock = Clock()
    deadline = Deadline(settings.model_timeout_s)
    duplicate = base = None
    if item.kind == "hub":
        try:
            if fetched is not None:
                clock.seconds["prefetch"] += fetched.seconds
                clock.bytes += fetched.bytes
                if fetched.error is not None:
                    raise fetched.error
            revision = fetched.revision if fetched is not None else (item.revision or _revision(item, settings, deadline))
            if fetched is not None:
                duplicate = fetched.duplicate
            elif write:
                duplicate = deadline.call(lambda: duplicates.check(item, revision, settings, store),
                                          what=f"model info of {item.label}")
            if isinstance(duplicate, duplicates.Link):
                if duplicate.is_stored(store):
                    return _linked(item, duplicate, store, write, clock, t0)
                duplicate = duplicate.own_claim()  # its holder has no rows (yet): analysed after all
                if fetched is not None and fetched.model_dir is None:  # the prefetch left it for now
                    fetched.close()
                    fetched = fetch_hub(item, settings)
                    clock.seconds["download"] += fetched.seconds
                    clock.bytes += fetched.bytes
                    if fetched.error is not None:
                        raise fetched.error
            base = _Base.resolve(item, resolver or bases.Resolver(settings.endpoint, settings.hub), deadline)
            plan, done = _analyse_hub(item, revision, settings, layers, deadline, clock, headers_first=headers_first,
                                      fetched=fetched, base=base)
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
        if base is not None:
            record.update(base.facts(analysis.layers))
        t1 = clock.add("assemble", t1)
        result = {"repo_id": item.repo_id, "revision": revision, "seconds": seconds,
                  "n_layers": int((analysis.layers["status"] == "success").sum()), **done.stats()}
        if write:
            wrote = store_model(store, settings, item, revision, record, analysis.layers)
            if isinstance(duplicate, duplicates.Claim):
                duplicate.stored(store, item.repo_id, revision)
            clock.add("write", t1)
            result["status"] = "done" if wrote else "skipped"
        else:
            result.update(status="analysed", record=record, layers=analysis.layers)
    result.update(stages=dict(clock.seconds), bytes=clock.bytes, finished_monotonic=time.monotonic())
    return result


def _linked(item: WorkItem, link: duplicates.Link, store: ResultStore, write: bool, clock: Clock, t0: float) -> dict:
    """The outcome of a revision whose weight bytes another revision holds: a link row, nothing analysed."""
    t1 = time.perf_counter()
    with stage("write"):
        link.write(store)
    clock.add("write", t1)
    return {"repo_id": item.repo_id, "revision": link.revision, "status": "linked", "seconds": time.perf_counter() - t0,
            "n_layers": 0, "linked_to": f"{link.linked_repo_id}@{link.linked_revision}", **Analysed().stats(),
            "stages": dict(clock.seconds), "bytes": clock.bytes, "finished_monotonic": time.monotonic()}


def store_model(store: ResultStore, settings: ScanSettings, item: WorkItem, revision: str, record: dict,
                layers) -> bool:
    """Write one analysed model revision; False when it was already stored (a no-op)."""
    return store.write_model(model=record, layers=layers,
                             provenance=Provenance(repo_id=item.repo_id, revision=revision,
                                                   options_hash=settings.fingerprint))
