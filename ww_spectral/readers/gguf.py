"""GGUF reader (llama.cpp's single-file format): bounded header parse, one tensor dequantised per `read()`.

Layout (little-endian; versions 2 and 3): magic "GGUF", u32 version, u64 tensor_count, u64 kv_count;
kv_count metadata entries (string key, u32 value type, value); tensor_count tensor infos (string name,
u32 n_dims, u64 dims[n_dims] innermost first, u32 ggml type, u64 offset into the data section); padding to
`general.alignment` (default 32); the data section. Strings are u64 length + UTF-8 bytes.

Untrusted bytes: every count, string length, array length, dimension and offset is checked against the
bytes the file actually has before anything is allocated or iterated (a 1 kB file cannot make us loop a
billion times or allocate a gigabyte); tensors must lie inside the data section, aligned, not overlapping;
names and keys unique; at most 4 dims (GGML_MAX_DIMS). Any violation is a CheckpointError naming the
file and the problem.

Data: tensors are memory-mapped; `read()` dequantises with the `gguf` package's own dequantisers
(gguf.quants.dequantize: Q4_0 ... Q8_0, K-quants, IQ-quants, TQ, MXFP4) to float32, in numpy order
(the reverse of GGUF's dims: a Linear weight comes out (out, in) like nn.Linear.weight). llama.cpp's
converter permutes the rows of Llama's q/k projections for its rotary layout; a row permutation leaves
singular values, and so every spectral metric, unchanged.

`TensorInfo.dtype` is the safetensors code for F32/F16/BF16/F64 tensors and "GGUF_<TYPE>" (e.g.
"GGUF_Q4_K") for quantised ones; `hf_name()` maps GGUF names (blk.N.attn_q) to Llama-style HF names.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import dtypes
from ..errors import CheckpointError, UnsupportedDtypeError
from ..records import TensorInfo

MAGIC = b"GGUF"
MAX_DIMS = 4
MAX_NAME_BYTES = 65_536          # tensor names and metadata keys
MAX_STRING_BYTES = 64 * 2 ** 20  # metadata string values (chat templates are tens of kB)
MAX_ARRAY_DEPTH = 3
KEEP_ARRAY_ITEMS = 64            # metadata arrays longer than this are summarised, not kept
DEFAULT_ALIGNMENT = 32

# GGUF metadata value types: (struct format, size) for scalars; 8 = string, 9 = array.
_SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4), 6: ("<f", 4),
            7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
_STRING, _ARRAY = 8, 9
# Plain float GGML types read directly (ggml type id -> safetensors code).
_PLAIN = {0: "F32", 1: "F16", 30: "BF16", 28: "F64"}
_INTEGER = {24: "I8", 25: "I16", 26: "I32", 27: "I64"}

# GGUF tensor name (after "blk.N.") -> Llama-style HF module path (after "model.layers.N.").
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_qkv": "self_attn.qkv_proj", "attn_norm": "input_layernorm",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "ffn_gate_inp": "mlp.gate", "ffn_gate_exps": "mlp.experts.gate_proj", "ffn_up_exps": "mlp.experts.up_proj",
    "ffn_down_exps": "mlp.experts.down_proj", "ffn_gate_up_exps": "mlp.experts.gate_up_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output": "lm_head", "output_norm": "model.norm"}


def hf_name(gguf_name: str) -> str:
    """Llama-style HF name of a GGUF tensor ("blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight");
    names without a mapping come back unchanged."""
    parts = gguf_name.split(".")
    if len(parts) >= 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _BLOCK_NAMES:
        return ".".join(["model.layers", parts[1], _BLOCK_NAMES[parts[2]], *parts[3:]])
    if parts and parts[0] in _TOP_NAMES:
        return ".".join([_TOP_NAMES[parts[0]], *parts[1:]])
    return gguf_name


def _quant_sizes() -> dict[int, tuple[int, int, str]]:
    """ggml type id -> (block size, bytes per block, name), from the gguf package's own table."""
    from gguf.constants import GGML_QUANT_SIZES

    return {int(t): (bs, ts, t.name) for t, (bs, ts) in GGML_QUANT_SIZES.items()}


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor info entry. shape: numpy order (outermost first); offset: absolute byte offset in the file."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    type_name: str
    offset: int
    nbytes: int

    @property
    def code(self) -> str:
        """The dtype code TensorInfo carries: safetensors' for plain floats, GGUF_<TYPE> otherwise."""
        return _PLAIN.get(self.ggml_type) or f"GGUF_{self.type_name}"


class _NeedMore(CheckpointError):
    """The header goes on past the bytes fetched so far (a remote file's prefix): fetch at least `needed`."""

    def __init__(self, path: str, needed: int) -> None:
        super().__init__(f"{path}: the GGUF header needs the first {needed} bytes; fetch more")
        self.needed = needed


