"""All Hugging Face hub I/O, through the real huggingface_hub client with `endpoint=` always explicit.

huggingface_hub reads HF_ENDPOINT / HF_TOKEN at import time; this module reads them at call time and
passes them explicitly, so a test (or a Ray worker) can point at another hub without re-importing.

Errors are mapped to ww-spectral's types, each naming the fix:
  401/403, gated or private repo        -> GatedRepoError   ("set HF_TOKEN ...")
  404 (repo, revision or file)          -> SourceNotFoundError
  408/429/5xx/timeouts/network errors   -> TransientHubError (after the client's and our own retries)
  no supported weight files             -> NoWeightsError

Rate limits: the client retries 429/5xx with exponential back-off and honours Retry-After on the calls
it wraps (listing pages, downloads); calls it does not retry (model info, HEAD before a download, header
range reads) are retried here with bounded exponential back-off (WW_HUB_MAX_ATTEMPTS attempts, default 4;
waits WW_HUB_BACKOFF_S * 2**k seconds, default 1 s, capped at 8 s, or the server's Retry-After). Those calls
time out after WW_HUB_TIMEOUT_S seconds (default 30; the client's default is to wait forever).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from .errors import (
    GatedRepoError,
    HubError,
    NoWeightsError,
    SourceNotFoundError,
    TransientHubError,
    WWSpectralError,
)
from .records import CheckpointRef, TensorInfo
from .sources import BIN_INDEX, NOT_WEIGHTS, ST_INDEX, parse_model_id, read_config

__all__ = [
    "HubModel",
    "Shard",
    "download_weights",
    "iter_weight_shards",
    "list_models",
    "model_info",
    "open_remote_checkpoint",
    "parse_model_id",
    "remote_tensor_infos",
    "select_weight_files",
]

DEFAULT_ENDPOINT = "https://huggingface.co"
LIST_EXPAND = ["sha", "safetensors", "library_name", "pipeline_tag", "tags", "downloads", "likes",
               "lastModified", "gated", "baseModels"]
SORTS = {"downloads": "downloads", "likes": "likes", "last_modified": "last_modified",
         "lastModified": "last_modified", "created_at": "created_at", "createdAt": "created_at",
         "trending_score": "trending_score", "trendingScore": "trending_score"}
T = TypeVar("T")


@dataclass(frozen=True)
class HubModel:
    """One model revision as the hub lists it.

    parameter_count: total parameters from the safetensors metadata (None when the hub has none).
    gated: False, or the gating mode ("auto"/"manual"). base_model: first declared base model id, or None.
    files: weight files to download, in load order (filled by `model_info`; empty from `list_models`).
    """

    repo_id: str
    sha: str | None
    parameter_count: int | None
    library: str | None
    pipeline_tag: str | None
    tags: tuple[str, ...]
    downloads: int | None
    likes: int | None
    last_modified: datetime | None
    gated: bool | str
    base_model: str | None
    files: tuple[str, ...] = ()


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


# --------------------------------------------------------------------------------------------------------------
# settings and error mapping


def resolve_endpoint(endpoint: str | None) -> str:
    """The endpoint to use: the argument, else HF_ENDPOINT (read now), else huggingface.co; no trailing '/'."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def resolve_token(token: str | None) -> str | None:
    """The token to send: the argument, else HF_TOKEN (read now), else None (the client may use its token file)."""
    return token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def _api(endpoint: str | None, token: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=resolve_endpoint(endpoint), token=resolve_token(token))


