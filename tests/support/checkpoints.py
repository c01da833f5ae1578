"""Builders of tiny checkpoints for tests (real files in every format ww-spectral reads).

    from support.checkpoints import (
        Raw, random_tensors, write_safetensors, write_sharded, write_hf_model_folder,
        write_torch_bin, write_malicious_pickle, write_hf_cache, raw_header,
    )

    tensors = random_tensors({"l0.weight": (64, 32), "l1.weight": (32, 16)}, seed=0)   # float32 arrays
    write_safetensors(tmp / "m.safetensors", tensors, dtype="BF16")                    # stored as bf16
    write_safetensors(tmp / "q.safetensors", {"w": Raw("F8_E4M3", (4, 4), bytes(16))})  # raw bytes
    folder = write_hf_model_folder(tmp / "org-model", tensors, n_shards=2, model_card={"license": "mit"})
    snapshot = write_hf_cache(tmp / "cache", "org/model", folder)                      # models--org--model/...

`write_safetensors` writes the format itself (8-byte LE header length, JSON padded to 8 bytes, data in
header order), so tests can also hand-craft damaged files with `raw_header`/`write_raw_safetensors`.
Values stored as F16/BF16 are rounded by numpy/ml_dtypes exactly as torch rounds them (round to nearest even).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

CODE_TO_NUMPY = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("bool"),
}
NUMPY_TO_CODE = {v: k for k, v in CODE_TO_NUMPY.items()}


@dataclass(frozen=True)
class Raw:
    """A tensor given as raw stored bytes (for F8/I32/packed codes, or codes numpy cannot express)."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes


def random_tensors(shapes: Mapping[str, tuple[int, ...]], *, seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    """float32 Gaussian tensors of the given shapes (reproducible from `seed`)."""
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * scale).astype(np.float32) for name, shape in shapes.items()}


def tiny_model_tensors(*, seed: int = 0) -> dict[str, np.ndarray]:
    """A small transformer-ish state dict: embedding, 2 blocks of attention/MLP matrices, norms, a conv."""
    shapes = {
        "model.embed_tokens.weight": (96, 32),
        "model.conv.weight": (16, 8, 3, 3),
        "lm_head.bias": (96,),
    }
    for i in range(2):
        shapes |= {
            f"model.layers.{i}.self_attn.q_proj.weight": (32, 32),
            f"model.layers.{i}.self_attn.k_proj.weight": (32, 32),
            f"model.layers.{i}.mlp.up_proj.weight": (64, 32),
            f"model.layers.{i}.mlp.down_proj.weight": (32, 64),
            f"model.layers.{i}.input_layernorm.weight": (32,),
        }
    return random_tensors(shapes, seed=seed)


def _encode(value, dtype: str | None) -> tuple[str, tuple[int, ...], bytes]:
    if isinstance(value, Raw):
        return value.dtype, tuple(value.shape), bytes(value.data)
    if type(value).__module__.startswith("torch"):
        import torch

        if value.dtype == torch.bfloat16:
            value = value.float().numpy().astype(ml_dtypes.bfloat16)
        else:
            value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if dtype is not None and arr.dtype.kind == "f" or (dtype is not None and arr.dtype == ml_dtypes.bfloat16):
        arr = arr.astype(CODE_TO_NUMPY[dtype])
    code = NUMPY_TO_CODE.get(arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype)
    if code is None:
        raise ValueError(f"no safetensors code for numpy dtype {arr.dtype}; use Raw(...)")
    arr = np.ascontiguousarray(arr.astype(CODE_TO_NUMPY[code], copy=False))
    return code, tuple(arr.shape), arr.tobytes()


def raw_header(header: Mapping) -> bytes:
    """The 8-byte length + JSON (space-padded to a multiple of 8) for an arbitrary header dict."""
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob


def write_raw_safetensors(path: str | os.PathLike, header: Mapping, data: bytes) -> Path:
    """Write any header dict (even a lying one) followed by `data` bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw_header(header) + data)
    return path


def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, object],
    *,
    dtype: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a valid .safetensors file.

    tensors: name -> numpy array (float32/float16/float64/ml_dtypes.bfloat16/ints/bool), torch tensor, or Raw.
    dtype: if given ("F32", "F16", "BF16", "F64"), float arrays are converted to it before writing.
    """
    header: dict = {}
    chunks: list[bytes] = []
    offset = 0
    for name, value in tensors.items():
        code, shape, data = _encode(value, dtype)
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = dict(metadata)
    return write_raw_safetensors(path, header, b"".join(chunks))


def stored_values(tensors: Mapping[str, np.ndarray], dtype: str | None) -> dict[str, np.ndarray]:
    """What a reader must return (as float64) for `tensors` written with `dtype`: the stored rounding, upcast."""
    out = {}
    for name, arr in tensors.items():
        a = np.asarray(arr)
        if dtype is not None and a.dtype.kind == "f":
            a = a.astype(CODE_TO_NUMPY[dtype])
        out[name] = a.astype(np.float64)
    return out


