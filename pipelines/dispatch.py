"""Work on Ray: chunks of one model's layers, and batches of small models; at most `slots` Ray tasks in
flight over the whole scan, whichever kind.

One `ChunkRunner` per scan, created once Ray is up (pipelines/ray_runtime.py), shared by the model and
batch tasks (threads of the flow process). The Ray side of a chunk is `pipelines.work.analyze_chunk`, that
of a batch `pipelines.batch.run_batch` (through `batch_entry` below, a streaming generator task).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from ww_spectral.progress import safe_text
from ww_spectral.records import AnalysisOptions, LayerPlan

from .batch import BatchSpec, batch_memory, run_batch
from .deadline import Deadline
from .listing import WorkItem
from .work import Chunk, RemoteFile, analyze_chunk, plan_chunks

# Ray re-runs a chunk whose worker process died (SIGKILL, OOM kill) by itself this many times, before the
# model task sees the fault (then Prefect's retries for transient faults apply). Batches are not re-run by
# Ray: the flow re-submits the models a lost batch had not reported, and records the lost attempt
# (pipelines/tasks.py), so the failures table tells what was retried.
CHUNK_MAX_RETRIES = 3

# Chunks per Ray slot a model is split into at least, with two slots or more (ChunkRunner.min_chunks). Measured
# with benchmarks/bench_scan.py's zoo (6 models x 6 layers of 2048^2), interleaved A/B in one process, 4 rounds:
# 2-worker fan-out 9.21/7.37/8.57/8.59 s with 1 chunk per slot, 8.06/7.65/7.32/8.26 s with 3 (mean 8.43 -> 7.82 s).
CHUNKS_PER_SLOT = 3

# A pickle (torch) checkpoint is loaded whole by each chunk: one chunk, however big.
WHOLE_FILE = 2**62

# With GPUs (ScanSettings.uses_gpus): the share of a GPU a chunk of small layers, or a batch, asks for.
GPU_SMALL_SHARE = 0.25


def _gpu_ids() -> str | None:
    """The GPUs Ray gave the running task ("0", "0,1"), None without any."""
    import ray

    ids = ray.get_gpu_ids()
    return ",".join(str(i) for i in ids) if ids else None


def chunk_entry(chunk: Chunk, options: AnalysisOptions) -> dict:
    """The Ray task of a chunk: `analyze_chunk`, and the GPUs it was given ("cuda_devices")."""
    return {**analyze_chunk(chunk, options), "cuda_devices": _gpu_ids()}


def batch_entry(items: list[WorkItem], spec: BatchSpec):
    """The Ray task of a batch: `run_batch` told which node it runs on (to decide who writes); each
    analysed model's outcome says which GPUs the task was given ("cuda_devices")."""
    import ray

    gpus = _gpu_ids()
    for out in run_batch(items, spec, node_id=ray.get_runtime_context().get_node_id()):
        if out["status"] != "failed":
            out["cuda_devices"] = [gpus] if gpus else []
        yield out


def batch_list_entry(items: list[WorkItem], spec: BatchSpec) -> list[dict]:
    """The same, all outcomes at once: Ray Client (ray://) has no streaming generators (Ray 2.60)."""
    return list(batch_entry(items, spec))


def ray_client() -> bool:
    """True when this process reaches Ray through Ray Client (ray://)."""
    try:
        from ray.util.client import ray as client_ray
    except ImportError:  # pragma: no cover - Ray without the client module
        return False
    return bool(client_ray.is_connected())


def driver_node_id() -> str | None:
    """The Ray node id of this (the flow's) process; None under Ray Client (the driver is elsewhere)."""
    import ray

    return None if ray_client() else ray.get_runtime_context().get_node_id()