def _timeout() -> float:
    """Seconds an API call may stall before it counts as a (transient) timeout: WW_HUB_TIMEOUT_S, default 30."""
    return float(os.environ.get("WW_HUB_TIMEOUT_S", "30"))


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def map_hub_error(exc: BaseException, what: str, endpoint: str | None = None) -> WWSpectralError | None:
    """Translate a huggingface_hub / httpx2 exception into ww-spectral's types (None: not a hub fault)."""
    import httpx2
    from huggingface_hub import errors as hf

    where = resolve_endpoint(endpoint)
    if isinstance(exc, WWSpectralError):
        return exc
    if isinstance(exc, hf.GatedRepoError):
        return GatedRepoError(f"{what} is gated on {where}: accept its terms on the model page, then set HF_TOKEN "
                              "(or pass token=) to a token with access")
    if isinstance(exc, hf.RevisionNotFoundError):
        return SourceNotFoundError(f"{what}: revision not found on {where}; pass an existing branch, tag or commit")
    if isinstance(exc, hf.RemoteEntryNotFoundError):
        return SourceNotFoundError(f"{what}: file not found on {where}; the repo changed - retry with its new "
                                   "revision")
    if isinstance(exc, hf.LocalEntryNotFoundError):
        cause = exc.__cause__
        if cause is not None and cause is not exc:
            mapped = map_hub_error(cause, what, endpoint)
            if mapped is not None:
                return mapped
        return TransientHubError(f"{what}: cannot reach {where} and the file is not cached; check the network "
                                 "and retry later")
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return HubError(f"{what}: HF_HUB_OFFLINE is set; unset it or analyse a local folder / cache snapshot")
    status = _status(exc)
    if isinstance(exc, hf.HfHubHTTPError) and status is not None:
        if status in (401, 403):
            return GatedRepoError(f"{what}: {status} from {where}: the repo is private, gated or missing; if it "
                                  "exists, set HF_TOKEN (or pass token=) to a token with access, else check the id")
        if status == 404:
            return SourceNotFoundError(f"{what}: not found on {where} (404); check the repo id and revision")
        if status in (408, 429) or status >= 500:
            return TransientHubError(f"{what}: {where} answered {status} after retries; retry later "
                                     "(set HF_TOKEN for a higher rate limit)")
        return HubError(f"{what}: {where} answered {status}: {str(exc).strip().splitlines()[0][:200]}")
    if isinstance(exc, httpx2.TimeoutException | httpx2.NetworkError | httpx2.RemoteProtocolError):
        return TransientHubError(f"{what}: network error talking to {where} ({type(exc).__name__}: {exc}); "
                                 "check the network and retry later")
    return None


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc.__cause__ or exc, "response", None) or getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _call(what: str, endpoint: str | None, fn: Callable[[], T], *, retry: bool = True) -> T:
    """Run one hub call; map its errors; retry TransientHubError with bounded exponential back-off."""
    attempts = max(1, int(os.environ.get("WW_HUB_MAX_ATTEMPTS", "4"))) if retry else 1
    base = float(os.environ.get("WW_HUB_BACKOFF_S", "1.0"))
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - mapped below, unknown ones re-raised unchanged
            mapped = map_hub_error(exc, what, endpoint)
            if mapped is None:
                raise
            if isinstance(mapped, TransientHubError) and attempt + 1 < attempts:
                wait = _retry_after(exc)
                time.sleep(min(8.0, wait if wait is not None else base * 2**attempt))
                continue
            if mapped is exc:
                raise
            raise mapped from exc
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------------------------
# listing and model info


def _base_model(info) -> str | None:
    bm = getattr(info, "base_models", None)
    if isinstance(bm, dict):
        models = bm.get("models") or []
        if models and isinstance(models[0], dict):
            return models[0].get("id")
    if isinstance(bm, list) and bm:
        first = bm[0]
        return first.get("id") if isinstance(first, dict) else str(first)
    for tag in getattr(info, "tags", None) or []:
        if tag.startswith("base_model:") and tag.count(":") == 1:
            return tag.split(":", 1)[1]
    return None


def _hub_model(info, files: tuple[str, ...] = ()) -> HubModel:
    st = getattr(info, "safetensors", None)
    return HubModel(
        repo_id=info.id,
        sha=info.sha,
        parameter_count=int(st.total) if st is not None and st.total is not None else None,
        library=info.library_name,
        pipeline_tag=info.pipeline_tag,
        tags=tuple(info.tags or ()),
        downloads=info.downloads,
        likes=info.likes,
        last_modified=info.last_modified,
        gated=info.gated if info.gated else False,
        base_model=_base_model(info),
        files=files,
    )


