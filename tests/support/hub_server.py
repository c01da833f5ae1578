"""A Hugging Face hub-compatible HTTP server on 127.0.0.1, for running the REAL huggingface_hub client in tests.

    from support.hub_server import HubServer

    with HubServer(page_size=2) as hub:                       # random port, background thread
        sha = hub.add_repo("org/tiny", folder, downloads=10, gated=False)
        HfApi(endpoint=hub.endpoint).model_info("org/tiny")  # or ww_spectral.hub.*(endpoint=hub.endpoint)
        hub.inject("/api/models", status=500, times=2)       # the next 2 matching requests fail
        hub.requests_to("/org/tiny/resolve/")                 # the request log (method, path, query, headers)

It is a real socket server (ThreadingHTTPServer), so Ray workers in other processes can use it too.
Set HF_HUB_DISABLE_XET=1 in clients (the server never sends Xet headers, so plain HTTP is used anyway).

Served (what huggingface_hub 2.4 calls; read from its source):
  GET  /api/models                                   listing: author, search, filter (tag/library),
                                                     pipeline_tag, num_parameters=min:X,max:Y, sort, limit,
                                                     expand=...; Link-header pagination (cursor=offset)
  GET  /api/models/{org}/{name}[/revision/{rev}]     model info: sha, siblings (+size, blobId and
                                                     lfs {size, sha256, pointerSize} with blobs=1, i.e.
                                                     model_info(files_metadata=True)),
                                                     safetensors {parameters, total}, gated, ...
  GET  /api/models/{org}/{name}/tree/{rev}[/{path}]  tree listing (recursive=1)
  POST /api/models/{org}/{name}/paths-info/{rev}     paths info
  HEAD/GET /{org}/{name}/resolve/{rev}/{file}        ETag, X-Repo-Commit, X-Linked-Size/-Etag,
                                                     Content-Length, Accept-Ranges; Range -> 206
  GET  /_stats                                       this server's counters (requests, bytes sent), for benchmarks
Auth: `Authorization: Bearer <token>` must be one of `tokens` for private repos (everything) and gated repos
(file downloads). Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) as the
hub does, so the client raises its own typed errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

EXPANDABLE = ("author", "sha", "safetensors", "library_name", "pipeline_tag", "tags", "downloads", "likes",
              "lastModified", "createdAt", "gated", "private", "baseModels", "siblings", "disabled", "config")
DEFAULT_LIST_FIELDS = ("id", "likes", "downloads", "tags", "pipeline_tag", "library_name", "createdAt",
                       "private", "gated")


@dataclass(frozen=True)
class LoggedRequest:
    """One request the server received (headers lower-cased)."""

    method: str
    path: str
    query: dict
    headers: dict

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


@dataclass
class _Fault:
    prefix: str
    status: int | None
    times: int
    method: str | None
    retry_after: float | None
    delay: float


@dataclass
class _File:
    path: str  # path inside the repo
    local: Path
    size: int
    sha256: str
    blob_id: str


@dataclass
class _Commit:
    sha: str
    files: dict[str, _File]
    safetensors: dict | None
    last_modified: str


@dataclass
class _Repo:
    repo_id: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gated: bool | str = False
    private: bool = False
    downloads: int = 0
    likes: int = 0
    library_name: str | None = "transformers"
    pipeline_tag: str | None = "text-generation"
    tags: list[str] = field(default_factory=list)
    created_at: str = "2024-01-01T00:00:00.000Z"
    base_models: dict | None = None
    config: dict | None = None


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _safetensors_params(files: dict[str, _File]) -> dict | None:
    """{"parameters": {dtype: n}, "total": n} from the root .safetensors headers, as the hub computes it."""
    params: dict[str, int] = {}
    found = False
    for f in files.values():
        if "/" in f.path or not f.path.endswith(".safetensors"):
            continue
        try:
            with open(f.local, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
        except (OSError, ValueError, RecursionError, struct.error):
            continue
        found = True
        for name, entry in header.items():
            if name == "__metadata__" or not isinstance(entry, dict):
                continue
            numel = 1
            for d in entry.get("shape", []):
                numel *= int(d)
            params[entry.get("dtype", "?")] = params.get(entry.get("dtype", "?"), 0) + numel
    return {"parameters": params, "total": sum(params.values())} if found else None


_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


def _count(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)([KMBT]?)", text.strip().upper())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _SUFFIX[m.group(2)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.server.hub._handle(self, "GET")

    def do_HEAD(self) -> None:
        self.server.hub._handle(self, "HEAD")

    def do_POST(self) -> None:
        self.server.hub._handle(self, "POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    hub: HubServer

    def handle_error(self, request, client_address) -> None:
        """A client that went away mid-answer (a killed scan) is not an error of the server: no traceback."""
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class HubServer:
    """The server; a context manager. `endpoint` is "http://127.0.0.1:<port>".

    page_size: the largest listing page (the hub's is 1000); small values exercise pagination.
    tokens: tokens accepted in `Authorization: Bearer ...` (gated and private repos need one).
    log_requests: keep every request in `requests` (off for rehearsals of thousands of repos: the counters
        in `stats()` are kept either way).
    """

    def __init__(self, *, page_size: int = 1000, tokens: tuple[str, ...] = ("hf_test_token",),
                 log_requests: bool = True) -> None:
        self.page_size = page_size
        self.tokens = set(tokens)
        self.log_requests = log_requests
        self.requests: list[LoggedRequest] = []
        self.counters = {"requests": 0, "bytes_sent": 0, "file_bytes_sent": 0, "listing_pages": 0}
        self._digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, for add_repo
        self._repos: dict[str, _Repo] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    # ---------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> HubServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.hub = self
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------------ content
    def add_repo(
        self,
        repo_id: str,
        folder: str | os.PathLike,
        *,
        commit: str | None = None,
        branch: str = "main",
        gated: bool | str = False,
        private: bool = False,
        downloads: int = 0,
        likes: int = 0,
        library_name: str | None = "transformers",
        pipeline_tag: str | None = "text-generation",
        tags: list[str] | tuple[str, ...] = (),
        last_modified: datetime | None = None,
        base_model: str | None = None,
        base_relation: str = "finetune",
        extra_files: dict[str, str | os.PathLike] | None = None,
    ) -> str:
        """Serve `folder`'s files as a new commit of `repo_id` on `branch`; returns the commit sha.

        Files are served from disk (not copied): do not edit them while they are served. Adding the same
        repo again creates a new commit; older commits stay reachable by sha.
        branch and commit may be any text (a hostile hub's, e.g. "../../x"): served as given.
        extra_files: repo path -> local file, for names no folder can hold (a hostile hub's "../x.safetensors").
        base_model, base_relation: the model card's base model and how the repo derives from it, served as the
            hub does (tag base_model:<relation>:<id> besides base_model:<id>, expand baseModels {"relation",
            "models": [{"id"}]}); relation: finetune | adapter | quantized | merge.
        """
        folder = Path(folder)
        files: dict[str, _File] = {}
        h = hashlib.sha1(repo_id.encode())
        entries = [(p.relative_to(folder).as_posix(), p) for p in sorted(q for q in folder.rglob("*") if q.is_file())]
        entries += [(rel, Path(local)) for rel, local in (extra_files or {}).items()]
        for rel, p in entries:
            digest = self._digest(p)
            files[rel] = _File(rel, p.resolve(), p.stat().st_size, digest, hashlib.sha1(digest.encode()).hexdigest())
            h.update(f"{rel}\0{digest}\0".encode())
        sha = commit or h.hexdigest()
        ts = _iso(last_modified or datetime.now(UTC))
        with self._lock:
            repo = self._repos.get(repo_id) or _Repo(repo_id)
            repo.commits[sha] = _Commit(sha, files, _safetensors_params(files), ts)
            repo.refs[branch] = sha
            repo.gated, repo.private, repo.downloads, repo.likes = gated, private, downloads, likes
            repo.library_name, repo.pipeline_tag = library_name, pipeline_tag
            auto_tags = [library_name] if library_name else []
            if any(f.endswith(".safetensors") for f in files):
                auto_tags.append("safetensors")
            if base_model:
                auto_tags += [f"base_model:{base_model}", f"base_model:{base_relation}:{base_model}"]
                repo.base_models = {"relation": base_relation, "models": [{"id": base_model}]}
            repo.tags = list(dict.fromkeys([*tags, *auto_tags]))
            if "config.json" in files and files["config.json"].size <= 4 << 20:  # hostile configs: not parsed here
                try:
                    repo.config = json.loads(files["config.json"].local.read_text())
                except (ValueError, RecursionError):
                    repo.config = None
            self._repos[repo_id] = repo
        return sha

    def _digest(self, p: Path) -> str:
        """sha256 of a served file (remembered: a rehearsal serves one file from thousands of repos)."""
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._digests:
            data_hash = hashlib.sha256()
            with open(p, "rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(2**20), b""):
                    data_hash.update(chunk)
            self._digests[key] = data_hash.hexdigest()
        return self._digests[key]

    def stats(self) -> dict:
        """Counters since start: requests, bytes_sent (all bodies), file_bytes_sent (resolve bodies),
        listing_pages."""
        with self._lock:
            return dict(self.counters)

    def inject(self, path_prefix: str, *, status: int | None = 500, times: int = 1, method: str | None = None,
               retry_after: float | None = 0, delay: float = 0.0) -> None:
        """Make the next `times` requests whose path starts with `path_prefix` fail with `status`.

        retry_after: Retry-After header seconds (None: no header; the client then backs off 1, 2, 4, 8 s).
        delay: sleep this long before answering (with status=None the request then succeeds: a slow server).
        """
        with self._lock:
            self._faults.append(_Fault(path_prefix, status, times, method, retry_after, delay))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[LoggedRequest]:
        """Logged requests whose path starts with `path_prefix` (and whose method is `method`, if given)."""
        with self._lock:
            return [r for r in self.requests
                    if r.path.startswith(path_prefix) and (method is None or r.method == method)]

    # --------------------------------------------------------------------------------------------- handling
    def _handle(self, h: _Handler, method: str) -> None:
        split = urlsplit(h.path)
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        path = "/" + "/".join(segments)
        query = parse_qs(split.query, keep_blank_values=True)
        body = b""
        if method == "POST":
            body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
            query = {**query, **parse_qs(body.decode(), keep_blank_values=True)}
        with self._lock:
            self.counters["requests"] += 1
            if self.log_requests:
                self.requests.append(LoggedRequest(method, path, query, {k.lower(): v for k, v in h.headers.items()}))
            fault = next((f for f in self._faults if path.startswith(f.prefix) and f.times > 0
                          and (f.method is None or f.method == method)), None)
            if fault is not None:
                fault.times -= 1
        try:
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.status is not None:
                    headers = {} if fault.retry_after is None else {"Retry-After": str(int(fault.retry_after))}
                    raise _HTTPError(fault.status, f"injected fault {fault.status}", None, headers)
            token = self._token(h)
            if path == "/_stats":
                self._send_json(h, 200, self.stats(), method=method)
            elif segments[:2] == ["api", "models"]:
                self._api(h, method, segments[2:], query, token)
            elif len(segments) >= 5 and segments[2] == "resolve":
                self._resolve(h, method, "/".join(segments[:2]), segments[3], "/".join(segments[4:]), token)
            else:
                raise _HTTPError(404, f"no route for {path}")
        except _HTTPError as e:
            self._send_json(h, e.status, {"error": e.message}, method=method,
                            headers={**({"X-Error-Code": e.code} if e.code else {}), "X-Error-Message": e.message,
                                     **e.headers})
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _token(self, h: _Handler) -> str | None:
        auth = h.headers.get("Authorization") or ""
        if not auth:
            return None
        tok = auth.removeprefix("Bearer ").strip()
        if tok not in self.tokens:
            raise _HTTPError(401, "Invalid credentials in Authorization header")
        return tok

    def _repo(self, repo_id: str, token: str | None) -> _Repo:
        with self._lock:
            repo = self._repos.get(repo_id)
        if repo is None or (repo.private and token is None):
            raise _HTTPError(404 if repo is None else 401, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit(self, repo: _Repo, rev: str) -> _Commit:
        sha = repo.refs.get(rev, rev)
        commit = repo.commits.get(sha)
        if commit is None:
            raise _HTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    def _send_json(self, h: _Handler, status: int, obj, *, method: str = "GET", headers: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(data)
            with self._lock:
                self.counters["bytes_sent"] += len(data)

    # ----------------------------------------------------------------------------------------------- the API
    def _api(self, h: _Handler, method: str, rest: list[str], query: dict, token: str | None) -> None:
        if not rest:
            return self._list(h, query, token)
        if len(rest) < 2:
            raise _HTTPError(404, "no route")
        repo = self._repo("/".join(rest[:2]), token)
        tail = rest[2:]
        if not tail:
            return self._send_json(h, 200, self._info(repo, self._commit(repo, "main"), query))
        if tail[0] == "revision" and len(tail) == 2:
            return self._send_json(h, 200, self._info(repo, self._commit(repo, tail[1]), query))
        if tail[0] == "tree" and len(tail) >= 2:
            return self._send_json(h, 200, self._tree(self._commit(repo, tail[1]), "/".join(tail[2:]),
                                                      _flag(query, "recursive")))
        if tail[0] == "paths-info" and len(tail) == 2 and method == "POST":
            commit = self._commit(repo, tail[1])
            wanted = query.get("paths", [])
            return self._send_json(h, 200, [e for e in self._tree(commit, "", True) if e["path"] in wanted])
        raise _HTTPError(404, f"no route for /api/models/{'/'.join(rest)}")

    def _fields(self, repo: _Repo, commit: _Commit, *, blobs: bool = False) -> dict:
        siblings = []
        for f in commit.files.values():
            s: dict = {"rfilename": f.path}
            if blobs:
                s |= {"size": f.size, "blobId": f.blob_id,
                      "lfs": {"size": f.size, "sha256": f.sha256, "pointerSize": 134}}
            siblings.append(s)
        out = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "lastModified": commit.last_modified,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": repo.downloads,
            "likes": repo.likes,
            "library_name": repo.library_name,
            "pipeline_tag": repo.pipeline_tag,
            "tags": list(repo.tags),
            "siblings": siblings,
            "config": repo.config,
        }
        if commit.safetensors is not None:
            out["safetensors"] = commit.safetensors
        if repo.base_models is not None:
            out["baseModels"] = repo.base_models
        return out

    def _info(self, repo: _Repo, commit: _Commit, query: dict) -> dict:
        return self._fields(repo, commit, blobs=_flag(query, "blobs"))

    def _list(self, h: _Handler, query: dict, token: str | None) -> None:
        def one(key):
            return (query.get(key) or [None])[0]

        with self._lock:
            repos = [r for r in self._repos.values() if not r.private or token is not None]
        rows = [(r, r.commits[r.refs["main"]]) for r in repos if "main" in r.refs]
        if one("author"):
            rows = [x for x in rows if x[0].repo_id.split("/")[0] == one("author")]
        if one("search"):
            rows = [x for x in rows if one("search").lower() in x[0].repo_id.lower()]
        if one("pipeline_tag"):
            rows = [x for x in rows if x[0].pipeline_tag == one("pipeline_tag")]
        for tag in query.get("filter", []):
            rows = [x for x in rows if tag in x[0].tags or tag == x[0].library_name or tag == x[0].repo_id]
        if one("num_parameters"):
            bounds = dict(part.split(":", 1) for part in one("num_parameters").split(","))
            lo = _count(bounds["min"]) if "min" in bounds else None
            hi = _count(bounds["max"]) if "max" in bounds else None
            rows = [x for x in rows if x[1].safetensors is not None
                    and (lo is None or x[1].safetensors["total"] >= lo)
                    and (hi is None or x[1].safetensors["total"] <= hi)]
        sort = one("sort")
        keys = {"downloads": lambda x: x[0].downloads, "likes": lambda x: x[0].likes,
                "lastModified": lambda x: x[1].last_modified, "createdAt": lambda x: x[0].created_at,
                "trendingScore": lambda x: x[0].likes}
        rows.sort(key=lambda x: x[0].repo_id)
        if sort in keys:
            rows.sort(key=keys[sort], reverse=True)
        limit = int(one("limit")) if one("limit") else self.page_size
        size = max(1, min(limit, self.page_size))
        start = int(one("cursor") or 0)
        page = rows[start:start + size]
        expand = query.get("expand", []) + query.get("expand[]", [])
        wanted = [f for f in expand if f in EXPANDABLE] if expand else list(DEFAULT_LIST_FIELDS)
        items = []
        for repo, commit in page:
            full = self._fields(repo, commit)
            items.append({"_id": full["_id"], "id": full["id"], **{k: full[k] for k in wanted if k in full}})
        headers = {}
        with self._lock:
            self.counters["listing_pages"] += 1
        if start + size < len(rows):
            params = [(k, v) for k, vs in query.items() if k != "cursor" for v in vs]
            params.append(("cursor", str(start + size)))
            headers["Link"] = f'<{self.endpoint}/api/models?{urlencode(params)}>; rel="next"'
        self._send_json(h, 200, items, headers=headers)

    def _tree(self, commit: _Commit, prefix: str, recursive: bool) -> list[dict]:
        prefix = prefix.strip("/")
        entries: dict[str, dict] = {}
        for f in commit.files.values():
            if prefix and not f.path.startswith(prefix + "/"):
                continue
            rel = f.path[len(prefix) + 1:] if prefix else f.path
            parts = rel.split("/")
            for i in range(1, len(parts)):  # folders on the way
                d = "/".join(([prefix] if prefix else []) + parts[:i])
                if recursive or i == 1:
                    entries.setdefault(d, {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(),
                                           "size": 0, "path": d})
            if recursive or len(parts) == 1:
                entries[f.path] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path,
                                   "lfs": {"oid": f.sha256, "size": f.size, "pointerSize": 134}}
        return [entries[k] for k in sorted(entries)]

    # ------------------------------------------------------------------------------------------------- files
    def _resolve(self, h: _Handler, method: str, repo_id: str, rev: str, filename: str, token: str | None) -> None:
        repo = self._repo(repo_id, token)
        commit = self._commit(repo, rev)
        if repo.gated and token is None:
            raise _HTTPError(401, f"Access to model {repo_id} is restricted. You must have access to it and be "
                             "authenticated to access it. Please log in.", "GatedRepo")
        f = commit.files.get(filename)
        if f is None:
            raise _HTTPError(404, f"Entry not found: {filename}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        start, end, status = 0, f.size - 1, 200
        rng = h.headers.get("Range")
        if rng and method == "GET":
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if m is None or (not m.group(1) and not m.group(2)):
                raise _HTTPError(416, f"bad range {rng}", None, {"Content-Range": f"bytes */{f.size}"})
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), f.size - 1) if m.group(2) else f.size - 1
            else:  # suffix range: the last n bytes
                start = max(0, f.size - int(m.group(2)))
            if start >= f.size or start > end:
                raise _HTTPError(416, f"range {rng} not satisfiable for {f.size} bytes", None,
                                 {"Content-Range": f"bytes */{f.size}"})
            status = 206
        length = end - start + 1 if f.size else 0
        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(length if method == "GET" else f.size))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("ETag", f'"{f.sha256}"')
        h.send_header("X-Linked-Etag", f'"{f.sha256}"')
        h.send_header("X-Linked-Size", str(f.size))
        h.send_header("X-Repo-Commit", commit.sha)
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{f.size}")
        h.end_headers()
        if method == "HEAD" or length == 0:
            return
        with open(f.local, "rb") as fh:
            fh.seek(start)
            left = length
            while left > 0:
                chunk = fh.read(min(left, 2**20))
                if not chunk:
                    break
                h.wfile.write(chunk)
                left -= len(chunk)
        with self._lock:
            self.counters["bytes_sent"] += length - left
            self.counters["file_bytes_sent"] += length - left

    def url(self, repo_id: str, filename: str, revision: str = "main") -> str:
        """The resolve URL of a file (for raw HTTP checks in tests)."""
        return f"{self.endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"


def _flag(query: dict, key: str) -> bool:
    return (query.get(key) or ["false"])[0].lower() in ("1", "true", "yes")
