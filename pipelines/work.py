"""The heavy work that runs inside Ray workers: analyse one chunk of one model's layers.

This module imports neither prefect nor ray: pipelines/dispatch.py wraps `analyze_chunk` with
`ray.remote` once per scan. It lives in the installed package because Ray workers import task code by
module name (a function defined in a test or a script would not be importable there).
No Prefect code runs in a Ray worker, so Prefect's ephemeral mode never starts a server in one.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from ww_spectral import deltas, hub
from ww_spectral.analysis import analyze_layers, analyze_model
from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.hub import HubSettings
from ww_spectral.records import AnalysisOptions, LayerPlan

from .bases import BaseRef, node_folder

# Fixed memory a chunk needs beyond its largest layer: the worker's imports, the memory map's touched
# pages of one tensor, row dicts. Measured roughly (a fresh worker importing numpy+scipy: ~150 MB).
CHUNK_BASE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class RemoteFile:
    """Where a hub shard comes from, so a worker on another node can fetch the very same bytes."""

    repo_id: str
    revision: str  # the commit sha planned
    filename: str
    endpoint: str | None
    hub: HubSettings  # the scan's hub client settings (timeouts, attempts), read once by the flow
    # The base model the shard's delta plans (read_kind base_delta / lora_merged, ww_spectral/deltas.py) are
    # taken against: the chunk reads the shard paired with the base's files on its node (pipelines/bases.py).
    base: BaseRef | None = None


@dataclass(frozen=True)
class Chunk:
    """A contiguous run of one model's layer plans, analysed by one Ray task.

    plans: in checkpoint order (skipped plans ride along: they cost nothing and keep row order).
    source: what the worker opens (a local path: a model folder, a weight file, a cache snapshot).
    memory: bytes the Ray task declares: the largest layer's est_bytes + CHUNK_BASE_BYTES, since a
        chunk analyses its layers one at a time.
    fetch: for a hub shard, where to fetch it when `source` is not on this node's disk.
    """

    index: int
    source: str
    plans: tuple[LayerPlan, ...]
    memory: int
    fetch: RemoteFile | None = None


def _local_copy(chunk: Chunk) -> str:
    """The file a chunk reads. On a multi-node cluster a hub shard downloaded by the flow process is not on
    this node's disk: fetch the same commit's file here (node-local, kept for the other chunks of the shard;
    the hub client's file lock makes concurrent fetches of one file safe). HF_TOKEN is read on this node."""
    if os.path.exists(chunk.source) or chunk.fetch is None:
        return chunk.source
    remote = chunk.fetch
    root = os.path.join(tempfile.gettempdir(), "ww-spectral-shards")
    # repo ids and revisions were validated by the hub client (no "..", no separators beyond org/name)
    dest = os.path.join(root, remote.repo_id.replace("/", "--"), remote.revision)
    prune_stale_shards(root, keep=dest)
    return hub.download_file(remote.repo_id, remote.filename, revision=remote.revision, endpoint=remote.endpoint,
                             local_dir=dest, settings=remote.hub)


# A node-local shard copy is shared by the chunks of its model that land on this node, so it cannot be
# deleted when one chunk ends; copies untouched for this long belong to models finished long ago.
STALE_SHARD_SECONDS = 3600.0


def prune_stale_shards(root: str, *, keep: str, max_age_s: float = STALE_SHARD_SECONDS) -> list[str]:
    """Delete `root/<repo>/<commit>` shard folders not modified for `max_age_s` (never `keep`).

    Bounds a worker node's disk to the shards of recently analysed models. Returns the folders removed.
    """
    removed: list[str] = []
    now = time.time()
    try:
        repos = os.scandir(root)
    except FileNotFoundError:
        return removed
    for repo in repos:
        if not repo.is_dir():
            continue
        for commit in os.scandir(repo.path):
            path = commit.path
            if path == keep or not commit.is_dir():
                continue
            try:
                newest = max([commit.stat().st_mtime] + [e.stat().st_mtime for e in os.scandir(path)])
            except FileNotFoundError:  # another worker pruned it first
                continue
            if now - newest > max_age_s:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def plan_chunks(
    source: str, plans: list[LayerPlan], *, chunk_bytes: int, min_chunks: int = 1,
    fetch: RemoteFile | None = None,
) -> list[Chunk]:
    """Split a model's plans into contiguous chunks of about `chunk_bytes` of summed est_bytes each.

    est_bytes (float64 matrix + Gram, from the header) grows with the layer's compute, so equal byte
    budgets give chunks of similar run time. A model is split into at least `min_chunks` chunks when
    it has that many analysed layers (so one large model still spreads over every worker), and never
    into chunks without an analysed layer (except a model with none at all: one chunk).
    """
    analysed = [p for p in plans if p.analysed]
    total = sum(max(p.est_bytes, 1) for p in analysed)
    n_target = max(1, -(-total // max(chunk_bytes, 1)), min(min_chunks, len(analysed)))
    budget = total / n_target if analysed else float("inf")
    groups: list[list[LayerPlan]] = [[]]
    acc = 0.0
    for plan in plans:
        cost = max(plan.est_bytes, 1) if plan.analysed else 0
        # Close the group when this analysed layer would overflow it and the group already has work.
        if cost and acc > 0 and acc + cost > budget * 1.0001 and len(groups) < n_target:
            groups.append([])
            acc = 0.0
        groups[-1].append(plan)
        acc += cost
    chunks = []
    for i, group in enumerate(groups):
        peak = max((p.est_bytes for p in group if p.analysed), default=0)
        chunks.append(Chunk(index=i, source=source, plans=tuple(group), memory=peak + CHUNK_BASE_BYTES,
                            fetch=fetch))
    return chunks


def analyze_chunk(chunk: Chunk, options: AnalysisOptions, blas_threads: int = 1) -> dict:
    """Analyse one chunk (runs in a Ray worker). Returns {"index", "rows", "seconds", "pid"}.

    rows: one dict per plan, columns LAYER_COLUMN_NAMES (analysed, failed or skipped).
    BLAS is limited to `blas_threads` with threadpoolctl because a reused Ray worker keeps the thread
    count of its first numpy import; oversubscribed BLAS ran 6-20x slower on 2 cores.
    """
    if options.backend == "torch" and options.device == "cpu":
        import torch

        torch.set_num_threads(blas_threads)
    t0 = time.perf_counter()
    # workers=1, threads=blas_threads: inside a Ray task the library must not fan out over the node's cores.
    with threadpool_limits(limits=blas_threads), _open(chunk) as ckpt:
        rows = analyze_layers(ckpt, list(chunk.plans), options, workers=1, threads=blas_threads)
    # "prefect" in sys.modules here would mean Prefect code reached a Ray worker (see pipelines/tasks.py).
    return {"index": chunk.index, "rows": rows, "seconds": time.perf_counter() - t0, "pid": os.getpid(),
            "prefect_loaded": "prefect" in sys.modules}


def _open(chunk: Chunk):
    """The checkpoint a chunk reads: its file, paired with the base's files on this node for delta plans."""
    path = _local_copy(chunk)
    base = chunk.fetch.base if chunk.fetch is not None else None
    if base is None:
        return open_checkpoint(path)
    return deltas.open_with_base(path, node_folder(base))


def warm_up() -> int:
    """Import what a chunk needs and run one tiny analysis (lazy imports, BLAS pools) in this worker.

    Submitted once per slot when a scan starts Ray, so the seconds a fresh worker spends importing overlap
    with the flow's own start-up (Prefect task runs, listing, header planning) instead of the first chunks;
    with WW_SCAN_PREWARM=1 the scan waits for it before the fan-out (pipelines/scan.py), so those imports
    count as Ray's start-up in the timings.
    """
    with threadpool_limits(limits=1):
        analyze_model({"warm.weight": np.ones((16, 8), np.float32)}, workers=1, threads=1)
    return os.getpid()
