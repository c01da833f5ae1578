"""Resolve a SOURCE to concrete weight files (a CheckpointRef), or to an in-memory mapping.

SOURCE kinds, tried in this order:
  nn.Module / Mapping (Python only)         -> kind "module" / "mapping"
  an existing path:
    file.safetensors                          -> that file
    model.safetensors.index.json              -> its folder's shards
    file.bin / .pt / .pth / .ckpt             -> a torch state dict
    models--org--name (cached repo)           -> snapshots/<refs/REVISION or refs/main>
    .../models--org--name/snapshots/<sha>     -> that snapshot, repo_id org/name, revision <sha>
    any other folder                          -> its weight files (see `find_weight_files`)
  "org/name[@rev]" that is not a path        -> downloaded from the hub (weights + config.json only)

Local revisions are content hashes (`content_revision`): editing weights makes a new revision.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CheckpointError, NoWeightsError, SourceNotFoundError
from .records import CheckpointRef

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
ST_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
# Files with weight-like suffixes that are not model weights (HF Trainer checkpoint folders).
NOT_WEIGHTS = re.compile(r"^(training_args\.bin|optimizer\.(pt|bin)|scheduler\.pt|scaler\.pt|rng_state.*\.pth)$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")

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


@dataclass(frozen=True)
class ResolvedSource:
    """A resolved SOURCE: the ref, plus the in-memory mapping for module/mapping sources."""

    ref: CheckpointRef
    mapping: Mapping | None = None


def parse_model_id(model_id: str) -> tuple[str, str | None]:
    """Split "org/name@rev" into ("org/name", "rev"); no "@" gives ("org/name", None)."""
    repo_id, sep, rev = model_id.partition("@")
    return repo_id, (rev or None) if sep else None


def is_hub_id(text: str) -> bool:
    """True when `text` looks like a hub repo id "org/name[@rev]" (checked only when no such path exists)."""
    return bool(HUB_ID.match(text)) and not text.startswith((".", "/", "~"))


def _hash_file(h, path: Path) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}\0{size}\0".encode())
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
            return
        start = 0
        if path.suffix == ".safetensors":
            prefix = f.read(8)
            n = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
            if 0 < n <= size - 8:
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
    fine-tune or dtype change alters the sampled bytes.
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
            value = value.detach().cpu()
            shape, dt = tuple(value.shape), str(value.dtype)
            raw = value.contiguous().view(-1).view(__import__("torch").uint8).numpy()
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


def _listing(folder: Path, limit: int = 20) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        return "(unreadable)"
    if not names:
        return "nothing (the folder is empty)"
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _index_files(folder: Path, index_name: str) -> list[Path]:
    index = folder / index_name
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = list(dict.fromkeys(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index}: not a valid index ({type(exc).__name__}: {exc}); re-download it") from None
    files = [folder / n for n in sorted(names)]
    missing = [str(f.name) for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{index} lists shard(s) {', '.join(missing)} that are missing from {folder}; "
                              "re-download the model (all shards)")
    return files


def find_weight_files(folder: str | os.PathLike) -> tuple[list[str], str]:
    """The weight files of a model folder, in load order, and their kind ("safetensors" or "torch").

    Precedence: model.safetensors.index.json, else model.safetensors, else every *.safetensors; only when
    there is no safetensors file: pytorch_model.bin.index.json, else every *.bin/*.pt/*.pth/*.ckpt
    (Trainer files such as optimizer.pt are ignored). Raises NoWeightsError listing what was found.
    """
    folder = Path(folder)
    if (folder / ST_INDEX).is_file():
        return [str(f) for f in _index_files(folder, ST_INDEX)], "safetensors"
    if (folder / "model.safetensors").is_file():
        return [str(folder / "model.safetensors")], "safetensors"
    st = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SAFETENSORS_SUFFIXES)
    if st:
        return [str(p) for p in st], "safetensors"
    if (folder / BIN_INDEX).is_file():
        return [str(f) for f in _index_files(folder, BIN_INDEX)], "torch"
    pt = sorted(p for p in folder.iterdir()
                if p.is_file() and p.suffix in TORCH_SUFFIXES and not NOT_WEIGHTS.match(p.name))
    if pt:
        return [str(p) for p in pt], "torch"
    hint = ""
    if any(p.name.startswith("models--") for p in folder.iterdir()):
        hint = " It looks like a Hugging Face cache root: pass one models--org--name folder (or scan the folder)."
    raise NoWeightsError(
        f"{folder}: no supported weight files (.safetensors, pytorch_model*.bin, .pt, .pth); found "
        f"{_listing(folder)}.{hint}"
    )


def read_config(folder: Path) -> dict:
    """Parsed config.json beside the weights, or {} (absent or unreadable: the config is informative only)."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _cached_repo_snapshot(repo_dir: Path, revision: str | None) -> Path:
    rev = revision or "main"
    snapshots = repo_dir / "snapshots"
    ref = repo_dir / "refs" / rev
    if ref.is_file():
        sha = ref.read_text().strip()
    elif (snapshots / rev).is_dir():
        sha = rev
    else:
        have = sorted(p.name for p in (repo_dir / "refs").glob("**/*") if p.is_file()) if (repo_dir / "refs").is_dir() \
            else []
        raise SourceNotFoundError(f"{repo_dir}: revision {rev!r} is not in this cached repo (refs: {have or 'none'}); "
                                  "pass an existing revision or download it again")
    snap = snapshots / sha
    if not snap.is_dir():
        raise SourceNotFoundError(f"{repo_dir}: refs/{rev} points to snapshot {sha} which is missing; "
                                  "download the model again")
    return snap


