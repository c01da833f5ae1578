"""Base models of fine-tunes in scans: read from a per-node cache, downloaded once per node, reused by every
fine-tune (and adapter) of that base analysed there.

Which base: the hub's `base_model` of the model (WorkItem.facts, from the listing or model info), at the
revision the base's `main` points to when first asked in this process (or the revision the scan listed for
the base). A fine-tune's delta rows (W - W_base, ww_spectral/deltas.py) are planned from its headers and the
base's, and analysed in chunks that carry a `BaseRef` (pipelines/work.py): wherever such a chunk runs,
`node_folder` gives the base's files on that node.

The node cache: `<tmp>/ww-spectral-bases`, an HF-cache folder (models--org--name/snapshots/<commit>/),
filled by the first process of the node that needs a base while it holds that base's lock file (fcntl), so
the other workers of the node wait for it and then read the same files: one download per node. Cached
bases untouched for BASE_CACHE_SECONDS are removed by the next filler.

How fine-tunes are scheduled with their base (pipelines/batch.py make_batches): a scan's small models are
ordered by base family (the base, then its fine-tunes, adapters and copies) and a family is kept in one
batch while the batch limits allow, so one Ray worker reads the base into its node's cache once and analyses
the base and then its fine-tunes from there (the base's own weights come from the cache too:
`base_shards`); a family too large for one batch is split into consecutive batches, which find the base in
the cache of whichever node they land on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

from ww_spectral import hub, hub_source
from ww_spectral.hub import HubSettings

from .listing import WorkItem

CACHE_NAME = "ww-spectral-bases"
# A cached base not used for this long belongs to a family analysed long ago (a night's scan of one family
# takes minutes to hours); it is removed when another base is fetched on the node.
BASE_CACHE_SECONDS = 6 * 3600.0


@dataclass(frozen=True)
class BaseRef:
    """A base model revision on the hub, and how to reach it: what a chunk with delta plans carries."""

    repo_id: str
    revision: str  # commit sha
    endpoint: str | None
    hub: HubSettings

    @property
    def label(self) -> str:
        return f"{self.repo_id}@{self.revision}"


def base_of(item: WorkItem) -> str | None:
    """The hub id of `item`'s base model, None for a model without one (or one naming itself)."""
    base = item.facts.get("base_model") if item.kind == "hub" else None
    if not isinstance(base, str) or base == item.repo_id or "@" in base or not hub.is_hub_id(base):
        return None
    return base


def cache_root() -> str:
    return os.path.join(tempfile.gettempdir(), CACHE_NAME)


@contextlib.contextmanager
def _locked(path: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _key(repo_id: str, revision: str) -> str:
    return f"{repo_id.replace('/', '--')}--{revision}"


def node_ref(base: BaseRef):
    """The base's files on this node (a CheckpointRef into the node cache), downloaded first if this node
    has none (module doc)."""
    root = cache_root()
    done = os.path.join(root, "complete", _key(base.repo_id, base.revision))
    with _locked(os.path.join(root, "locks", _key(base.repo_id, base.revision) + ".lock")):
        ref = hub_source.cached_snapshot(base.repo_id, base.revision, root) if os.path.exists(done) else None
        if ref is None:
            _prune(root)
            ref = hub_source.download_weights(base.repo_id, revision=base.revision, endpoint=base.endpoint,
                                              cache_dir=root, settings=base.hub)
            os.makedirs(os.path.dirname(done), exist_ok=True)
            open(done, "w").close()
        os.utime(done)  # in use: not pruned
    return ref


def node_folder(base: BaseRef) -> str:
    """The base's snapshot folder on this node (node_ref)."""
    return os.path.dirname(node_ref(base).files[0])


def _prune(root: str, *, max_age_s: float = BASE_CACHE_SECONDS) -> None:
    """Remove cached bases whose completion marker was not touched for max_age_s (never one being filled:
    only complete ones have a marker)."""
    complete = os.path.join(root, "complete")
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(complete):
            if time.time() - entry.stat().st_mtime <= max_age_s:
                continue
            repo, _, _ = entry.name.rpartition("--")
            os.unlink(entry.path)
            shutil.rmtree(os.path.join(root, f"models--{repo}"), ignore_errors=True)


def base_shards(item: WorkItem, revision: str, settings_endpoint: str | None, hub_settings: HubSettings) -> list:
    """A base model's own weight files as hub_source.Shard's read from the node cache (filled now if needed),
    for its own analysis in a batch that also holds its fine-tunes (the files stay: they are the cache's)."""
    ref = node_ref(BaseRef(item.repo_id, revision, settings_endpoint, hub_settings))
    return [hub_source.Shard(repo_id=item.repo_id, revision=revision, filename=os.path.basename(path), path=path,
                             index=i, count=len(ref.files), config=dict(ref.config or {}))
            for i, path in enumerate(ref.files)]


class Resolver:
    """Base revisions as one process knows them: the scan's own listing first (a base listed in the batch),
    then one model-info call per base (remembered)."""

    def __init__(self, endpoint: str | None, hub_settings: HubSettings, known: dict[str, str] | None = None) -> None:
        self.endpoint = endpoint
        self.hub = hub_settings
        self.revisions = dict(known or {})

    def ref(self, base: str) -> BaseRef:
        if base not in self.revisions:
            self.revisions[base] = hub.model_info(base, endpoint=self.endpoint, settings=self.hub).sha
        return BaseRef(base, self.revisions[base], self.endpoint, self.hub)
