"""What a scan analyses: work items from a folder, from explicit ids, or from a hub listing.

Each lister returns (items, failures): a model that cannot even be listed (no weights, an unreadable
folder, an unknown hub id) becomes a failure tagged with its stage, never an exception for the scan.
Listing a local model hashes its weight files (its revision), so each one runs under the per-model
deadline (pipelines/deadline.py).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ww_spectral import hub
from ww_spectral.errors import CheckpointError, NoWeightsError, SourceNotFoundError
from ww_spectral.sources import resolve_source

from .deadline import Deadline
from .faults import StageFailure, stage, tagged

HEX40 = frozenset("0123456789abcdef")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

Listed = tuple[list["WorkItem"], list[tuple["WorkItem", StageFailure]]]


@dataclass(frozen=True)
class WorkItem:
    """One model revision to analyse.

    kind: "local" (source = folder, file or cache snapshot visible to the Ray workers) or "hub"
        (source = repo id; revision = commit sha, or None to resolve "main" first).
    facts: what the listing knows (downloads, likes, library, pipeline_tag, base_model, parameter_count);
        stored with the model's row.
    params_hint: the parameter count as far as the listing knows it (hub: the safetensors metadata; local:
        weight bytes / 2, i.e. counted as 16-bit, an upper bound for 16- and 32-bit weights), None when
        unknown; it decides whether the model is analysed in a batch of small models (pipelines/batch.py).
    """

    repo_id: str
    revision: str | None
    kind: str
    source: str
    facts: dict = field(default_factory=dict, compare=False, hash=False)
    params_hint: int | None = field(default=None, compare=False, hash=False)

    @property
    def label(self) -> str:
        return f"{self.repo_id}@{(self.revision or 'main')[:12]}"

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.repo_id, self.revision)


def is_commit(rev: str | None) -> bool:
    return bool(rev) and len(rev) == 40 and set(rev) <= HEX40


def _local_item(path: Path, name: str, timeout_s: float) -> WorkItem:
    """A local model's work item (its revision hashed from its weight files, under the model deadline)."""
    source = str(path.resolve())
    ref = Deadline(timeout_s).call(lambda: resolve_source(source).ref, what=f"listing {name}")
    return WorkItem(ref.repo_id, ref.revision, "local", source, params_hint=_weight_bytes(ref.files) // 2)


def _weight_bytes(files) -> int:
    total = 0
    for f in files:
        with contextlib.suppress(OSError):
            total += os.stat(f).st_size
    return total


def _listing_stage(exc: BaseException) -> str:
    return "read" if isinstance(exc, NoWeightsError | CheckpointError) else "list"


def list_folder(folder: str, *, timeout_s: float = 6 * 3600.0) -> Listed:
    """Model folders under `folder` (each subfolder a model), or the repos of a Hugging Face cache.

    A plain subfolder: repo_id = its name, revision = content hash of its weight files (editing weights
    makes a new revision). A cache root (models--org--name folders; also HF_HOME with a hub/ inside):
    repo_id = org/name, revision = the commit sha refs/main points to. Hidden entries are ignored.
    timeout_s: the deadline of one model's listing.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise SourceNotFoundError(f"{folder}: not a folder; pass a folder of model folders or a Hugging Face cache")
    if not any(p.name.startswith("models--") for p in root.iterdir()) and (root / "hub").is_dir():
        root = root / "hub"  # HF_HOME given instead of its hub cache
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs and any(p.is_file() and p.suffix in WEIGHT_SUFFIXES for p in root.iterdir()):
        subdirs = [root]  # the folder itself is one model
    items, failed = [], []
    for sub in subdirs:
        name = sub.name.removeprefix("models--").replace("--", "/") if sub.name.startswith("models--") \
            else sub.name
        try:
            items.append(_local_item(sub, name, timeout_s))
        except Exception as exc:  # noqa: BLE001 - any fault of untrusted input: this model's failure row
            failed.append((WorkItem(name, None, "local", str(sub)), tagged(_listing_stage(exc), exc)))
    return items, failed


def list_ids(model_ids: list[str], *, endpoint: str | None, timeout_s: float = 6 * 3600.0,
             hub_settings: hub.HubSettings | None = None) -> Listed:
    """Explicit ids "org/name[@rev]" (revisions other than commit shas are resolved with one info call
    each) or local paths."""
    items, failed = [], []
    for model_id in model_ids:
        path = Path(model_id).expanduser()
        if path.exists():
            try:
                items.append(_local_item(path, path.name, timeout_s))
            except Exception as exc:  # noqa: BLE001
                failed.append((WorkItem(path.name, None, "local", model_id), tagged("read", exc)))
            continue
        try:
            repo_id, rev = hub.parse_model_id(model_id)
        except Exception as exc:  # noqa: BLE001 - a malformed id is this entry's failure, not the scan's
            failed.append((WorkItem(model_id, None, "hub", model_id), tagged("list", exc)))
            continue
        if is_commit(rev):
            items.append(WorkItem(repo_id, rev, "hub", repo_id))
            continue
        try:
            with stage("list"):
                info = Deadline(timeout_s).call(
                    lambda r=repo_id, v=rev: hub.model_info(r, revision=v, endpoint=endpoint, settings=hub_settings),
                    what=f"model info of {repo_id}")
        except Exception as exc:  # noqa: BLE001
            failed.append((WorkItem(repo_id, rev, "hub", repo_id), tagged("list", exc)))
            continue
        items.append(WorkItem(repo_id, info.sha, "hub", repo_id, facts=hub_facts(info),
                              params_hint=info.parameter_count))
    return items, failed


def list_hub(*, endpoint: str | None, hub_settings: hub.HubSettings | None = None, **filters) -> Listed:
    """One hub listing (filters: author, library, pipeline_tag, min_downloads, min_params, max_params, sort,
    limit). A listing that fails is the scan's failure (raised, tagged stage `list`)."""
    with stage("list"):
        models = hub.list_models(endpoint=endpoint, settings=hub_settings, **filters)
    return [WorkItem(m.repo_id, m.sha, "hub", m.repo_id, facts=hub_facts(m), params_hint=m.parameter_count)
            for m in models], []


def hub_facts(m) -> dict:
    """What a hub listing or model info says about a model (stored beside the analysis)."""
    return {"downloads": m.downloads, "likes": m.likes, "library": m.library, "pipeline_tag": m.pipeline_tag,
            "base_model": m.base_model, "parameter_count": m.parameter_count}