class _Cursor:
    """Bounded little-endian reads over a buffer: every read is checked against the buffer's end.

    total: the file's size when `buf` is only its first bytes (remote reads): counts are bounded by the
    file, and a read past the buffer but inside the file raises _NeedMore instead of "truncated"."""

    def __init__(self, buf, path: str, total: int | None = None) -> None:
        self.buf, self.pos, self.end, self.path = buf, 0, len(buf), path
        self.total = self.end if total is None else max(int(total), self.end)

    def fail(self, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {problem} (at byte {self.pos}); the GGUF file is damaged or not "
                               "GGUF - re-download or re-convert it")

    def take(self, n: int) -> memoryview:
        if n < 0 or n > self.end - self.pos:
            if 0 <= n <= self.total - self.pos:
                raise _NeedMore(self.path, self.pos + n)
            raise self.fail(f"needs {n} bytes but only {self.total - self.pos} remain (truncated)")
        view = memoryview(self.buf)[self.pos:self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str, size: int):
        return struct.unpack(fmt, self.take(size))[0]

    def count(self, what: str, min_item_bytes: int, limit: int) -> int:
        """A u64 count whose items (each >= min_item_bytes) must fit in the remaining bytes."""
        n = self.unpack("<Q", 8)
        if n > limit or n * min_item_bytes > self.total - self.pos:
            raise self.fail(f"{what} {n} cannot fit in the {self.total - self.pos} remaining bytes")
        return n

    def string(self, limit: int, what: str) -> str:
        n = self.unpack("<Q", 8)
        if n > limit:
            raise self.fail(f"{what} of {n} bytes exceeds the {limit}-byte limit")
        try:
            return bytes(self.take(n)).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not UTF-8") from None

    def skip_string(self, what: str) -> None:
        n = self.unpack("<Q", 8)
        self.take(n)

    def value(self, vtype: int, depth: int = 0):
        """One metadata value; arrays longer than KEEP_ARRAY_ITEMS are walked (bounded) and summarised."""
        if vtype in _SCALARS:
            fmt, size = _SCALARS[vtype]
            return self.unpack(fmt, size)
        if vtype == _STRING:
            return self.string(MAX_STRING_BYTES, "metadata string")
        if vtype != _ARRAY:
            raise self.fail(f"unknown metadata value type {vtype}")
        if depth >= MAX_ARRAY_DEPTH:
            raise self.fail(f"metadata arrays nested deeper than {MAX_ARRAY_DEPTH}")
        itype = self.unpack("<I", 4)
        item_min = _SCALARS[itype][1] if itype in _SCALARS else 8 if itype == _STRING else 12
        n = self.count("metadata array length", item_min, 2 ** 40)
        if itype in _SCALARS:
            fmt, size = _SCALARS[itype]
            raw = self.take(n * size)
            if n > KEEP_ARRAY_ITEMS:
                return {"array_of": itype, "length": n}
            return [struct.unpack_from(fmt, raw, i * size)[0] for i in range(n)]
        items = []
        for _ in range(n):  # strings / nested arrays: each read is bounded by the bytes left
            if itype == _STRING and n > KEEP_ARRAY_ITEMS:
                self.skip_string("metadata array string")
                continue
            item = self.value(itype, depth + 1)
            if n <= KEEP_ARRAY_ITEMS:
                items.append(item)
        return items if n <= KEEP_ARRAY_ITEMS else {"array_of": itype, "length": n}


