"""The Hugging Face hub client: the REAL huggingface_hub client, `endpoint=` always explicit, errors mapped.

This module only talks to the hub (listing, model info, one-file downloads, HTTP Range reads); turning a
repo into a checkpoint is ww_spectral/hub_source.py, the choice of weight files ww_spectral/layout.py.

huggingface_hub reads HF_ENDPOINT / HF_TOKEN at import time; this module reads them at call time and
passes them explicitly, so a test (or a Ray worker) can point at another hub without re-importing.

Errors are mapped to ww-spectral's types, each naming the fix:
  401/403, gated or private repo        -> GatedRepoError   ("set HF_TOKEN ...")
  404 (repo, revision or file)          -> SourceNotFoundError
  408/429/5xx/timeouts/network errors   -> TransientHubError (after the client's and our own retries)
  an unsafe revision or repo id         -> OptionError / SourceNotFoundError (before any request)

Rate limits: the client retries 429/5xx with exponential back-off and honours Retry-After on the calls
it wraps (listing pages, downloads); calls it does not retry (model info, HEAD before a download, Range
reads) are retried here: HubSettings.max_attempts attempts, waiting backoff_s * 2**k seconds (capped at
MAX_BACKOFF_S) or the server's Retry-After. Those calls time out after HubSettings.timeout_s seconds (the
client's default is to wait forever). HubSettings.from_env() reads WW_HUB_TIMEOUT_S, WW_HUB_MAX_ATTEMPTS
and WW_HUB_BACKOFF_S once; every function takes `settings=` (default: from_env() at call time).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from .errors import (
    GatedRepoError,
    HubError,
    OptionError,
    SourceNotFoundError,
    TransientHubError,
    WWSpectralError,
)
from .layout import check_inside, check_member_name, check_revision, is_commit_sha, select_weight_files

__all__ = [
    "HubModel",
    "HubSettings",
    "download_file",
    "is_hub_id",
    "list_models",
    "map_hub_error",
    "model_info",
    "parse_model_id",
    "range_fetcher",
    "resolve_endpoint",
    "resolve_token",
]

DEFAULT_ENDPOINT = "https://huggingface.co"
LIST_EXPAND = ["sha", "safetensors", "library_name", "pipeline_tag", "tags", "downloads", "likes",
               "lastModified", "gated", "baseModels"]
SORTS = {"downloads": "downloads", "likes": "likes", "last_modified": "last_modified",
         "lastModified": "last_modified", "created_at": "created_at", "createdAt": "created_at",
         "trending_score": "trending_score", "trendingScore": "trending_score"}
MAX_BACKOFF_S = 8.0
# "org/name[@rev]" as typed: a shape test only (checked when no such path exists); the revision is
# validated by parse_model_id, so "org/name@../x" gets a message about its revision, not "not a hub id".
HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+(@\S+)?")
# The hub's own repo-name rule (huggingface_hub.utils.validate_repo_id): word characters, '.', '-'; no '--'
# or '..'; not starting or ending with '.' or '-'; at most 96 characters a part. Use fullmatch.
REPO_PART = re.compile(r"(?!.*--)(?!.*\.\.)(?![.-])(?!.*[.-]\Z)[\w.\-]{1,96}")
T = TypeVar("T")


@dataclass(frozen=True)
class HubSettings:
    """How patient the client is. Frozen: read once (from_env) and passed down as `settings=`.

    timeout_s: seconds an API call or Range read may stall before it counts as a (transient) timeout.
    max_attempts: tries of a call the client does not retry itself (>= 1).
    backoff_s: first wait between tries; doubled each time, capped at MAX_BACKOFF_S.
    """

    timeout_s: float = 30.0
    max_attempts: int = 4
    backoff_s: float = 1.0

    def __post_init__(self) -> None:
        if not (self.timeout_s > 0 and self.max_attempts >= 1 and self.backoff_s >= 0):
            raise OptionError(f"hub settings out of range ({self}); need timeout_s > 0, max_attempts >= 1, "
                              "backoff_s >= 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HubSettings:
        """Settings from WW_HUB_TIMEOUT_S, WW_HUB_MAX_ATTEMPTS, WW_HUB_BACKOFF_S (unset: the defaults)."""
        env = os.environ if environ is None else environ
        values = {}
        for field, name, kind in (("timeout_s", "WW_HUB_TIMEOUT_S", float),
                                  ("max_attempts", "WW_HUB_MAX_ATTEMPTS", int),
                                  ("backoff_s", "WW_HUB_BACKOFF_S", float)):
            text = (env.get(name) or "").strip()
            if text:
                try:
                    values[field] = kind(float(text)) if kind is int else kind(text)
                except ValueError:
                    raise OptionError(f"{name}={text!r} is not a number; unset it or give a "
                                      f"{kind.__name__}") from None
        return cls(**values)


@dataclass(frozen=True)
class HubModel:
    """One model revision as the hub lists it.

    sha: the commit (40 hex chars; checked). parameter_count: total parameters from the safetensors
    metadata (None when the hub has none). gated: False, or the gating mode ("auto"/"manual").
    base_model: first declared base model id, or None.
    files: weight files in load order (ww_spectral/layout.py's rule; filled by `model_info`, empty from
    `list_models`). siblings: every file name of the revision (`model_info` only).
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
    siblings: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------------------