def repo_id_of_cache_dir(name: str) -> str | None:
    """"models--org--name" -> "org/name"; None for other names."""
    if not name.startswith("models--"):
        return None
    return name[len("models--"):].replace("--", "/")


def _local_folder(folder: Path, revision: str | None) -> CheckpointRef:
    repo_id = repo_id_of_cache_dir(folder.name)
    if repo_id is not None and (folder / "snapshots").is_dir():  # a cached repo
        snap = _cached_repo_snapshot(folder, revision)
        files, kind = find_weight_files(snap)
        return CheckpointRef(repo_id=repo_id, revision=snap.name, files=tuple(files), kind=kind,
                             config=read_config(snap))
    files, kind = find_weight_files(folder)
    parent_repo = repo_id_of_cache_dir(folder.parent.parent.name) if folder.parent.name == "snapshots" else None
    if parent_repo is not None:  # a cache snapshot: its name is the commit sha
        return CheckpointRef(repo_id=parent_repo, revision=folder.name, files=tuple(files), kind=kind,
                             config=read_config(folder))
    return CheckpointRef(repo_id=folder.name, revision=content_revision(files), files=tuple(files), kind=kind,
                         config=read_config(folder))


GENERIC_STEMS = ("model", "pytorch_model", "consolidated", "diffusion_pytorch_model")


def _local_file(path: Path) -> CheckpointRef:
    if path.name.endswith(".index.json"):
        return _local_folder(path.parent, None)
    if path.suffix in SAFETENSORS_SUFFIXES:
        kind = "safetensors"
    elif path.suffix in TORCH_SUFFIXES:
        kind = "torch"
    else:
        raise NoWeightsError(f"{path}: not a supported weight file (use .safetensors, .bin, .pt or .pth)")
    stem = path.name.split(".")[0]
    repo_id = path.parent.name if (stem in GENERIC_STEMS or stem.startswith("model-")) and path.parent.name else \
        path.stem
    return CheckpointRef(repo_id=repo_id, revision=content_revision([path]), files=(str(path),), kind=kind,
                         config=read_config(path.parent))


def resolve_source(
    source,
    *,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | None = None,
) -> ResolvedSource:
    """Resolve any SOURCE kind (module docstring) to a ResolvedSource; hub ids are downloaded.

    Raises SourceNotFoundError (naming the kinds accepted), NoWeightsError, CheckpointError, HubError.
    """
    if type(source).__module__.startswith("torch") and hasattr(source, "state_dict"):
        state = dict(source.state_dict())
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
    if path.exists():
        path = path.resolve()
        if path.is_dir():
            return ResolvedSource(_local_folder(path, revision))
        return ResolvedSource(_local_file(path))
    if isinstance(source, str) and is_hub_id(text):
        from . import hub

        repo_id, rev = parse_model_id(text)
        try:
            return ResolvedSource(hub.download_weights(repo_id, revision=revision or rev, endpoint=endpoint,
                                                       token=token, cache_dir=cache_dir))
        except SourceNotFoundError as exc:  # say both: a typo'd local path looks like a hub id
            raise SourceNotFoundError(f"{text}: no such local file or folder, and on the hub: {exc}") from exc
    raise SourceNotFoundError(f"{text}: no such file or folder, and not a hub id org/name[@revision]; pass "
                              f"{KINDS_ACCEPTED}")