def list_models(
    *,
    endpoint: str | None = None,
    token: str | None = None,
    author: str | None = None,
    library: str | None = None,
    pipeline_tag: str | None = None,
    min_downloads: int | None = None,
    min_params: int | None = None,
    max_params: int | None = None,
    sort: str = "downloads",
    limit: int | None = 100,
) -> list[HubModel]:
    """Models matching the filters, best first by `sort` (descending), at most `limit`.

    ONE listing call with `expand` (sha, safetensors parameter counts, library, pipeline tag, tags, downloads,
    likes, lastModified, gated, baseModels); the client follows Link-header pages and retries 429/5xx.
    author/library/pipeline_tag/params are sent to the hub; min_downloads and the parameter range are (also)
    applied here. With a parameter range, models whose parameter count is unknown are left out.
    sort: downloads | likes | last_modified | created_at | trending_score.
    """
    if sort not in SORTS:
        raise HubError(f"sort={sort!r} is not supported; use one of downloads, likes, last_modified, created_at, "
                       "trending_score")
    api = _api(endpoint, token)
    params_range = None
    if min_params is not None or max_params is not None:
        parts = ([f"min:{int(min_params)}"] if min_params is not None else []) + (
            [f"max:{int(max_params)}"] if max_params is not None else [])
        params_range = ",".join(parts)
    client_filter = min_downloads is not None or params_range is not None
    kwargs = {
        "author": author or None,
        "filter": library or None,
        "pipeline_tag": pipeline_tag or None,
        "num_parameters": params_range,
        "sort": SORTS[sort],
        "expand": LIST_EXPAND,
        # With client-side filters the hub's page size decides; we stop once `limit` models passed.
        "limit": None if client_filter else limit,
    }

    def run() -> list[HubModel]:
        out: list[HubModel] = []
        for info in api.list_models(**kwargs):
            model = _hub_model(info)
            if min_downloads is not None and (model.downloads or 0) < min_downloads:
                if SORTS[sort] == "downloads":
                    break  # sorted by downloads, descending: nothing further can pass
                continue
            if min_params is not None and (model.parameter_count is None or model.parameter_count < min_params):
                continue
            if max_params is not None and (model.parameter_count is None or model.parameter_count > max_params):
                continue
            out.append(model)
            if limit is not None and len(out) >= limit:
                break
        return out

    # The client already retried each page; a second round here would repeat whole listings.
    return _call("listing models", endpoint, run, retry=False)


def select_weight_files(names: list[str]) -> tuple[list[str], str]:
    """Pick the weight files among a repo's root-level file names: (files, kind).

    Same precedence as local folders: safetensors (index, model.safetensors, any *.safetensors) before
    pytorch_model*.bin / .pt / .pth. With an index present, the shards are the root safetensors files other
    than consolidated* (the exact list comes from the index at download time). Empty list: no weights.
    """
    root = [n for n in names if "/" not in n]
    st = sorted(n for n in root if n.endswith(".safetensors"))
    if ST_INDEX in root:
        return [n for n in st if not n.startswith("consolidated")], "safetensors"
    if "model.safetensors" in st:
        return ["model.safetensors"], "safetensors"
    if st:
        return st, "safetensors"
    pt = sorted(n for n in root if n.endswith((".bin", ".pt", ".pth", ".ckpt")) and not NOT_WEIGHTS.match(n))
    return pt, ("torch" if pt else "none")


def _info(api, repo_id: str, revision: str | None, endpoint: str | None):
    return _call(f"{repo_id}@{revision or 'main'}", endpoint,
                 lambda: api.model_info(repo_id, revision=revision, files_metadata=False, timeout=_timeout()))


def model_info(repo_id: str, *, revision: str | None = None, endpoint: str | None = None,
               token: str | None = None) -> HubModel:
    """One model revision's metadata (sha resolved) with `files` = its weight files in load order."""
    api = _api(endpoint, token)
    info = _info(api, repo_id, revision, endpoint)
    files, _ = select_weight_files([s.rfilename for s in info.siblings or []])
    return _hub_model(info, tuple(files))


# --------------------------------------------------------------------------------------------------------------
# downloads and header reads


def _download(repo_id: str, filename: str, sha: str, *, endpoint, token, cache_dir=None, local_dir=None) -> str:
    from huggingface_hub import hf_hub_download

    return _call(
        f"{repo_id}@{sha[:12]}/{filename}",
        endpoint,
        lambda: hf_hub_download(repo_id, filename, revision=sha, endpoint=resolve_endpoint(endpoint),
                                token=resolve_token(token), cache_dir=cache_dir, local_dir=local_dir),
    )


