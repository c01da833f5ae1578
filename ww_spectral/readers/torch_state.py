"""PyTorch state-dict reader (.bin / .pt / .pth): torch.load(weights_only=True) only, never plain pickle.

`weights_only=True` restricts unpickling to tensors, containers and primitive types; a file whose pickle
needs any other global (a class, a function - e.g. a payload that would run code) is refused with
UnsafeCheckpointError before anything executes. `mmap=True` keeps tensor storages on disk (zip format,
torch >= 1.6) so peak memory stays near one tensor; the legacy (pre-zip) format cannot be mapped and is
loaded whole, which is the best torch allows for it.

Before torch.load sees a file it is checked against what it may cost (limits: ww_spectral/untrusted.py):
  - regular files only (a FIFO or device is refused, never opened by torch);
  - zip archives: every member stored uncompressed (torch.save never compresses; a deflated member is how
    a zip bomb hides), inside the file, data.pkl at most PICKLE_MAX_BYTES;
  - the pickle program is first walked by a scanner whose every global is an inert stub (nothing is
    imported or run), collecting each storage's declared size and each tensor's shape/strides/offset:
    a storage may not declare more bytes than its zip member (or, legacy format, than the file) holds,
    and a tensor's offset + extent must fit its storage. A view holding more elements than its storage
    (zero or overlapping strides) is allowed up to PICKLE_VIEW_MAX_BYTES materialised;
  - after loading, the same geometry rule is checked on the real tensors (it covers every rebuild path),
    and nested dicts are flattened iteratively: depth, cycles and the number of keys are bounded.
Every failure is one CheckpointError line naming the file and the fix.

Checkpoints that nest the weights under "state_dict", "model", "module" or "model_state_dict" are
unwrapped; nested dicts are flattened with "." (e.g. {"encoder": {"w": t}} -> "encoder.w");
non-tensor entries (epoch counters, optimizer step numbers) are ignored.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import dtypes
from ..errors import CheckpointError, UnsafeCheckpointError
from ..records import TensorInfo
from ..untrusted import (
    INT64_MAX,
    PICKLE_MAX_BYTES,
    PICKLE_MAX_DEPTH,
    PICKLE_MAX_KEYS,
    PICKLE_MAX_TENSORS,
    PICKLE_VIEW_MAX_BYTES,
    open_regular,
)

NEST_KEYS = ("state_dict", "model_state_dict", "model", "module")

ZIP_MAGIC = b"PK\x03\x04"  # torch's own test for the zip format (first bytes of the file)
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION
FIX = "re-download it, or convert it to .safetensors with code you trust"


def _fail(path: str, problem: str, fix: str = FIX) -> CheckpointError:
    return CheckpointError(f"{path}: {problem}; {fix}")


# ---------------------------------------------------------------------------------------------------
# Geometry: the one rule for "does this tensor fit its storage", used on declared and on loaded tensors.


def geometry_problem(shape, stride, offset: int, itemsize: int, storage_bytes: int) -> str | None:
    """Why a strided tensor (elements of `itemsize` bytes) cannot be read from a storage of `storage_bytes`
    bytes, or None. The last element must lie inside the storage, and materialising it may cost more than
    the storage only up to PICKLE_VIEW_MAX_BYTES (zero/overlapping strides)."""
    numel = 1
    for d in shape:
        numel *= d
    if any(d < 0 for d in shape):
        return f"negative dimensions in shape {tuple(shape)}"
    if numel == 0:
        return None
    if any(st < 0 for st in stride) or offset < 0:
        return f"negative strides {tuple(stride)} or offset {offset}"
    end = (offset + 1 + sum((d - 1) * st for d, st in zip(shape, stride))) * itemsize
    if end > storage_bytes:
        return (f"shape {tuple(shape)}, strides {tuple(stride)} and offset {offset} reach byte {end} of a "
                f"{storage_bytes}-byte storage")
    size = numel * itemsize
    if size > storage_bytes and size > PICKLE_VIEW_MAX_BYTES:
        return (f"a view of a {storage_bytes}-byte storage (zero or overlapping strides {tuple(stride)}) would "
                f"expand to {size} bytes, over the {PICKLE_VIEW_MAX_BYTES}-byte limit for such views")
    return None


def _small_int(value) -> bool:
    """An int a tensor field can hold (int64): bigger ones are left to torch, which refuses them."""
    return isinstance(value, int) and not isinstance(value, bool) and -INT64_MAX <= value <= INT64_MAX


def _int_tuple(value) -> tuple[int, ...] | None:
    if isinstance(value, tuple | list) and len(value) <= 64 and all(_small_int(v) for v in value):
        return tuple(value)
    return None


# ---------------------------------------------------------------------------------------------------
# The pre-scan: the pickle program walked with inert stubs in place of every global.


@dataclass(frozen=True)
class StorageDecl:
    """A storage as the pickle declares it: its key (zip member data/<key>), element size and count."""

    key: str
    itemsize: int
    numel: int

    @property
    def nbytes(self) -> int:
        return self.itemsize * self.numel


class _Stub:
    """Stands for any global the pickle names; calling, building or filling it does nothing at all."""

    qualname = ("", "")

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass

    def __setitem__(self, key, value) -> None:
        pass

    def append(self, value) -> None:
        pass

    def extend(self, values) -> None:
        pass


class _StorageStub:
    def __init__(self, decl: StorageDecl) -> None:
        self.decl = decl


_REBUILD_TENSOR = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")}


def _storage_itemsize(stub) -> int | None:
    """Element size of a storage type global (torch.FloatStorage -> 4), None for anything else."""
    module, name = getattr(stub, "qualname", ("", ""))
    if module != "torch" or not name.endswith("Storage"):
        return None
    if name == "UntypedStorage":
        return 1
    import torch

    with warnings.catch_warnings():  # "TypedStorage is deprecated": we only read its dtype
        warnings.simplefilter("ignore", UserWarning)
        dtype = getattr(getattr(torch, name, None), "dtype", None)
    return torch._utils._element_size(dtype) if isinstance(dtype, torch.dtype) else None


class _Scanner(pickle.Unpickler):
    """Unpickler that resolves every global to a fresh _Stub subclass and records storages and tensors.

    Nothing is imported and no callable of the file's choosing runs: REDUCE on a stub only stores its
    arguments. Used to learn what the checkpoint declares before torch.load allocates anything.
    """

    def __init__(self, file, path: str, storages: dict[str, StorageDecl], counts: list[int]) -> None:
        super().__init__(file)
        self._path = path
        self._storages = storages
        self._counts = counts  # [tensors seen]
        self._types: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        key = (str(module), str(name))
        cls = self._types.get(key)
        if cls is None:
            if key in _REBUILD_TENSOR:
                cls = type("_TensorStub", (_Stub,), {"qualname": key, "__init__": self._tensor_init()})
            else:
                cls = type("_GlobalStub", (_Stub,), {"qualname": key})
            self._types[key] = cls
        return cls

    def _tensor_init(self):
        scanner = self

        def init(stub, *args, **kwargs) -> None:
            scanner._counts[0] += 1
            if scanner._counts[0] > PICKLE_MAX_TENSORS:
                raise _fail(scanner._path, f"more than {PICKLE_MAX_TENSORS} tensors in one file, over the limit",
                            "if it is genuine, re-save it in shards (save_pretrained(max_shard_size=...))")
            if len(args) < 4 or not isinstance(args[0], _StorageStub):
                return  # an unusual form: the check after loading covers it
            decl = args[0].decl
            offset, shape, stride = args[1], _int_tuple(args[2]), _int_tuple(args[3])
            if not _small_int(offset) or shape is None or stride is None or len(shape) != len(stride):
                return
            problem = geometry_problem(shape, stride, offset, decl.itemsize, decl.nbytes)
            if problem:
                raise _fail(scanner._path, f"tensor #{scanner._counts[0]} (storage {decl.key!r}): {problem}",
                            "the file lies about its tensors; " + FIX)

        return init

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) < 5:
            raise _fail(self._path, "a persistent id that is not a storage record")
        kind = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            return _Stub()  # e.g. legacy "module" records: torch judges them
        _, storage_type, key, _location, numel = pid[:5]
        itemsize = _storage_itemsize(storage_type)
        if itemsize is None:
            raise _fail(self._path, f"a storage of unknown type {getattr(storage_type, 'qualname', '?')!r:.100}")
        if not isinstance(key, str) or len(key) > 256 or not _small_int(numel) or not 0 <= numel <= INT64_MAX // 16:
            raise _fail(self._path, "a storage record with a malformed key or element count")
        old = self._storages.get(key)
        decl = StorageDecl(key, itemsize, numel)
        if old is None or old.nbytes < decl.nbytes:
            self._storages[key] = decl
        return _StorageStub(self._storages[key])


def _check_lengths(program: bytes, path: str) -> None:
    """Walk one pickle's opcodes (up to STOP) without building anything: every length-prefixed operand
    must fit in the bytes that follow it. CPython 3.11's C unpickler allocates a BINBYTES/BYTEARRAY8
    operand at its declared size before reading it, so a 7-byte program could ask for gigabytes."""
    try:
        for _ in pickletools.genops(io.BytesIO(program)):
            pass
    except Exception as exc:  # noqa: BLE001 - any malformed opcode stream: one line, nothing executed
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise _fail(path, f"not a readable PyTorch checkpoint (pickle: {text}); nothing in it was executed") \
            from None


def _scan(data: io.BytesIO, path: str, storages: dict[str, StorageDecl], counts: list[int]):
    """One pickle from `data` (at its position) through the stub scanner; its (stubbed) object."""
    _check_lengths(data.getbuffer()[data.tell():].tobytes(), path)
    try:
        return _Scanner(data, path, storages, counts).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, MemoryError, RecursionError, UnicodeDecodeError) as exc:
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise _fail(path, f"not a readable PyTorch checkpoint ({text}); nothing in it was executed") from None


def _check_zip(path: str, f, size: int) -> None:
    """Refuse a zip whose members are compressed, overlap the end, repeat, or whose storages lie about size."""
    try:
        with zipfile.ZipFile(f) as z:
            infos = z.infolist()
            if not infos:
                raise _fail(path, "an empty zip archive, not a PyTorch checkpoint")
            if len(infos) > PICKLE_MAX_TENSORS + 64:
                raise _fail(path, f"{len(infos)} zip members, over the limit of {PICKLE_MAX_TENSORS + 64}")
            members: dict[str, zipfile.ZipInfo] = {}
            for info in infos:
                if info.filename in members:
                    raise _fail(path, f"zip member {info.filename!r:.100} appears twice")
                members[info.filename] = info
                if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                    raise _fail(path, f"zip member {info.filename!r:.100} is compressed ({info.compress_size} "
                                f"bytes holding {info.file_size}); torch.save stores members uncompressed, so "
                                "this is a damaged or hostile file (a zip bomb)", FIX)
                if info.header_offset + 30 + len(info.filename) + info.file_size > size:
                    raise _fail(path, f"zip member {info.filename!r:.100} reaches past the end of the "
                                f"{size}-byte file (truncated?)")
            prefix = infos[0].filename.split("/", 1)[0]
            pkl = members.get(f"{prefix}/data.pkl")
            if pkl is None:
                return  # torch reports what is missing
            if pkl.file_size > PICKLE_MAX_BYTES:
                raise _fail(path, f"its pickle program is {pkl.file_size} bytes, over the {PICKLE_MAX_BYTES}-"
                            "byte limit (real state dicts need ~200 bytes per tensor)")
            program = z.read(pkl)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
        # a damaged directory (offsets before the start, bad sizes, encryption): zipfile's own error kinds
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise _fail(path, f"not a readable PyTorch checkpoint (zip: {text})") from None
    storages: dict[str, StorageDecl] = {}
    _scan(io.BytesIO(program), path, storages, [0])
    for decl in storages.values():
        member = members.get(f"{prefix}/data/{decl.key}")
        if member is None:
            raise _fail(path, f"storage {decl.key!r:.60} has no zip member {prefix}/data/{decl.key}")
        if decl.nbytes > member.file_size:
            raise _fail(path, f"storage {decl.key!r:.60} declares {decl.nbytes} bytes but its zip member holds "
                        f"{member.file_size}", "the file lies about its tensors; " + FIX)


def _check_legacy(path: str, f, size: int) -> None:
    """Refuse a legacy (pre-zip) checkpoint whose storages declare more bytes than the file holds.

    Legacy torch.load allocates every storage at its declared size before reading it, so this check is
    what keeps a 1 kB file from reserving gigabytes. Its pickles must lie in the first PICKLE_MAX_BYTES.
    """
    head = io.BytesIO(f.read(min(size, PICKLE_MAX_BYTES)))
    storages: dict[str, StorageDecl] = {}
    counts = [0]
    try:
        if _scan(head, path, storages, counts) != LEGACY_MAGIC:
            # torch.load reads this first pickle (weights_only) and refuses it with the precise reason
            # (a code global -> UnsafeCheckpointError); it fit in the first PICKLE_MAX_BYTES, so that is bounded.
            return
        if _scan(head, path, storages, counts) != LEGACY_PROTOCOL:
            raise _fail(path, "a legacy torch.save file of an unknown protocol version")
        _scan(head, path, storages, counts)  # sys_info
        _scan(head, path, storages, counts)  # the state dict
        keys = _scan(head, path, storages, counts)
    except CheckpointError:
        if size > PICKLE_MAX_BYTES and head.tell() >= PICKLE_MAX_BYTES:
            raise _fail(path, f"its pickle program is longer than the {PICKLE_MAX_BYTES}-byte limit") from None
        raise
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _fail(path, "a legacy torch.save file whose storage key list is malformed")
    if set(storages) - set(keys):
        # torch would allocate such a storage at its declared size and never fill it
        raise _fail(path, "a legacy torch.save file declaring storages it does not hold")
    need = sum(8 + decl.nbytes for decl in storages.values())
    if need > size - head.tell():
        raise _fail(path, f"its storages declare {need} bytes but only {size - head.tell()} follow the pickle",
                    "the file lies about its tensors or is truncated; " + FIX)


def _precheck(path: str) -> bool:
    """Check `path` before torch.load; True for the zip format, False for the legacy one."""
    with open_regular(path, what="PyTorch checkpoint") as f:
        size = os.fstat(f.fileno()).st_size
        zipped = f.read(4) == ZIP_MAGIC
        f.seek(0)
        if zipped:
            _check_zip(path, f, size)
        else:
            _check_legacy(path, f, size)
    return zipped


def _load(path: str):
    import torch

    zipped = _precheck(path)
    kwargs = {"map_location": "cpu", "weights_only": True}
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4 ...": noise; failures are reported below
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            if zipped:
                return torch.load(path, mmap=True, **kwargs)
            return torch.load(path, **kwargs)  # legacy format: mmap is not possible
    except pickle.UnpicklingError as exc:
        text = str(exc)
        glob = re.search(r"GLOBAL ([\w.]+)", text)
        if glob:
            raise UnsafeCheckpointError(
                f"{path}: refused to load this pickle: it needs {glob.group(1)}, i.e. code, and it was not "
                "executed. Convert the checkpoint to .safetensors with code you trust, or save a plain state "
                "dict (torch.save(model.state_dict(), ...))"
            ) from None
        op = re.search(r"Unsupported operand \d+", text)
        first = op.group(0) if op else (text.strip().splitlines()[0][:200] if text.strip() else "unpickling failed")
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({first}); nothing in it was executed. The file is "
            "damaged, or pickled in a form weights_only loading refuses: re-download it, or convert it to "
            ".safetensors with code you trust"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any other fault of this untrusted file: one line, no traceback
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({msg[:200]}); the file is damaged or "
                              "truncated - re-download or re-save it") from None


def _key_text(key) -> str | None:
    """A dict key as part of a tensor name; None for keys that are not names (skipped)."""
    if isinstance(key, str):
        return key
    if isinstance(key, int | float) and not isinstance(key, bool):
        return str(key)
    return None


def _flatten(root: Mapping, path: str) -> dict:
    """{dotted name: tensor} of nested dicts, iteratively: bounded depth and keys, cycles refused."""
    import torch

    out: dict = {}
    stack = [("", iter(root.items()), id(root))]
    on_path = {id(root)}
    visited = 0
    while stack:
        prefix, items, _ = stack[-1]
        for key, value in items:
            visited += 1
            if visited > PICKLE_MAX_KEYS:
                raise _fail(path, f"its nested dicts hold more than {PICKLE_MAX_KEYS} keys, over the limit")
            text = _key_text(key)
            if text is None:
                continue
            name = f"{prefix}{text}"
            if isinstance(value, torch.Tensor):
                out.setdefault(name, value)
                if len(out) > PICKLE_MAX_TENSORS:
                    raise _fail(path, f"more than {PICKLE_MAX_TENSORS} tensors in one file, over the limit",
                                "if it is genuine, re-save it in shards (save_pretrained(max_shard_size=...))")
            elif isinstance(value, Mapping):
                if id(value) in on_path:
                    raise _fail(path, f"its dict {name!r:.100} contains itself (a cycle); a state dict is a tree")
                if len(stack) >= PICKLE_MAX_DEPTH:
                    raise _fail(path, f"its dicts nest more than {PICKLE_MAX_DEPTH} levels deep, over the limit")
                on_path.add(id(value))
                stack.append((name + ".", iter(value.items()), id(value)))
                break
        else:
            on_path.discard(stack.pop()[2])
    return out


def unwrap_state_dict(obj, *, path: str = "checkpoint") -> dict:
    """The tensors of a loaded checkpoint object: unwrap common nesting keys, flatten nested dicts.

    Iterative: a cyclic or deeply nested object gives a CheckpointError, never a RecursionError.
    """
    import torch

    seen: set[int] = set()
    while isinstance(obj, Mapping) and id(obj) not in seen and len(seen) < PICKLE_MAX_DEPTH:
        seen.add(id(obj))
        inner = next((obj.get(k) for k in NEST_KEYS if isinstance(obj.get(k), Mapping)
                      and any(isinstance(v, torch.Tensor | Mapping) for v in obj.get(k).values())), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, Mapping):
        return _flatten(obj, path)
    if isinstance(obj, torch.Tensor):
        return {"tensor": obj}
    return {}


def _check_loaded(path: str, state: dict) -> None:
    """The geometry rule on the loaded tensors themselves (every rebuild path, legacy and zip alike)."""
    import torch

    for name, t in state.items():
        if t.layout != torch.strided or t.is_nested or t.device.type == "meta":
            continue  # no flat strided storage to overrun; such tensors fail when read
        try:
            problem = geometry_problem(tuple(t.shape), t.stride(), t.storage_offset(), t.element_size(),
                                       t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError) as exc:  # a tensor kind without a plain storage
            problem = f"its storage cannot be inspected ({str(exc).strip()[:100]})"
        if problem:
            raise _fail(path, f"tensor {name!r:.100}: {problem}", "the file lies about its tensors; " + FIX)


def tensor_info(name: str, t, file: str | None) -> TensorInfo:
    """TensorInfo of a torch tensor (dtype mapped to its safetensors code)."""
    return TensorInfo(name=name, shape=tuple(int(d) for d in t.shape), dtype=dtypes.code_of_torch(t.dtype),
                      file=file, nbytes=int(t.numel() * t.element_size()))


def torch_to_numpy(t, target: np.dtype) -> np.ndarray:
    """Exact conversion of a float torch tensor to a fresh numpy array of float32/float64."""
    import torch

    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if target == np.float64:
        out = t.to(torch.float64)
    elif t.dtype == torch.float64:
        out = t.to(torch.float32)  # rounding, as numpy's astype would
    else:
        out = t.to(torch.float32)  # f16/bf16 -> f32 is exact
    arr = out.numpy()
    # .to() returns the same tensor when no conversion happened: copy so callers never alias the model.
    return np.array(arr, dtype=target, copy=True) if out.data_ptr() == t.data_ptr() else arr


class TorchReader:
    """One PyTorch checkpoint file (zip or legacy pickle), loaded with weights_only=True."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(Path(path).resolve())
        state = unwrap_state_dict(_load(self.path), path=self.path)
        _check_loaded(self.path, state)
        self._tensors = state
        self._infos = [tensor_info(k, v, self.path) for k, v in state.items()]

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def read(self, name: str, *, dtype=np.float32) -> np.ndarray:
        target = dtypes.check_target(dtype)
        t = self._tensors.get(name)
        if t is None:
            raise KeyError(name)
        code = dtypes.code_of_torch(t.dtype)
        if not dtypes.is_analysable(code):
            raise dtypes.unsupported(name, code)
        try:
            return torch_to_numpy(t, target)
        except RuntimeError as exc:  # e.g. a mapped storage whose bytes are missing (truncated zip member)
            raise CheckpointError(f"{self.path}: tensor {name!r} cannot be read ({exc}); re-download it") from None

    def close(self) -> None:
        self._tensors = {}
