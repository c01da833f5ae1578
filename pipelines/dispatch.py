"""Chunks of a model's layers on Ray: at most `slots` Ray tasks in flight over the whole scan.

One `ChunkRunner` per scan, created once Ray is up (pipelines/ray_runtime.py), shared by the model tasks
(threads of the flow process). The Ray side of a chunk is `pipelines.work.analyze_chunk`.
"""

from __future__ import annotations

import threading

from ww_spectral.progress import safe_text
from ww_spectral.records import AnalysisOptions

from .deadline import Deadline
from .work import Chunk, analyze_chunk

# Ray re-runs a chunk whose worker process died (SIGKILL, OOM kill) by itself this many times, before the
# model task sees the fault (then Prefect's retries for transient faults apply).
CHUNK_MAX_RETRIES = 3


class ChunkRunner:
    """Runs chunks as Ray tasks; every task declares memory= its chunk's peak, capped at the biggest node.

    slots: Ray tasks in flight at once across all models of the scan.
    max_task_memory: the largest `memory` resource of any node (a request above it would never schedule);
        None when unknown (Ray Client).
    """

    def __init__(self, *, slots: int, options: AnalysisOptions, max_task_memory: int | None = None) -> None:
        import ray

        self.slots = max(1, slots)
        self.options = options
        self.max_task_memory = max_task_memory
        self._limiter = threading.BoundedSemaphore(self.slots)
        self._remote = ray.remote(num_cpus=1, max_retries=CHUNK_MAX_RETRIES, retry_exceptions=False)(analyze_chunk)

    def _submit(self, chunk: Chunk):
        memory = min(chunk.memory, self.max_task_memory) if self.max_task_memory else chunk.memory
        # The task's name shows in `ray list tasks` and as the worker's process title: one line, always.
        name = f"ww-chunk:{safe_text(chunk.source[-40:], limit=80)}#{chunk.index}"
        return self._remote.options(memory=int(memory), name=name).remote(chunk, self.options)

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