class ChunkRunner:
    """Runs chunks and batches as Ray tasks; every task declares memory= its peak, capped at the biggest node.

    slots: Ray tasks in flight at once across all models of the scan.
    max_task_memory: the largest `memory` resource of any node (a request above it would never schedule);
        None when unknown (Ray Client).
    chunk_bytes: the working memory one chunk aims at (ScanSettings.chunk_bytes).
    driver_node: this process's Ray node id (pipelines/batch.py: who writes a batch's results).
    task_env: environment variables every task carries in its runtime_env (RayHandle.task_env).
    gpu_large_bytes: with GPUs, a chunk whose largest layer needs at least this gets a whole GPU; None: no
        GPU requests (ScanSettings.uses_gpus).
    """

    def __init__(self, *, slots: int, options: AnalysisOptions, max_task_memory: int | None = None,
                 chunk_bytes: int = 512 * 2**20, driver_node: str | None = None,
                 task_env: dict | None = None, gpu_large_bytes: int | None = None) -> None:
        import ray

        self.gpu_large_bytes = gpu_large_bytes
        self._extra = {"runtime_env": {"env_vars": dict(task_env)}} if task_env else {}
        self.slots = max(1, slots)
        self.options = options
        self.max_task_memory = max_task_memory
        self.chunk_bytes = chunk_bytes
        self.driver_node = driver_node
        self._limiter = threading.BoundedSemaphore(self.slots)
        self._remote = ray.remote(num_cpus=1, max_retries=CHUNK_MAX_RETRIES, retry_exceptions=False)(chunk_entry)
        # Streamed outcomes where Ray can (a lost batch then loses only the models it had not reported);
        # under Ray Client the whole batch's outcomes come back at once.
        self.streaming = not ray_client()
        self._batch = (ray.remote(num_cpus=1, max_retries=0, num_returns="streaming")(batch_entry) if self.streaming
                       else ray.remote(num_cpus=1, max_retries=0)(batch_list_entry))

    @property
    def min_chunks(self) -> int:
        """The fewest chunks a safetensors model is split into (when it has that many analysed layers): one per
        slot with one slot; CHUNKS_PER_SLOT per slot with more, so a worker that runs slower (the two share
        caches and memory bandwidth) hands work to the others instead of finishing its share last."""
        return self.slots if self.slots == 1 else CHUNKS_PER_SLOT * self.slots

    def _memory(self, wanted: int) -> int:
        return int(min(wanted, self.max_task_memory) if self.max_task_memory else wanted)

    def gpus(self, largest_layer_bytes: int) -> float:
        """GPUs a task asks for: none without GPU requests; a whole one for a large layer; else a share."""
        if self.gpu_large_bytes is None:
            return 0
        return 1.0 if largest_layer_bytes >= self.gpu_large_bytes else GPU_SMALL_SHARE

    def _submit(self, chunk: Chunk):
        # The task's name shows in `ray list tasks` and as the worker's process title: one line, always.
        name = f"ww-chunk:{safe_text(chunk.source[-40:], limit=80)}#{chunk.index}"
        largest = max((p.est_bytes for p in chunk.plans if p.analysed), default=0)
        return self._remote.options(memory=self._memory(chunk.memory), name=name, num_gpus=self.gpus(largest),
                                    **self._extra).remote(chunk, self.options)

    # ------------------------------------------------------------------------------------------ chunks

    def layers(self, source: str, plans: list[LayerPlan], *, kind: str, fetch: RemoteFile | None,
               deadline: Deadline) -> list[dict]:
        """A layer runner for pipelines/unit.py: `plans` in contiguous chunks on Ray; safetensors spread
        over every slot, a pickle file stays one chunk. Each output carries its chunk's declared memory."""
        split = kind == "safetensors"
        chunks = plan_chunks(source, list(plans), chunk_bytes=self.chunk_bytes if split else WHOLE_FILE,
                             min_chunks=self.min_chunks if split else 1, fetch=fetch)
        outs = self.run(chunks, deadline=deadline)
        return [{**out, "memory": chunks[out["index"]].memory} for out in outs]

    def run(self, chunks: list[Chunk], *, deadline: Deadline) -> list[dict]:
        """Results of `analyze_chunk` for every chunk, in chunk order.

        Raises TimeoutError (after cancelling what is in flight) when the deadline passes; a chunk's own
        exception arrives as Ray's RayTaskError (pipelines/faults.root_cause unwraps it).
        """
        import ray

        results: list[dict | None] = [None] * len(chunks)
        pending: dict = {}
        nxt = 0
        try:
            while nxt < len(chunks) or pending:
                # Non-blocking while something is in flight (its completion must be collected); else wait.
                while nxt < len(chunks) and (self._limiter.acquire(blocking=False) if pending
                                             else self._limiter.acquire(timeout=1.0)):
                    pending[self._submit(chunks[nxt])] = nxt
                    nxt += 1
                if deadline.expired():
                    raise deadline.error("model analysis")
                if not pending:
                    continue
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    i = pending.pop(ref)
                    self._limiter.release()
                    results[i] = ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
                self._limiter.release()
        return [r for r in results if r is not None]

    # ----------------------------------------------------------------------------------------- batches

    def stream_batch(self, items: list[WorkItem], spec: BatchSpec, *, name: str) -> Iterator[dict]:
        """Run a batch on Ray (once a slot is free) and yield each model's outcome as the worker reports it
        (all at the end under Ray Client).

        A lost worker or node surfaces as Ray's exception from the iteration, after the outcomes already
        reported (the caller re-submits the rest). Closing the iterator early cancels the task.
        """
        import ray

        self._limiter.acquire()
        gen = None
        try:
            gen = self._batch.options(memory=self._memory(batch_memory(items)), name=f"ww-batch:{safe_text(name, limit=80)}",
                                      num_gpus=self.gpus(0), **self._extra).remote(items, spec)
            if self.streaming:
                for ref in gen:
                    yield ray.get(ref)
            else:
                yield from ray.get(gen)
            gen = None
        finally:
            if gen is not None:
                with contextlib.suppress(Exception):  # the task may be gone already (its node died)
                    ray.cancel(gen, force=True)
            self._limiter.release()
