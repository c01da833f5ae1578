"""A hub repo as a checkpoint: download it, stream it shard by shard, or read it by HTTP Range.

    download_weights(repo_id, revision=...)      -> CheckpointRef of its weight files in the HF cache
    iter_weight_shards(repo_id, revision, dest=) -> one downloaded Shard at a time (deleted when done)
    remote_tensor_infos(repo_id, revision)       -> every TensorInfo from the safetensors / GGUF headers alone
    open_remote_checkpoint(repo_id, revision)    -> a Checkpoint reading each tensor by one Range request
                                                    (safetensors, or one GGUF file: readers/gguf.GGUFRangeReader)

Which files: ww_spectral/layout.py (the same rule as local folders; an index's shards from the index,
validated). The HTTP side (errors, retries, timeouts): ww_spectral/hub.py. When the hub cannot be reached
(or HF_HUB_OFFLINE is set) a cached snapshot of the revision is used, resolved like a local cache entry
(ww_spectral/sources.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import hub
from .adapters import ADAPTER_CONFIG_FILE, with_adapter_config
from .errors import CheckpointError, HubError, NoWeightsError, TransientHubError, WWSpectralError
from .hub import HubSettings
from .layout import (
    BIN_INDEX,
    CONFIG,
    ST_INDEX,
    check_inside,
    check_revision,
    config_from_bytes,
    ignore_config,
    parse_index,
    read_config,
    read_index,
    select_weight_files,
)
from .progress import safe_text
from .readers.checkpoint import Checkpoint, open_all
from .readers.gguf import GGUFRangeReader
from .readers.safetensors import SafetensorsRangeReader
from .records import CheckpointRef, TensorInfo
from .sources import folder_ref
from .untrusted import CONFIG_MAX_BYTES, INDEX_MAX_BYTES

__all__ = ["RepoFiles", "Shard", "cached_snapshot", "download_weights", "iter_weight_shards",
           "open_remote_checkpoint", "plan_repo_files", "remote_tensor_infos"]

Fetch = Callable[[int, int], tuple[bytes, int]]


@dataclass(frozen=True)
class RepoFiles:
    """A repo revision's weight files, decided before any weight is downloaded.

    sha: the resolved commit. files: weight file names in load order. kind: "safetensors" | "torch".
    index: the index file they come from, or None. siblings: every file name of the revision.
    """

    repo_id: str
    sha: str
    files: tuple[str, ...]
    kind: str
    index: str | None
    siblings: tuple[str, ...]


@dataclass(frozen=True)
class Shard:
    """One downloaded weight file from `iter_weight_shards`; `path` is deleted when the consumer moves on."""

    repo_id: str
    revision: str
    filename: str
    path: str
    index: int
    count: int
    config: dict


def _no_weights(repo_id: str, sha: str, names: tuple[str, ...]) -> NoWeightsError:
    shown = ", ".join(sorted(names)[:20]) or "no files"
    return NoWeightsError(f"{repo_id}@{sha}: no supported weight files (.safetensors, pytorch_model*.bin, .pt, .pth, "
                          ".gguf) "
                          f"on the hub; found {safe_text(shown, limit=400)}")


def _checked_shards(model: hub.HubModel, index_name: str, shards: tuple[str, ...]) -> tuple[str, ...]:
    missing = [f for f in shards if f not in model.siblings]
    if missing:
        raise NoWeightsError(f"{model.repo_id}@{model.sha}: {index_name} lists shard(s) {safe_text(', '.join(missing), limit=400)} "
                             "that the repo does not have")
    return shards


def plan_repo_files(repo_id: str, revision: str | None = None, *, endpoint: str | None = None,
                    token: str | None = None, settings: HubSettings | None = None,
                    read_index_file: Callable[[str, str], tuple[str, ...]] | None = None,
                    weight_file: str | None = None) -> RepoFiles:
    """Resolve the revision and choose its weight files (one model-info call; the index read by
    `read_index_file(index_name, sha)` when there is one). NoWeightsError when there are none.
    weight_file: one file of the repo chosen by name (e.g. one quantisation of a GGUF repo); OptionError
    when the repo has no such weight file."""
    model = hub.model_info(repo_id, revision=revision, endpoint=endpoint, token=token, settings=settings)
    chosen = select_weight_files(model.siblings, weight_file=weight_file)
    if chosen.kind == "none":
        raise _no_weights(repo_id, model.sha, model.siblings)
    files = chosen.files
    if chosen.index is not None and read_index_file is not None:
        files = _checked_shards(model, chosen.index, read_index_file(chosen.index, model.sha))
    return RepoFiles(repo_id, model.sha, files, chosen.kind, chosen.index, model.siblings)


def _downloaded_index(repo_id: str, *, endpoint, token, settings, **where) -> Callable[[str, str], tuple[str, ...]]:
    def read(index_name: str, sha: str) -> tuple[str, ...]:
        path = hub.download_file(repo_id, index_name, revision=sha, endpoint=endpoint, token=token,
                                 settings=settings, **where)
        return read_index(path, index_name=index_name)

    return read


def repo_cache_dir(repo_id: str, cache_dir: str | os.PathLike | None) -> Path:
    """The models--org--name folder of `repo_id` in the HF cache (`cache_dir` or the client's default)."""
    from huggingface_hub import constants

    hub.check_repo_id(repo_id)
    return Path(cache_dir or constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def download_weights(repo_id: str, *, revision: str | None = None, endpoint: str | None = None,
                     token: str | None = None, cache_dir: str | None = None,
                     settings: HubSettings | None = None, weight_file: str | None = None) -> CheckpointRef:
    """Download a repo's weight files (+ config.json) into the HF cache and return their CheckpointRef.

    revision: branch, tag or commit (default main; validated); the ref carries the resolved commit sha.
    weight_file: download only this weight file (e.g. "model.Q8_0.gguf" of a GGUF repo; default: the
    layout rule's choice, ww_spectral/layout.py).
    Files already cached are not fetched again. When the hub cannot be reached (TransientHubError) or
    HF_HUB_OFFLINE is set, a cached snapshot of the revision in `cache_dir` is used.
    """
    from huggingface_hub import constants

    check_revision(revision)
    repo_dir = repo_cache_dir(repo_id, cache_dir)
    if constants.HF_HUB_OFFLINE:  # no network calls at all: the cache or a clear error
        cached = cached_snapshot(repo_id, revision, cache_dir)
        if cached is None:
            raise HubError(f"{repo_id}@{revision or 'main'} is not in the HF cache and HF_HUB_OFFLINE is set; unset "
                           "it to download, or analyse a local folder")
        return cached
    settings = settings or HubSettings.from_env()
    io = dict(endpoint=endpoint, token=token, settings=settings, cache_dir=cache_dir)
    try:
        plan = plan_repo_files(repo_id, revision, endpoint=endpoint, token=token, settings=settings,
                               read_index_file=_downloaded_index(repo_id, **io), weight_file=weight_file)
    except TransientHubError:
        cached = cached_snapshot(repo_id, revision, cache_dir)
        if cached is None:
            raise
        return cached
    paths = [hub.download_file(repo_id, f, revision=plan.sha, **io) for f in plan.files]
    _remember_ref(repo_dir, revision or "main", plan.sha)
    config = _downloaded_config(repo_id, plan, io, root=repo_dir)
    return CheckpointRef(repo_id=repo_id, revision=plan.sha, files=tuple(paths), kind=plan.kind, config=config)


def _downloaded_config(repo_id: str, plan: RepoFiles, io: dict, *, root: Path) -> dict:
    """config.json of the revision (bounded parse; {} without one), carrying adapter_config.json when the repo
    is a PEFT adapter (adapters.with_adapter_config: the rule local folders follow too)."""
    parsed = {name: read_config(hub.download_file(repo_id, name, revision=plan.sha, **io), root=root)
              for name in (CONFIG, ADAPTER_CONFIG_FILE) if name in plan.siblings}
    return with_adapter_config(parsed.get(CONFIG), parsed.get(ADAPTER_CONFIG_FILE))


def _remember_ref(repo_dir: Path, revision: str, sha: str) -> None:
    """Record branch/tag -> commit in the cache (refs/<revision>), as snapshot_download does, so the snapshot
    can be found offline later. Files are fetched by commit sha, which makes the client skip this step.
    The revision was validated (no '..', no leading '/'); the ref is checked to stay inside refs/ anyway."""
    if revision == sha or not (repo_dir / "snapshots").is_dir():
        return
    refs = repo_dir / "refs"
    ref = refs / check_revision(revision)
    try:
        check_inside(ref, refs, what="cache ref")
        ref.parent.mkdir(parents=True, exist_ok=True)
        if not ref.is_file() or ref.read_text() != sha:
            tmp = ref.with_name(ref.name + f".tmp{os.getpid()}")
            tmp.write_text(sha)
            os.replace(tmp, ref)
    except (OSError, CheckpointError):
        pass  # a read-only (or tampered) cache still works online; the ref is only an offline shortcut


def cached_snapshot(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None) -> CheckpointRef | None:
    """The cached snapshot of `revision` (default main) as a CheckpointRef, or None when there is none."""
    repo_dir = repo_cache_dir(repo_id, cache_dir)
    if not (repo_dir / "snapshots").is_dir():
        return None
    try:
        return folder_ref(repo_dir, revision)
    except WWSpectralError:
        return None


def iter_weight_shards(repo_id: str, revision: str | None = None, *, endpoint: str | None = None,
                       token: str | None = None, dest: str | os.PathLike,
                       settings: HubSettings | None = None) -> Iterator[Shard]:
    """Yield the repo's weight files one at a time, downloaded into `dest`; each is deleted when the consumer
    asks for the next one (or closes the generator), so disk use stays bounded by one shard (+ config.json).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    settings = settings or HubSettings.from_env()
    io = dict(endpoint=endpoint, token=token, settings=settings, local_dir=str(dest))
    plan = plan_repo_files(repo_id, revision, endpoint=endpoint, token=token, settings=settings,
                           read_index_file=_downloaded_index(repo_id, **io))
    config = _downloaded_config(repo_id, plan, io, root=dest)
    for i, filename in enumerate(plan.files):
        path = hub.download_file(repo_id, filename, revision=plan.sha, **io)
        try:
            yield Shard(repo_id=repo_id, revision=plan.sha, filename=filename, path=path, index=i,
                        count=len(plan.files), config=config)
        finally:
            Path(path).unlink(missing_ok=True)
    for extra in (ST_INDEX, BIN_INDEX):
        (dest / extra).unlink(missing_ok=True)
    shutil.rmtree(dest / ".cache", ignore_errors=True)  # the client's per-file download metadata


# --------------------------------------------------------------------------------------------------------------
# Range reads


def _small_file(fetch: Fetch, *, max_bytes: int, where: str, what: str) -> bytes:
    """A whole small remote file by one Range read; CheckpointError when it is larger than max_bytes."""
    data, size = fetch(0, max_bytes + 1)
    if size > max_bytes or len(data) > max_bytes:
        raise CheckpointError(f"{where}: {what} is {max(size, len(data))} bytes, over the {max_bytes}-byte limit "
                              "for such files; this is not a genuine file of that kind, or it is damaged")
    return data


def _remote_plan(repo_id: str, revision: str | None, endpoint, token, settings: HubSettings) -> RepoFiles:
    """The safetensors (or GGUF) files of a repo (index read by one Range read); NoWeightsError without any."""

    def read_remote_index(index_name: str, sha: str) -> tuple[str, ...]:
        fetch = hub.range_fetcher(repo_id, index_name, revision=sha, endpoint=endpoint, token=token,
                                  settings=settings)
        where = f"{repo_id}@{sha[:12]}/{index_name}"
        return parse_index(_small_file(fetch, max_bytes=INDEX_MAX_BYTES, where=where, what="index"),
                           index_name=index_name, where=where)

    plan = plan_repo_files(repo_id, revision, endpoint=endpoint, token=token, settings=settings,
                           read_index_file=read_remote_index)
    if plan.kind not in RANGE_KINDS:
        raise NoWeightsError(f"{repo_id}@{plan.sha}: no safetensors or GGUF weights on the hub (found {plan.kind} "
                             "weights); tensors can only be range-read from .safetensors and .gguf files - "
                             "download it instead")
    return plan


RANGE_KINDS = {"safetensors": SafetensorsRangeReader, "gguf": GGUFRangeReader}  # weight kinds read by HTTP Range


def _range_readers(plan: RepoFiles, endpoint, token, settings: HubSettings) -> list:
    reader = RANGE_KINDS[plan.kind]
    return open_all(
        (lambda f=f: reader(f, hub.range_fetcher(plan.repo_id, f, revision=plan.sha, endpoint=endpoint, token=token,
                                                 settings=settings)))
        for f in plan.files)


def remote_tensor_infos(repo_id: str, revision: str | None = None, *, endpoint: str | None = None,
                        token: str | None = None, settings: HubSettings | None = None) -> list[TensorInfo]:
    """Every tensor of a safetensors or GGUF repo from its headers alone (HTTP Range reads, no weights downloaded).

    For memory planning before a download: TensorInfo.file is the file name inside the repo. Headers are
    validated and bounded like local ones (readers.SafetensorsRangeReader). A repo with only .bin/.pt
    weights has no readable header: NoWeightsError says so.
    """
    settings = settings or HubSettings.from_env()
    plan = _remote_plan(repo_id, revision, endpoint, token, settings)
    with Checkpoint(CheckpointRef(repo_id, plan.sha, plan.files, plan.kind),
                    _range_readers(plan, endpoint, token, settings)) as ckpt:
        return ckpt.tensors()


def open_remote_checkpoint(repo_id: str, revision: str | None = None, *, endpoint: str | None = None,
                           token: str | None = None, settings: HubSettings | None = None) -> Checkpoint:
    """A Checkpoint over a hub repo's safetensors files (or its one GGUF model, layout.py's choice) that
    downloads nothing up front: headers are range-read at open, and each `read(name)` fetches exactly that
    tensor's bytes (one Range request; a GGUF tensor is dequantised after).

    Disk use: none. Memory: one tensor. Requests: 1 model info, 1 per index/config, 1-2 per file at open
    + 1 per tensor read (each is a "resolver" request in the hub's rate limits). ref.files are the repo file
    names; ref.revision the commit. Repos with only .bin/.pt weights raise NoWeightsError (download them).
    """
    settings = settings or HubSettings.from_env()
    plan = _remote_plan(repo_id, revision, endpoint, token, settings)
    parsed: dict[str, dict] = {}
    for name in (CONFIG, ADAPTER_CONFIG_FILE):
        if name not in plan.siblings:
            continue
        where = f"{repo_id}@{plan.sha[:12]}/{name}"
        fetch = hub.range_fetcher(repo_id, name, revision=plan.sha, endpoint=endpoint, token=token,
                                  settings=settings)
        try:
            parsed[name] = config_from_bytes(_small_file(fetch, max_bytes=CONFIG_MAX_BYTES, where=where,
                                                         what=name), where=where)
        except CheckpointError as exc:
            parsed[name] = ignore_config(str(exc).partition(";")[0])
    config = with_adapter_config(parsed.get(CONFIG), parsed.get(ADAPTER_CONFIG_FILE))
    ref = CheckpointRef(repo_id=repo_id, revision=plan.sha, files=plan.files, kind=plan.kind, config=config)
    return Checkpoint(ref, _range_readers(plan, endpoint, token, settings))