def _plan(api, repo_id: str, revision: str | None, endpoint, token, **dl) -> tuple[str, list[str], str, list[str]]:
    """(sha, weight files in load order, kind, sibling names); downloads the index when there is one."""
    info = _info(api, repo_id, revision, endpoint)
    names = [s.rfilename for s in info.siblings or []]
    files, kind = select_weight_files(names)
    if not files:
        shown = ", ".join(sorted(names)[:20]) or "no files"
        raise NoWeightsError(f"{repo_id}@{info.sha}: no supported weight files (.safetensors, pytorch_model*.bin, "
                             f".pt, .pth) on the hub; found {shown}")
    index_name = ST_INDEX if ST_INDEX in names else (BIN_INDEX if kind == "torch" and BIN_INDEX in names else None)
    if index_name is not None:
        path = _download(repo_id, index_name, info.sha, endpoint=endpoint, token=token, **dl)
        try:
            weight_map = json.loads(Path(path).read_text())["weight_map"]
            files = sorted(dict.fromkeys(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise HubError(f"{repo_id}@{info.sha}: {index_name} is not a valid index ({exc}); report it to the "
                           "repo owner or pin an older revision") from None
        missing = [f for f in files if f not in names]
        if missing:
            raise NoWeightsError(f"{repo_id}@{info.sha}: {index_name} lists shard(s) {', '.join(missing)} that "
                                 "the repo does not have")
    return info.sha, files, kind, names


def download_weights(repo_id: str, *, revision: str | None = None, endpoint: str | None = None,
                     token: str | None = None, cache_dir: str | None = None) -> CheckpointRef:
    """Download a repo's weight files (+ config.json) into the HF cache and return their CheckpointRef.

    revision: branch, tag or commit (default main); the ref carries the resolved commit sha. Files already
    cached are not fetched again. When the hub cannot be reached (TransientHubError) or HF_HUB_OFFLINE is set,
    a cached snapshot of the revision in `cache_dir` is used.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:  # no network calls at all: the cache or a clear error
        cached = _cached_snapshot(repo_id, revision, cache_dir)
        if cached is None:
            raise HubError(f"{repo_id}@{revision or 'main'} is not in the HF cache and HF_HUB_OFFLINE is set; unset "
                           "it to download, or analyse a local folder")
        return cached
    api = _api(endpoint, token)
    try:
        sha, files, kind, names = _plan(api, repo_id, revision, endpoint, token, cache_dir=cache_dir)
    except TransientHubError:
        cached = _cached_snapshot(repo_id, revision, cache_dir)
        if cached is None:
            raise
        return cached
    paths = [_download(repo_id, f, sha, endpoint=endpoint, token=token, cache_dir=cache_dir) for f in files]
    _remember_ref(Path(paths[0]).parent.parent.parent, revision or "main", sha)
    config: dict = {}
    if "config.json" in names:
        config = read_config(Path(_download(repo_id, "config.json", sha, endpoint=endpoint, token=token,
                                            cache_dir=cache_dir)).parent)
    return CheckpointRef(repo_id=repo_id, revision=sha, files=tuple(paths), kind=kind, config=config)


def _remember_ref(repo_dir: Path, revision: str, sha: str) -> None:
    """Record branch/tag -> commit in the cache (refs/<revision>), as snapshot_download does, so the snapshot
    can be found offline later. Files are fetched by commit sha, which makes the client skip this step."""
    if revision == sha or not (repo_dir / "snapshots").is_dir():
        return
    ref = repo_dir / "refs" / revision
    try:
        ref.parent.mkdir(parents=True, exist_ok=True)
        if not ref.is_file() or ref.read_text() != sha:
            tmp = ref.with_name(ref.name + f".tmp{os.getpid()}")
            tmp.write_text(sha)
            os.replace(tmp, ref)
    except OSError:
        pass  # a read-only cache still works online


def _cached_snapshot(repo_id: str, revision: str | None, cache_dir: str | None) -> CheckpointRef | None:
    from huggingface_hub import constants

    from .sources import _local_folder

    repo_dir = Path(cache_dir or constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    if not (repo_dir / "snapshots").is_dir():
        return None
    try:
        return _local_folder(repo_dir, revision)
    except WWSpectralError:
        return None


def iter_weight_shards(repo_id: str, revision: str | None = None, *, endpoint: str | None = None,
                       token: str | None = None, dest: str | os.PathLike) -> Iterator[Shard]:
    """Yield the repo's weight files one at a time, downloaded into `dest`; each is deleted when the consumer
    asks for the next one (or closes the generator), so disk use stays bounded by one shard (+ config.json).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    api = _api(endpoint, token)
    sha, files, _, names = _plan(api, repo_id, revision, endpoint, token, local_dir=str(dest))
    config = {}
    if "config.json" in names:
        config = read_config(Path(_download(repo_id, "config.json", sha, endpoint=endpoint, token=token,
                                            local_dir=str(dest))).parent)
    for i, filename in enumerate(files):
        path = _download(repo_id, filename, sha, endpoint=endpoint, token=token, local_dir=str(dest))
        try:
            yield Shard(repo_id=repo_id, revision=sha, filename=filename, path=path, index=i, count=len(files),
                        config=config)
        finally:
            Path(path).unlink(missing_ok=True)
    for extra in (ST_INDEX, BIN_INDEX):
        (dest / extra).unlink(missing_ok=True)
    shutil.rmtree(dest / ".cache", ignore_errors=True)  # the client's per-file download metadata



def _remote_safetensors(repo_id: str, revision: str | None, endpoint: str | None,
                        token: str | None) -> tuple[Any, Any, list[str], list[str]]:
    """(HfApi client, model info, every file name, the safetensors weight files) of a hub repo; NoWeightsError without them.

    Range reads need safetensors headers: a repo with only .bin/.pt weights must be downloaded instead.
    """
    api = _api(endpoint, token)
    info = _info(api, repo_id, revision, endpoint)
    names = [s.rfilename for s in info.siblings or []]
    files, kind = select_weight_files(names)
    if kind != "safetensors":
        raise NoWeightsError(f"{repo_id}@{info.sha}: no safetensors weights on the hub (found {kind} weights); "
                             "tensors can only be range-read from .safetensors files - download it instead")
    return api, info, names, files

def remote_tensor_infos(repo_id: str, revision: str | None = None, *, endpoint: str | None = None,
                        token: str | None = None) -> list[TensorInfo]:
    """Every tensor of a safetensors repo from its headers alone (HTTP Range reads, no weights downloaded).

    For memory planning before a download: TensorInfo.file is the file name inside the repo. A repo with
    only .bin/.pt weights has no readable header: NoWeightsError says so.
    """
    api, info, names, files = _remote_safetensors(repo_id, revision, endpoint, token)
    out: list[TensorInfo] = []
    seen: set[str] = set()
    for filename in files:
        meta = _call(f"{repo_id}@{info.sha[:12]}/{filename}", endpoint,
                     lambda f=filename: api.parse_safetensors_file_metadata(repo_id, f, revision=info.sha,
                                                                             timeout=_timeout()))
        for name, t in sorted(meta.tensors.items(), key=lambda kv: tuple(kv[1].data_offsets)):
            if name in seen:
                continue
            seen.add(name)
            begin, end = t.data_offsets
            out.append(TensorInfo(name=name, shape=tuple(int(d) for d in t.shape), dtype=t.dtype, file=filename,
                                  nbytes=int(end - begin)))
    return out


def _range_fetcher(repo_id: str, filename: str, sha: str, endpoint: str | None, token: str | None):
    """fetch(start, end) -> (bytes [start, end), total size) for one repo file, by HTTP Range GETs.

    Goes through the client's http_backoff (retries 429/5xx with back-off, honours Retry-After) and its
    error parsing; redirects (the hub's CDN) are followed.
    """
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_backoff

    url = hf_hub_url(repo_id, filename, revision=sha, endpoint=resolve_endpoint(endpoint))
    headers = build_hf_headers(token=resolve_token(token))

    def fetch(start: int, end: int) -> tuple[bytes, int]:
        def get():
            r = http_backoff("GET", url, headers={**headers, "Range": f"bytes={start}-{end - 1}"},
                             timeout=_timeout(), follow_redirects=True)
            hf_raise_for_status(r)
            return r

        r = _call(f"{repo_id}@{sha[:12]}/{filename}", endpoint, get, retry=False)
        content_range = r.headers.get("Content-Range", "")
        if r.status_code == 206 and "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
            return r.content, int(content_range.rsplit("/", 1)[1])
        if r.status_code == 416:  # start past the end: report an empty read and the size
            return b"", int(content_range.rsplit("/", 1)[1]) if "/" in content_range else 0
        # A server that ignores Range sends the whole file: still correct, only slower.
        return r.content[start:end], len(r.content)

    return fetch


def open_remote_checkpoint(repo_id: str, revision: str | None = None, *, endpoint: str | None = None,
                           token: str | None = None):
    """A Checkpoint over a hub repo's safetensors files that downloads nothing up front: headers are
    range-read at open, and each `read(name)` fetches exactly that tensor's bytes (one Range request).

    Disk use: none. Memory: one tensor. Requests: 1-2 per file at open + 1 per tensor read (each is a
    "resolver" request in the hub's rate limits). ref.files are the repo file names; ref.revision the commit.
    Repos without safetensors weights raise NoWeightsError (download them instead).
    """
    from .checkpoint import Checkpoint
    from .readers import SafetensorsRangeReader

    api, info, names, files = _remote_safetensors(repo_id, revision, endpoint, token)
    config: dict = {}
    if "config.json" in names:
        fetch = _range_fetcher(repo_id, "config.json", info.sha, endpoint, token)
        try:
            parsed = json.loads(fetch(0, 10_000_000)[0])
            config = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            config = {}
    readers = [SafetensorsRangeReader(f, _range_fetcher(repo_id, f, info.sha, endpoint, token)) for f in files]
    ref = CheckpointRef(repo_id=repo_id, revision=info.sha, files=tuple(files), kind="safetensors", config=config)
    return Checkpoint(ref, readers)
