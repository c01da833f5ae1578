"""Resolve a LOCAL source to concrete weight files (a CheckpointRef), or to an in-memory mapping.

Local SOURCE kinds, tried in this order (hub ids "org/name[@rev]" are ww_spectral/hub_source.py's;
ww_spectral/checkpoint.py's open_checkpoint dispatches between the two):
  nn.Module / Mapping (Python only)         -> kind "module" / "mapping"
  an existing path:
    file.safetensors                          -> that file
    model.safetensors.index.json              -> its folder's shards
    file.bin / .pt / .pth / .ckpt             -> a torch state dict
    models--org--name (cached repo)           -> snapshots/<refs/REVISION or refs/main>
    .../models--org--name/snapshots/<sha>     -> that snapshot, repo_id org/name, revision <sha>
    any other folder                          -> its weight files (ww_spectral/layout.py's rule)

Nothing outside the model is read: every weight file, index and config.json must lie (links followed)
inside the folder named, or for an HF cache snapshot inside its models--org--name folder (snapshot files
are links into ../../blobs). allow_external_links=True lifts that. Weight files must be regular files.

A PEFT adapter folder (adapter_config.json + adapter_model.safetensors) resolves like any folder; its
adapter_config.json rides in the ref's config under adapters.ADAPTER_CONFIG_KEY (ww_spectral/adapters.py).

Local revisions are content hashes (`content_revision`): editing weights makes a new revision.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .adapters import ADAPTER_CONFIG_FILE, ADAPTER_CONFIG_KEY, with_adapter_config
from .errors import CheckpointError, NoWeightsError, SourceNotFoundError
from .layout import (
    CONFIG,
    GGUF_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    TORCH_SUFFIXES,
    check_inside,
    check_revision,
    is_commit_sha,
    read_config,
    read_index,
    select_weight_files,
)
from .progress import safe_text
from .readers.mapping import is_torch_module, module_state
from .records import CheckpointRef
from .untrusted import check_regular_file, open_regular, read_bytes_bounded

KINDS_ACCEPTED = (
    "a .safetensors file, a folder of (sharded) safetensors or an HF model folder, a pytorch_model*.bin/.pt/.pth "
    "state dict, an HF cache snapshot or models--org--name folder, a hub id org/name[@revision], "
    "or (in Python) an nn.Module or a mapping of name -> array"
)

# Content hash: files up to FULL_HASH_BYTES are hashed whole; bigger ones by their safetensors header
# (names, dtypes, shapes, offsets) plus SAMPLES evenly spaced SAMPLE_BYTES chunks of the data and the tail.
FULL_HASH_BYTES = 64 * 2**20
SAMPLES = 64
SAMPLE_BYTES = 64 * 2**10
# A cache refs/<branch> file holds one 40-hex commit id (+ newline).
REF_FILE_MAX_BYTES = 256
GENERIC_STEMS = ("model", "pytorch_model", "consolidated", "diffusion_pytorch_model")


@dataclass(frozen=True)
class ResolvedSource:
    """A resolved SOURCE: the ref, plus the in-memory mapping for module/mapping sources."""

    ref: CheckpointRef
    mapping: Mapping | None = None


# --------------------------------------------------------------------------------------------------------------
# content revisions


def _hash_file(h, path: Path) -> None:
    with open_regular(path, what="weight file") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(f"{path.name}\0{size}\0".encode())
        if size <= FULL_HASH_BYTES:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
            return
        start = 0
        if path.suffix == ".safetensors":
            prefix = f.read(8)
            n = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
            if 0 < n <= min(size - 8, FULL_HASH_BYTES):
                h.update(prefix + f.read(n))  # every tensor's name, dtype, shape and offsets
                start = 8 + n
        span = size - start
        for i in range(SAMPLES + 1):  # SAMPLES evenly spaced chunks, the last one ending at EOF
            f.seek(start + (span - SAMPLE_BYTES) * i // SAMPLES if span > SAMPLE_BYTES else start)
            h.update(f.read(SAMPLE_BYTES))


def content_revision(files: Sequence[str | os.PathLike]) -> str:
    """A stable content hash of weight files: "local-" + 32 hex chars.

    Hashes each file's name and size, then its bytes: all of them up to 64 MiB, else the safetensors header
    (so any change of name/shape/dtype/layout shows) plus 64 evenly spaced 64 KiB samples and the tail.
    Cheap for huge files (~4 MiB read per file); independent of mtimes and absolute paths. Trade-off: an
    edit of a few bytes inside an unsampled region of a file above 64 MiB keeps the hash; any re-export,
    fine-tune or dtype change alters the sampled bytes. Regular files only (CheckpointError otherwise).
    """
    h = hashlib.sha256(b"ww-spectral-content-v1\0")
    for p in sorted((Path(f) for f in files), key=lambda p: p.name):
        _hash_file(h, p)
    return "local-" + h.hexdigest()[:32]


def mapping_revision(mapping: Mapping) -> str:
    """Content hash of an in-memory mapping (names, shapes, dtypes, bytes; sampled above 64 MiB per tensor)."""
    h = hashlib.sha256(b"ww-spectral-mapping-v1\0")
    for name, value in mapping.items():
        if type(value).__module__.startswith("torch"):
            import torch  # only reached with torch tensors in hand

            value = value.detach().cpu()
            shape, dt = tuple(value.shape), str(value.dtype)
            raw = value.contiguous().view(-1).view(torch.uint8).numpy()
        else:
            arr = np.ascontiguousarray(np.asarray(value))
            shape, dt = arr.shape, str(arr.dtype)
            raw = arr.reshape(-1).view(np.uint8)
        h.update(f"{name}\0{shape}\0{dt}\0".encode())
        if raw.nbytes <= FULL_HASH_BYTES:
            h.update(raw.tobytes())
        else:
            step = raw.nbytes // SAMPLES
            for i in range(SAMPLES):
                h.update(raw[i * step: i * step + SAMPLE_BYTES].tobytes())
    return "local-" + h.hexdigest()[:32]


# --------------------------------------------------------------------------------------------------------------
# folders


def _listing(folder: Path, limit: int = 20) -> str:
    try:
        names = sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(folder))
    except OSError:
        return "(unreadable)"
    if not names:
        return "nothing (the folder is empty)"
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return safe_text(", ".join(names[:limit]), limit=2000) + more


def _file_names(folder: Path) -> list[str]:
    """Names of the folder's entries that are not folders (files, links to files, also FIFOs/devices: those
    are refused by name later instead of being silently skipped)."""
    try:
        return [e.name for e in os.scandir(folder) if not e.is_dir()]
    except OSError as exc:
        raise SourceNotFoundError(f"{folder}: cannot list the folder ({exc.strerror or exc}); check its "
                                  "permissions") from None


def weight_files(folder: str | os.PathLike, *, root: str | os.PathLike | None = None,
                 allow_external_links: bool = False, weight_file: str | None = None) -> tuple[list[str], str]:
    """The weight files of a model folder, in load order, and their kind ("safetensors" or "torch").

    Which files: ww_spectral/layout.py's select_weight_files (an index's shards from the index itself).
    root: what every file, the index included, must lie inside (default: the folder); each weight file
    must be a regular file. Raises NoWeightsError listing what was found, CheckpointError for a bad
    index, a missing shard, a link leading outside root, a FIFO/device.
    """
    folder = Path(folder)
    root = folder if root is None else Path(root)
    chosen = select_weight_files(_file_names(folder), weight_file=weight_file)
    if chosen.kind == "none":
        hint = ""
        if any(n.startswith("models--") for n in os.listdir(folder)):
            hint = " It looks like a Hugging Face cache root: pass one models--org--name folder (or scan the folder)."
        raise NoWeightsError(f"{folder}: no supported weight files (.safetensors, pytorch_model*.bin, .pt, .pth); "
                             f"found {_listing(folder)}.{hint}")
    names = chosen.files
    if chosen.index is not None:
        index = check_inside(folder / chosen.index, root, allow_external_links=allow_external_links,
                             what="index file")
        names = read_index(index, index_name=chosen.index, allow_external_links=allow_external_links)
        missing = [n for n in names if not os.path.lexists(folder / n)]
        if missing:
            raise CheckpointError(f"{index} lists shard(s) {safe_text(', '.join(missing))} that are missing from "
                                  f"{folder}; re-download the model (all shards)")
    files = []
    for name in names:
        path = check_inside(folder / name, root, allow_external_links=allow_external_links, what="weight file")
        check_regular_file(path, what="weight file")
        files.append(str(path))
    return files, chosen.kind


def repo_id_of_cache_dir(name: str) -> str | None:
    """"models--org--name" -> "org/name"; None for other names."""
    if not name.startswith("models--"):
        return None
    return name[len("models--"):].replace("--", "/")


def _cache_repo_of(folder: Path) -> tuple[Path, str] | None:
    """(models--org--name folder, "org/name") when `folder` is a snapshot of an HF cache entry, else None."""
    if folder.parent.name != "snapshots":
        return None
    repo_id = repo_id_of_cache_dir(folder.parent.parent.name)
    return (folder.parent.parent, repo_id) if repo_id is not None else None


def _read_ref(ref: Path, repo_dir: Path, allow_external_links: bool) -> str:
    """The commit a cache refs/ file names. Its content is never shown: only a 40-hex id is accepted."""
    check_inside(ref, repo_dir, allow_external_links=allow_external_links, what="cache ref")
    sha = read_bytes_bounded(ref, max_bytes=REF_FILE_MAX_BYTES, what="cache ref").decode("ascii", "replace").strip()
    if not is_commit_sha(sha):
        raise CheckpointError(f"{ref}: does not hold a 40-hex commit id, so it is not a hub cache ref; the cache "
                              "entry is damaged - download the model again")
    return sha


def cached_repo_snapshot(repo_dir: Path, revision: str | None, *, allow_external_links: bool = False) -> Path:
    """The snapshot folder of a cached repo (models--org--name) for `revision` (branch, tag or commit;
    default main). The revision is validated before it becomes a path (layout.check_revision)."""
    rev = check_revision(revision) or "main"
    snapshots = repo_dir / "snapshots"
    ref = repo_dir / "refs" / rev
    if ref.is_file():
        sha = _read_ref(ref, repo_dir, allow_external_links)
    elif is_commit_sha(rev) and (snapshots / rev).is_dir():
        sha = rev
    else:
        refs = repo_dir / "refs"
        have = sorted(p.relative_to(refs).as_posix() for p in refs.glob("**/*") if p.is_file()) \
            if refs.is_dir() else []
        raise SourceNotFoundError(f"{repo_dir}: revision {rev!r} is not in this cached repo (refs: "
                                  f"{safe_text(have or 'none')}); pass an existing revision or download it again")
    snap = snapshots / sha
    if not snap.is_dir():
        raise SourceNotFoundError(f"{repo_dir}: refs/{rev} points to snapshot {sha} which is missing; "
                                  "download the model again")
    return snap


def _config(folder: Path, *, root: Path, allow: bool) -> dict:
    """config.json of a model folder, with a PEFT adapter's adapter_config.json under
    adapters.ADAPTER_CONFIG_KEY when there is one (both bounded and checked like any config)."""
    return with_adapter_config(read_config(folder / CONFIG, root=root, allow_external_links=allow),
                               read_config(folder / ADAPTER_CONFIG_FILE, root=root, allow_external_links=allow))


def _hashed(files: Sequence[str], folder: Path, config: dict) -> list[str]:
    """The files a local revision hashes: the weights, and an adapter's config (its lora_alpha and r scale
    every update, so editing it makes a new revision)."""
    return [*files, str(folder / ADAPTER_CONFIG_FILE)] if ADAPTER_CONFIG_KEY in config else list(files)


def _ref(folder: Path, *, root: Path, repo_id: str, revision: str | None, allow: bool,
         weight_file: str | None = None) -> CheckpointRef:
    files, kind = weight_files(folder, root=root, allow_external_links=allow, weight_file=weight_file)
    config = _config(folder, root=root, allow=allow)
    return CheckpointRef(repo_id=repo_id, revision=revision or content_revision(_hashed(files, folder, config)),
                         files=tuple(files), kind=kind, config=config)


def folder_ref(folder: str | os.PathLike, revision: str | None = None, *,
               allow_external_links: bool = False, weight_file: str | None = None) -> CheckpointRef:
    """The CheckpointRef of a local folder: a cached repo (models--org--name), a cache snapshot, or any
    model folder (revision: content hash). `revision` selects the snapshot of a cached repo; weight_file
    picks one weight file by name (layout.select_weight_files)."""
    folder = Path(folder).resolve()
    repo_id = repo_id_of_cache_dir(folder.name)
    where = {"allow": allow_external_links, "weight_file": weight_file}
    if repo_id is not None and (folder / "snapshots").is_dir():  # a cached repo
        snap = cached_repo_snapshot(folder, revision, allow_external_links=allow_external_links)
        return _ref(snap, root=folder, repo_id=repo_id, revision=snap.name, **where)
    cached = _cache_repo_of(folder)
    if cached is not None:  # a cache snapshot: its name is the commit sha; its files link into ../../blobs
        return _ref(folder, root=cached[0], repo_id=cached[1], revision=folder.name, **where)
    return _ref(folder, root=folder, repo_id=folder.name, revision=None, **where)


def _file_ref(path: Path, allow: bool) -> CheckpointRef:
    """One weight file (or an index naming its folder's shards). The file's own folder is its root (the
    repo folder for a file of a cache snapshot); the file may be a link inside that root."""
    if path.name.endswith(".index.json"):
        return folder_ref(path.parent, allow_external_links=allow)
    if path.suffix in SAFETENSORS_SUFFIXES:
        kind = "safetensors"
    elif path.suffix in TORCH_SUFFIXES:
        kind = "torch"
    elif path.suffix.lower() in GGUF_SUFFIXES:
        kind = "gguf"
    else:
        raise NoWeightsError(f"{path}: not a supported weight file (use .safetensors, .bin, .pt, .pth or .gguf)")
    cached = _cache_repo_of(path.parent)
    root = cached[0] if cached is not None else path.parent
    check_inside(path, root, allow_external_links=allow, what="weight file")
    check_regular_file(path, what="weight file")
    config = _config(path.parent, root=root, allow=allow)
    if cached is not None:
        return CheckpointRef(repo_id=cached[1], revision=path.parent.name, files=(str(path),), kind=kind,
                             config=config)
    stem = path.name.split(".")[0]
    repo_id = path.parent.name if (stem in GENERIC_STEMS or stem.startswith("model-")) and path.parent.name else \
        path.stem
    return CheckpointRef(repo_id=repo_id, revision=content_revision(_hashed([str(path)], path.parent, config)),
                         files=(str(path),), kind=kind, config=config)


def resolve_source(source, *, revision: str | None = None, allow_external_links: bool = False,
                   weight_file: str | None = None) -> ResolvedSource:
    """Resolve a local SOURCE (module doc: module, mapping, file, folder, cache entry) to a ResolvedSource.

    revision: selects the snapshot of a cached repo (models--org--name). allow_external_links: read files
    a folder links to outside itself. weight_file: which weight file of a folder (by name). Raises SourceNotFoundError (naming the kinds accepted),
    NoWeightsError, CheckpointError, OptionError (an unsafe revision).
    """
    if is_torch_module(source):  # any nn.Module, whatever module its class is defined in
        state = module_state(source)
        return ResolvedSource(
            CheckpointRef(repo_id=type(source).__name__, revision=mapping_revision(state), files=(), kind="module"),
            state,
        )
    if isinstance(source, Mapping):
        return ResolvedSource(
            CheckpointRef(repo_id="mapping", revision=mapping_revision(source), files=(), kind="mapping"),
            source,
        )
    if not isinstance(source, str | os.PathLike):
        raise SourceNotFoundError(f"SOURCE of type {type(source).__name__} is not supported; pass {KINDS_ACCEPTED}")
    text = os.fspath(source)
    path = Path(text).expanduser()
    if not path.exists():
        raise SourceNotFoundError(f"{safe_text(text)}: no such file or folder, and not a hub id "
                                  f"org/name[@revision]; pass {KINDS_ACCEPTED}")
    if path.is_dir():
        return ResolvedSource(folder_ref(path, revision, allow_external_links=allow_external_links,
                                         weight_file=weight_file))
    # The folder is resolved, not the file: a link's own name (and suffix) is what the user named.
    return ResolvedSource(_file_ref(path.parent.resolve() / path.name, allow_external_links))