def parse_gguf_header(buf, *, path: str, total_size: int | None = None) -> tuple[dict, list[GGUFTensor], int]:
    """(metadata, tensors in file order, data section start) of a GGUF file held in `buf` (bytes or mmap).

    total_size: the file's size when `buf` holds only its first bytes (a remote file): tensors are checked
    against it, and a header longer than `buf` raises _NeedMore (a CheckpointError) naming the bytes needed.
    """
    cur = _Cursor(buf, path, total_size)
    if bytes(cur.take(4)) != MAGIC:
        raise CheckpointError(f"{path}: not a GGUF file (no 'GGUF' magic); check the file type")
    version = cur.unpack("<I", 4)
    if version & 0xFFFF == 0 and version != 0:
        raise UnsupportedDtypeError(f"{path}: big-endian GGUF is not supported; convert it little-endian")
    if version not in (2, 3):
        raise CheckpointError(f"{path}: GGUF version {version} is not supported (2 and 3 are); re-convert it")
    n_tensors = cur.count("tensor count", 8 + 4 + 8 + 4 + 8, 10_000_000)
    n_kv = cur.count("metadata count", 8 + 4 + 1, 10_000_000)
    metadata: dict = {}
    for _ in range(n_kv):
        key = cur.string(MAX_NAME_BYTES, "metadata key")
        if key in metadata:
            raise cur.fail(f"duplicate metadata key {key!r}")
        metadata[key] = cur.value(cur.unpack("<I", 4))
    sizes = _quant_sizes()
    infos: list[tuple[str, tuple[int, ...], int, int]] = []
    for _ in range(n_tensors):
        name = cur.string(MAX_NAME_BYTES, "tensor name")
        n_dims = cur.unpack("<I", 4)
        if n_dims > MAX_DIMS:
            raise cur.fail(f"tensor {name!r} has {n_dims} dims (GGUF allows {MAX_DIMS})")
        dims = tuple(cur.unpack("<Q", 8) for _ in range(n_dims))
        ggml_type, offset = cur.unpack("<I", 4), cur.unpack("<Q", 8)
        infos.append((name, dims, ggml_type, offset))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1) or alignment > 2 ** 20:
        raise cur.fail(f"general.alignment {alignment!r} is not a power of two <= 1 MiB")
    data_start = -(-cur.pos // alignment) * alignment
    data_bytes = cur.total - data_start
    if data_bytes < 0:
        raise cur.fail("the data section starts past the end of the file (truncated)")
    tensors, seen = [], set()
    for name, dims, ggml_type, offset in infos:
        if name in seen:
            raise cur.fail(f"duplicate tensor name {name!r}")
        seen.add(name)
        if ggml_type not in sizes:
            raise cur.fail(f"tensor {name!r} has unknown ggml type {ggml_type}")
        block, type_size, type_name = sizes[ggml_type]
        numel = 1
        for d in dims:
            numel *= d
            if numel > data_bytes * block:  # checked as we go: no astronomically large products
                raise cur.fail(f"tensor {name!r} dims {list(dims)} need more bytes than the file has")
        if dims and dims[0] % block:
            raise cur.fail(f"tensor {name!r}: row length {dims[0]} is not a multiple of the {type_name} block {block}")
        nbytes = numel // block * type_size
        if offset % alignment or offset + nbytes > data_bytes:
            raise cur.fail(f"tensor {name!r} at data offset {offset} (+{nbytes} bytes) is misaligned or past the "
                           f"end of the {data_bytes}-byte data section (truncated?)")
        tensors.append(GGUFTensor(name=name, shape=tuple(reversed(dims)), ggml_type=ggml_type, type_name=type_name,
                                  offset=data_start + offset, nbytes=nbytes))
    prev_end, prev = 0, None
    for t in sorted(tensors, key=lambda t: t.offset):
        if t.nbytes and t.offset < prev_end:
            raise cur.fail(f"tensors {prev!r} and {t.name!r} overlap")
        if t.nbytes:
            prev_end, prev = t.offset + t.nbytes, t.name
    return metadata, tensors, data_start


class _GGUFTensors:
    """What both GGUF readers share once the header is parsed: listing, raw bytes, dequantised reads.
    Subclasses set path, metadata, _tensors, _by_name and implement `_bytes(offset, count)`."""

    path: str
    metadata: dict
    _tensors: list[GGUFTensor]
    _by_name: dict[str, GGUFTensor]

    def _bytes(self, offset: int, count: int) -> np.ndarray:
        raise NotImplementedError

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def gguf_tensors(self) -> list[GGUFTensor]:
        return list(self._tensors)

    def tensors(self) -> list[TensorInfo]:
        """Every tensor in file order; dtype "F32"/"F16"/"BF16"/"F64" or "GGUF_<TYPE>"; no data read."""
        return [TensorInfo(name=t.name, shape=t.shape, dtype=t.code, file=self.path, nbytes=t.nbytes)
                for t in self._tensors]

    def _tensor(self, name: str) -> GGUFTensor:
        t = self._by_name.get(name)
        if t is None:
            raise KeyError(name)
        return t

    def raw(self, name: str) -> np.ndarray:
        """The stored bytes of `name` as uint8, shaped (..., bytes per row): what gguf's dequantisers take."""
        t = self._tensor(name)
        data = self._bytes(t.offset, t.nbytes)
        rows = t.shape[:-1] if t.shape else ()
        return data.reshape(*rows, -1) if t.shape else data

    def read(self, name: str, *, dtype=np.float32) -> np.ndarray:
        """Tensor `name` dequantised to `dtype` (float32 or float64), numpy order shape."""
        t = self._tensor(name)
        return self._decode(t, self.raw(name), t.shape, dtype)

    def read_rows(self, name: str, start: int, stop: int, *, dtype=np.float32) -> np.ndarray:
        """Entries start..stop-1 along the FIRST axis of tensor `name` (e.g. experts of a [E, out, in] stack),
        dequantised: only their bytes are read (each entry is a whole number of quantisation rows)."""
        t = self._tensor(name)
        if len(t.shape) < 2 or not 0 <= start <= stop <= t.shape[0]:
            raise IndexError(f"tensor {name!r} of shape {t.shape} has no entries {start}..{stop - 1}")
        per = t.nbytes // t.shape[0]
        data = self._bytes(t.offset + per * start, per * (stop - start))
        shape = (stop - start, *t.shape[1:])
        return self._decode(t, data.reshape(*shape[:-1], -1), shape, dtype)

    def _decode(self, t: GGUFTensor, data: np.ndarray, shape: tuple[int, ...], dtype) -> np.ndarray:
        """Stored bytes of (part of) tensor `t` as `dtype` values of `shape`."""
        target = dtypes.check_target(dtype)
        name = t.name
        if t.ggml_type in _INTEGER:
            raise UnsupportedDtypeError(f"tensor {name!r} has GGUF type {t.type_name}: an integer tensor, not "
                                        "weights; skip it")
        if t.ggml_type in _PLAIN:
            values = data.reshape(-1).view(dtypes.spec(_PLAIN[t.ggml_type]).numpy)
        else:
            from gguf.constants import GGMLQuantizationType
            from gguf.quants import dequantize

            try:
                values = dequantize(data, GGMLQuantizationType(t.ggml_type))
            except NotImplementedError:
                raise UnsupportedDtypeError(f"tensor {name!r} has GGUF type {t.type_name}, which the gguf package "
                                            "cannot dequantise; skip it") from None
        return np.asarray(values).reshape(shape).astype(target, copy=False)


class GGUFReader(_GGUFTensors):
    """One local .gguf file: header validated at open, data memory-mapped, one tensor per `read()`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(Path(path).resolve())
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < 24:
                    raise CheckpointError(f"{self.path}: {size} bytes is too short for a GGUF header; re-download it")
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot read the file ({exc.strerror or exc}); check the path") \
                from None
        self._lock = threading.Lock()
        self.metadata, self._tensors, self.data_start = parse_gguf_header(self._mmap, path=self.path)
        self._by_name = {t.name: t for t in self._tensors}

    def _bytes(self, offset: int, count: int) -> np.ndarray:
        with self._lock:
            if self._mmap is None:
                raise CheckpointError(f"{self.path}: reader is closed")
            return np.frombuffer(self._mmap, dtype=np.uint8, count=count, offset=offset).copy()

    def close(self) -> None:
        with self._lock:
            if self._mmap is not None:
                with contextlib.suppress(BufferError):
                    self._mmap.close()
                self._mmap = None  # type: ignore[assignment]


# Fetch(start, end) -> (bytes start..end-1, total file size): HTTP Range reads (ww_spectral/hub.py range_fetcher).
Fetch = Callable[[int, int], tuple[bytes, int]]
REMOTE_HEADER_FIRST = 2 ** 20        # most GGUF headers (tokenizer included) fit in one such read
REMOTE_HEADER_MAX = 128 * 2 ** 20    # a header larger than this is refused: download the file instead


class GGUFRangeReader(_GGUFTensors):
    """A remote .gguf file read by byte ranges: the header at open (1 request, a few for a large tokenizer),
    then one request per tensor (or per expert slab); validated exactly like a local file."""

    def __init__(self, name: str, fetch: Fetch) -> None:
        self.path = name
        self._fetch = fetch
        want = REMOTE_HEADER_FIRST
        while True:
            buf, size = fetch(0, want)
            if size < 24:
                raise CheckpointError(f"{name}: {size} bytes is too short for a GGUF header; re-upload it")
            if len(buf) < min(want, size):
                raise CheckpointError(f"{name}: asked for {min(want, size)} bytes, got {len(buf)}; the server "
                                      "ignores Range or the file changed - retry")
            try:
                self.metadata, self._tensors, self.data_start = parse_gguf_header(buf, path=name, total_size=size)
                break
            except _NeedMore as more:
                if want >= min(size, REMOTE_HEADER_MAX):
                    raise CheckpointError(f"{name}: the GGUF header is longer than {REMOTE_HEADER_MAX} bytes; "
                                          "download the file to read it") from None
                want = min(max(4 * want, more.needed + 4096), size, REMOTE_HEADER_MAX)
        self._by_name = {t.name: t for t in self._tensors}

    def _bytes(self, offset: int, count: int) -> np.ndarray:
        if self._fetch is None:
            raise CheckpointError(f"{self.path}: reader is closed")
        if count == 0:
            return np.zeros(0, dtype=np.uint8)
        data, _ = self._fetch(offset, offset + count)
        if len(data) != count:
            raise CheckpointError(f"{self.path}: asked for {count} bytes at {offset}, got {len(data)}; the remote "
                                  "file changed or the server ignores Range - retry")
        return np.frombuffer(data, dtype=np.uint8).copy()

    def close(self) -> None:
        self._fetch = None  # type: ignore[assignment]
