"""Duplicates on the hub: a revision whose weight files are byte-identical to a stored one is linked, not analysed.

The hub knows each LFS file's sha256 without anyone downloading it: model info with files metadata
(`HfApi.model_info(files_metadata=True)`, i.e. GET /api/models/{repo}/revision/{sha}?blobs=true) lists every
sibling with `lfs: {"size", "sha256", "pointerSize"}`. The weight files (ww_spectral/layout.py's rule, the
files an analysis reads) are identified by their sha256s; catalogs/store.py keeps which revision holds each
set of weight bytes (`claim_content`, `content_stored`) and the links (`write_link`).

Per model revision, before any weight is downloaded (pipelines/unit.py: model tasks, and batch workers
before their prefetch): one model-info call here, then
- weight bytes claimed by no one: this revision claims them and is analysed (`Claim`; the claim is marked
  stored once its rows are written);
- held by a revision that is stored: a link row (`Link`), no download, no analysis;
- held by a revision not stored (yet): a batch worker's prefetch does not download it, and when the model's
  turn comes the holder is looked at again (in a batch it was usually the model just before): stored now, a
  link; else (still being analysed elsewhere, or failed) this revision is downloaded and analysed after all,
  so a link never points at rows that do not exist and a failing copy fails on its own.
A revision whose weight files are not all LFS files with a sha256 (a small file stored in git, an old hub)
cannot be proved identical: it is analysed. Only where the worker reaches the store (pipelines/batch.py
writes_here): elsewhere the model is analysed as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from catalogs.store import ResultStore
from ww_spectral import hub
from ww_spectral.layout import select_weight_files

from .faults import stage
from .listing import WorkItem
from .settings import ScanSettings


@dataclass(frozen=True)
class Claim:
    """These weight bytes are this revision's to analyse; `stored` marks them held once its rows are written."""

    digest: str
    options_hash: str

    def stored(self, store: ResultStore, repo_id: str, revision: str) -> None:
        store.content_stored(self.digest, self.options_hash, repo_id, revision)


@dataclass(frozen=True)
class Link:
    """This revision has the weight bytes of (linked_repo_id, linked_revision): stored as a link, not analysed."""

    repo_id: str
    revision: str
    options_hash: str
    linked_repo_id: str
    linked_revision: str
    sha256s: dict
    digest: str

    def is_stored(self, store: ResultStore) -> bool:
        """Whether the linked revision's rows are in the store now."""
        held = store.find_content(self.digest, self.options_hash) or {}
        return (held.get("repo_id"), held.get("revision"), held.get("state")) == (
            self.linked_repo_id, self.linked_revision, "stored") or store.has_model(
            self.linked_repo_id, self.linked_revision, self.options_hash)

    def write(self, store: ResultStore) -> str:
        """Write the link row, and has_model()'s marker when the linked revision is stored (is_stored)."""
        return store.write_link(repo_id=self.repo_id, revision=self.revision, options_hash=self.options_hash,
                                linked_repo_id=self.linked_repo_id, linked_revision=self.linked_revision,
                                sha256s=self.sha256s, linked_stored=self.is_stored(store))

    def own_claim(self) -> Claim:
        """For a duplicate analysed after all (its holder not stored): its rows will hold these bytes too."""
        return Claim(self.digest, self.options_hash)


def weight_sha256s(repo_id: str, revision: str, settings: ScanSettings) -> dict[str, str] | None:
    """{weight file name: sha256} of a hub revision from one model-info call with files metadata; None when a
    weight file has no LFS sha256 (or the revision has no weight file): identity cannot be proved."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.resolve_endpoint(settings.endpoint), token=hub.resolve_token(None))
    info = hub.call(f"{repo_id}@{revision[:12]}", lambda: api.model_info(
        repo_id, revision=revision, files_metadata=True, timeout=settings.hub.timeout_s),
        endpoint=settings.endpoint, settings=settings.hub)
    lfs = {s.rfilename: getattr(s.lfs, "sha256", None) for s in info.siblings or [] if s.lfs is not None}
    files = select_weight_files(s.rfilename for s in info.siblings or []).files
    if not files or any(not isinstance(lfs.get(f), str) or len(lfs[f]) != 64 for f in files):
        return None
    return {f: lfs[f].lower() for f in files}


def check(item: WorkItem, revision: str, settings: ScanSettings, store: ResultStore) -> Claim | Link | None:
    """Claim this revision's weight bytes, or the Link to the revision that holds them; None when identity
    cannot be proved (see weight_sha256s). Hub items only; faults are tagged stage "list" (metadata)."""
    with stage("list"):
        sha256s = weight_sha256s(item.repo_id, revision, settings)
    if sha256s is None:
        return None
    options_hash = settings.fingerprint
    digest = ResultStore.content_digest(sha256s.values())
    held = store.claim_content(digest, options_hash, item.repo_id, revision)
    if held is None:
        return Claim(digest, options_hash)
    return Link(item.repo_id, revision, options_hash, str(held["repo_id"]), str(held["revision"]), sha256s, digest)