# ids, endpoint, token


def is_hub_id(text: str) -> bool:
    """True when `text` has the shape "org/name[@rev]" (asked only when no such path exists)."""
    return bool(HUB_ID.fullmatch(text)) and not text.startswith((".", "/", "~"))


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if it is "org/name" by the hub's naming rule; SourceNotFoundError naming the rule otherwise."""
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if len(parts) != 2 or not all(REPO_PART.fullmatch(p) for p in parts) or repo_id.endswith(".git"):
        raise SourceNotFoundError(f"{repo_id!r:.120} is not a hub repo id: use org/name (letters, digits, '-', "
                                  "'_', '.'; no '--' or '..')")
    return repo_id


def parse_model_id(model_id: str) -> tuple[str, str | None]:
    """Split "org/name@rev" into ("org/name", "rev"); no "@" gives ("org/name", None).

    The revision is validated (layout.check_revision: a commit sha or a safe branch/tag name), since it
    becomes part of cache paths; OptionError otherwise.
    """
    repo_id, sep, rev = model_id.partition("@")
    revision = (rev or None) if sep else None
    return repo_id, check_revision(revision, what=f"revision of {repo_id!r:.120}")


def resolve_endpoint(endpoint: str | None) -> str:
    """The endpoint to use: the argument, else HF_ENDPOINT (read now), else huggingface.co; no trailing '/'."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def resolve_token(token: str | None) -> str | None:
    """The token to send: the argument, else HF_TOKEN (read now), else None (the client may use its token file)."""
    return token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def _api(endpoint: str | None, token: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=resolve_endpoint(endpoint), token=resolve_token(token))


# --------------------------------------------------------------------------------------------------------------
# error mapping and retries


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
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return HubError(f"{what}: {where} answered {status}: {first}")
    if isinstance(exc, hf.HFValidationError):
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return HubError(f"{what}: refused by the hub client's checks ({first}); check the repo id, revision "
                        "and file name")
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


def call(what: str, fn: Callable[[], T], *, endpoint: str | None = None, settings: HubSettings | None = None,
         retry: bool = True) -> T:
    """Run one hub call `fn()`; map its errors; retry TransientHubError with bounded exponential back-off.

    what: names the call in messages (e.g. "org/name@main"). retry=False for calls the client retries itself.
    """
    settings = settings or HubSettings.from_env()
    attempts = settings.max_attempts if retry else 1
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - mapped below, unknown ones re-raised unchanged
            mapped = map_hub_error(exc, what, endpoint)
            if mapped is None:
                raise
            if isinstance(mapped, TransientHubError) and attempt + 1 < attempts:
                wait = _retry_after(exc)
                time.sleep(min(MAX_BACKOFF_S, wait if wait is not None else settings.backoff_s * 2**attempt))
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


def _checked_sha(info, what: str, endpoint: str | None, *, strict: bool = True) -> str | None:
    """The commit the hub answered; it names cache folders, so anything but 40 hex chars is refused
    (strict) or dropped to None (listings: that model's own model_info call then fails, not the listing)."""
    sha = getattr(info, "sha", None)
    if sha is not None and not is_commit_sha(sha):
        if not strict:
            return None
        raise HubError(f"{what}: {resolve_endpoint(endpoint)} answered commit id {sha!r:.60}, not 40 hex "
                       "characters; refused - check the endpoint")
    return sha


def _hub_model(info, endpoint: str | None, *, strict: bool = True, siblings: tuple[str, ...] = (),
               files: tuple[str, ...] = ()) -> HubModel:
    st = getattr(info, "safetensors", None)
    return HubModel(
        repo_id=info.id,
        sha=_checked_sha(info, str(info.id), endpoint, strict=strict),
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
        siblings=siblings,
    )


def list_models(
    *,
    endpoint: str | None = None,
    token: str | None = None,
    sort: str = "downloads",
    limit: int | None = 100,
    author: str | None = None,
    library: str | None = None,
    pipeline_tag: str | None = None,
    min_params: int | None = None,
    max_params: int | None = None,
    min_downloads: int | None = None,
    settings: HubSettings | None = None,
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
            model = _hub_model(info, endpoint, strict=False)
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
    return call("listing models", run, endpoint=endpoint, settings=settings, retry=False)


def model_info(repo_id: str, *, revision: str | None = None, endpoint: str | None = None,
               token: str | None = None, settings: HubSettings | None = None) -> HubModel:
    """One model revision's metadata (sha resolved and checked) with `siblings` = every file name and
    `files` = its weight files in load order (ww_spectral/layout.py's rule; an index's shards as guessed
    from the root names until the index is read)."""
    check_repo_id(repo_id)
    check_revision(revision)
    settings = settings or HubSettings.from_env()
    api = _api(endpoint, token)
    what = f"{repo_id}@{revision or 'main'}"
    info = call(what, lambda: api.model_info(repo_id, revision=revision, files_metadata=False,
                                             timeout=settings.timeout_s),
                endpoint=endpoint, settings=settings)
    siblings = tuple(s.rfilename for s in info.siblings or [])
    return _hub_model(info, endpoint, siblings=siblings, files=select_weight_files(siblings).files)


# --------------------------------------------------------------------------------------------------------------
# downloads and Range reads


def download_file(repo_id: str, filename: str, *, revision: str, endpoint: str | None = None,
                  token: str | None = None, cache_dir: str | os.PathLike | None = None,
                  local_dir: str | os.PathLike | None = None, settings: HubSettings | None = None) -> str:
    """Download one file of a repo revision (hf_hub_download) and return its local path.

    revision: a commit sha (preferred: what was planned is what is read) or a safe branch/tag name.
    cache_dir: the HF cache (default: the client's); local_dir: a plain folder instead of the cache (the
    file lands at local_dir/filename). A file already present is not fetched again. filename and revision
    are validated before any request (layout.check_member_name / check_revision), and the path returned
    must lie inside local_dir when one is given. Errors mapped as in the module doc; retried when transient.
    """
    from huggingface_hub import hf_hub_download

    check_repo_id(repo_id)
    check_member_name(filename, where=f"{repo_id}@{revision}")
    check_revision(revision)
    settings = settings or HubSettings.from_env()
    path = call(
        f"{repo_id}@{revision[:12]}/{filename}",
        lambda: hf_hub_download(repo_id, filename, revision=revision, endpoint=resolve_endpoint(endpoint),
                                token=resolve_token(token), cache_dir=cache_dir, local_dir=local_dir,
                                etag_timeout=settings.timeout_s),
        endpoint=endpoint, settings=settings,
    )
    if local_dir is not None:
        check_inside(path, local_dir, what="downloaded file")
    return str(path)


# An error response's body is read only this far (the message the client shows comes from its start).
ERROR_BODY_BYTES = 64 * 2**10


def _read_at_most(response, limit: int) -> tuple[bytes, bool]:
    """(the first `limit` bytes of a streamed body, whether it holds more); stops reading past `limit`."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)[:limit], size > limit


def _total_size(response) -> int | None:
    """The file's size from Content-Range ("bytes a-b/SIZE") or, for a whole-file answer, Content-Length."""
    content_range = response.headers.get("Content-Range", "")
    size = content_range.rsplit("/", 1)[1] if "/" in content_range else ""
    if size.isdigit():
        return int(size)
    length = response.headers.get("Content-Length", "")
    return int(length) if response.status_code == 200 and length.isdigit() else None


def range_fetcher(repo_id: str, filename: str, *, revision: str, endpoint: str | None = None,
                  token: str | None = None, settings: HubSettings | None = None):
    """fetch(start, end) -> (bytes [start, end), total size) for one repo file, by HTTP Range GETs.

    Goes through the client's http_stream_backoff and its error parsing, with `call`'s retries (429/5xx,
    back-off, Retry-After); redirects (the hub's CDN) are followed. This is what readers.SafetensorsRangeReader reads.
    """
    import httpx2
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_stream_backoff

    check_repo_id(repo_id)
    check_member_name(filename, where=f"{repo_id}@{revision}")
    check_revision(revision)
    settings = settings or HubSettings.from_env()
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=resolve_endpoint(endpoint))
    headers = build_hf_headers(token=resolve_token(token))

    def fetch(start: int, end: int) -> tuple[bytes, int]:
        # Streamed, so a server that ignores Range or sends more than asked costs at most `end` bytes of
        # memory (an error body at most ERROR_BODY_BYTES), never the whole file it chooses to send.
        def get() -> tuple[int, bytes, int]:
            # No retries in the client: it reads a failed answer's whole body (to raise or before a retry);
            # `call` retries instead (same back-off settings, Retry-After honoured) after reading its start.
            with http_stream_backoff("GET", url, headers={**headers, "Range": f"bytes={start}-{end - 1}"},
                                     max_retries=0, retry_on_status_codes=(), retry_on_exceptions=(),
                                     timeout=settings.timeout_s, follow_redirects=True) as r:
                total = _total_size(r)
                if r.status_code == 416:  # start past the end: an empty read and the size
                    return 416, b"", total or 0
                if r.status_code >= 400:
                    body, _ = _read_at_most(r, ERROR_BODY_BYTES)
                    hf_raise_for_status(httpx2.Response(r.status_code, headers=r.headers, content=body,
                                                        request=r.request))
                if r.status_code == 206:
                    body, more = _read_at_most(r, end - start)
                    if more:
                        raise HubError(f"{repo_id}@{revision[:12]}/{filename}: asked for bytes {start}-{end - 1}, "
                                       "the server sent more; use another endpoint or mirror")
                    return 206, body, total if total is not None else end
                # A server that ignores Range sends the whole file: read up to `end`, then hang up.
                body, more = _read_at_most(r, end)
                if total is None:
                    if more:
                        raise HubError(f"{repo_id}@{revision[:12]}/{filename}: the server ignores Range and gives no "
                                       "size; use another endpoint or mirror")
                    total = len(body)
                return 200, body[start:end], total

        _, body, total = call(f"{repo_id}@{revision[:12]}/{filename}", get, endpoint=endpoint, settings=settings)
        return body, total

    return fetch