def write_sharded(
    folder: str | os.PathLike,
    tensors: Mapping[str, object],
    *,
    n_shards: int = 2,
    dtype: str | None = None,
    prefix: str = "model",
) -> Path:
    """Write `n_shards` files model-0000i-of-0000n.safetensors plus model.safetensors.index.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    groups = [names[i::n_shards] for i in range(n_shards)]
    weight_map: dict[str, str] = {}
    total = 0
    for i, group in enumerate(groups, start=1):
        fname = f"{prefix}-{i:05d}-of-{n_shards:05d}.safetensors"
        p = write_safetensors(folder / fname, {n: tensors[n] for n in group}, dtype=dtype)
        total += p.stat().st_size
        weight_map |= {n: fname for n in group}
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / f"{prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return folder


DEFAULT_CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 32,
                  "num_hidden_layers": 2, "torch_dtype": "float32"}


def write_hf_model_folder(
    folder: str | os.PathLike,
    tensors: Mapping[str, object],
    *,
    config: Mapping | None = None,
    model_card: Mapping | None = None,
    n_shards: int = 1,
    dtype: str | None = None,
    extra_files: Mapping[str, str | bytes] | None = None,
) -> Path:
    """An HF model folder: config.json (default DEFAULT_CONFIG), weights (model.safetensors or shards + index),
    an optional README.md model card whose YAML front matter holds `model_card` (flat key: value / lists),
    and `extra_files` (name -> text or bytes, e.g. tokenizer.json). Existing safetensors weights in `folder`
    are replaced."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("*.safetensors"), *folder.glob("*.safetensors.index.json")]:
        stale.unlink()  # re-writing a folder replaces its weights (no stale shards or index left behind)
    (folder / "config.json").write_text(json.dumps(dict(config if config is not None else DEFAULT_CONFIG)))
    if n_shards > 1:
        write_sharded(folder, tensors, n_shards=n_shards, dtype=dtype)
    else:
        write_safetensors(folder / "model.safetensors", tensors, dtype=dtype)
    if model_card is not None:
        lines = ["---"]
        for k, v in model_card.items():
            if isinstance(v, list | tuple):
                lines.append(f"{k}:")
                lines += [f"- {item}" for item in v]
            else:
                lines.append(f"{k}: {v}")
        lines += ["---", "", f"# {folder.name}", "", "A tiny test model."]
        (folder / "README.md").write_text("\n".join(lines) + "\n")
    for name, content in (extra_files or {}).items():
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
    return folder


def write_torch_bin(
    path: str | os.PathLike,
    tensors: Mapping[str, object],
    *,
    dtype: str | None = None,
    nest: str | None = None,
    legacy: bool = False,
    extra: Mapping | None = None,
) -> Path:
    """torch.save a state dict of torch tensors (numpy arrays converted; dtype "BF16"/"F16"/... converts floats).

    nest: wrap as {nest: state_dict, "epoch": 3} (e.g. "state_dict", "model"). legacy: the pre-zip format.
    extra: more top-level entries (plain Python values only).
    """
    import torch

    tdt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
    state = {}
    for name, value in tensors.items():
        t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
        if dtype is not None and t.is_floating_point():
            t = t.to(tdt[dtype])
        state[name] = t
    obj: dict = {nest: state, "epoch": 3} if nest else state
    if extra:
        obj |= dict(extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


class _Payload:
    """Unpickling this calls open(marker, "w"): it creates the marker file (proof that code ran)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_malicious_pickle(path: str | os.PathLike, marker: str | os.PathLike, *, legacy: bool = False,
                           protocol: int = 2) -> Path:
    """A .bin/.pt state dict whose unpickling would create `marker` (a reader must refuse it, never run it).

    legacy=False: torch's zip format (torch.save); legacy=True: a bare pickle stream. protocol: pickle protocol.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if legacy:  # no tensors: the payload is the first global the unpickler meets
        with open(path, "wb") as f:
            pickle.dump({"layer.weight": [[1.0, 2.0]], "payload": _Payload(str(marker))}, f, protocol=protocol)
    else:
        torch.save({"layer.weight": torch.ones(4, 4), "payload": _Payload(str(marker))}, path,
                   pickle_protocol=protocol)
    assert not Path(marker).exists()
    return path


def write_hf_cache(
    cache_dir: str | os.PathLike,
    repo_id: str,
    source_folder: str | os.PathLike,
    *,
    commit: str | None = None,
    branch: str = "main",
) -> Path:
    """Lay out `source_folder`'s files as an HF hub cache entry and return the snapshot folder.

    cache_dir/models--org--name/{refs/<branch>, blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/..}.
    commit: 40-hex commit id (default: a hash of the files' contents).
    """
    src = Path(source_folder)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    if commit is None:
        h = hashlib.sha1()
        for p in files:
            h.update(p.relative_to(src).as_posix().encode() + b"\0" + p.read_bytes())
        commit = h.hexdigest()
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "blobs").mkdir(exist_ok=True)
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / branch).write_text(commit)
    for p in files:
        data = p.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        link = snap / p.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snap
