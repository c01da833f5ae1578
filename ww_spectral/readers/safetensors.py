"""Safetensors reader that parses the header itself and memory-maps the data with numpy.

Format: 8-byte little-endian u64 N, then N bytes of UTF-8 JSON
`{name: {"dtype": code, "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {str: str}}`,
then the data; offsets are relative to byte 8 + N.

The header is validated eagerly (at open), because a damaged file must fail with a message naming the
tensor and the fix, not with garbage numbers later. Checked: sane header length, JSON object, every
entry's fields and types, offsets inside the file (truncation), byte length == numel * bits / 8 for
known codes, no two tensors overlapping. Gaps between tensors are tolerated (they cannot corrupt a
tensor whose own length matches its shape). Unknown dtype codes are kept (listed by `tensors()`) and
raise UnsupportedDtypeError from `read()`, so the analysis can record a skip row.

Untrusted-input limits (values and reasons: ww_spectral/untrusted.py): regular files only (a FIFO or
device is refused, never read); header length <= SAFETENSORS_HEADER_MAX_BYTES; before json.loads builds
anything, a linear scan checks nesting (JSON_MAX_DEPTH), tensor count (SAFETENSORS_HEADER_MAX_ENTRIES)
and item count (SAFETENSORS_HEADER_MAX_ITEMS); shapes have <= TENSOR_MAX_NDIM dims whose nonzero
product is <= TENSOR_MAX_NUMEL (what numpy can allocate, even for an empty tensor); offsets < 2**63.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import dtypes
from ..errors import CheckpointError, UnsupportedDtypeError
from ..records import TensorInfo
from ..untrusted import (
    INT64_MAX,
    JSON_MAX_DEPTH,
    SAFETENSORS_HEADER_MAX_BYTES,
    SAFETENSORS_HEADER_MAX_ENTRIES,
    SAFETENSORS_HEADER_MAX_ITEMS,
    TENSOR_MAX_NDIM,
    TENSOR_MAX_NUMEL,
    JsonShape,
    loads_json_bounded,
    open_regular,
)

# The header length limit (ww_spectral/untrusted.py explains the figure); the old name is kept for importers.
MAX_HEADER_BYTES = SAFETENSORS_HEADER_MAX_BYTES


def _fail(path: str, problem: str, fix: str = "re-download or re-export the file") -> CheckpointError:
    return CheckpointError(f"{path}: {problem}; {fix}")


def _short(value) -> str:
    """repr of a header value, cut to one short line (a shape may be megabytes of JSON)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _shape_problem(shape) -> str | None:
    """Why `shape` is not a tensor shape numpy and torch can hold, or None."""
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        return "is not a list of non-negative integers"
    if len(shape) > TENSOR_MAX_NDIM:
        return f"has {len(shape)} dimensions, over the limit of {TENSOR_MAX_NDIM}"
    numel = 1
    for d in shape:  # zeros skipped: [0, 2**70] holds no data but numpy still cannot make the array
        numel *= d or 1
        if numel > TENSOR_MAX_NUMEL:
            return "has more elements than int64 can count (as float64 bytes, even with a zero dimension)"
    return None


def _entry_limit(path: str):
    """The pre-parse check of a header's JSON structure: tensor count, then item count, within the caps."""
    def check(shape: JsonShape) -> None:
        # Every tensor entry is one JSON object; the outer object and __metadata__ are the other two.
        if shape.objects > SAFETENSORS_HEADER_MAX_ENTRIES + 2:
            raise _fail(path, f"header lists about {shape.objects - 1} tensors, over the limit of "
                        f"{SAFETENSORS_HEADER_MAX_ENTRIES} per file",
                        "the file is not a genuine checkpoint or is damaged; if it is genuine, re-save it in "
                        "shards (save_pretrained(max_shard_size=...))")
        if shape.items > SAFETENSORS_HEADER_MAX_ITEMS:
            raise _fail(path, f"header holds {shape.items} JSON items, over the limit of "
                        f"{SAFETENSORS_HEADER_MAX_ITEMS} (~12 per tensor)",
                        "the file is not a genuine checkpoint or is damaged; replace it")
    return check


def parse_safetensors_header(
    header: bytes, *, path: str, data_bytes: int | None
) -> tuple[list[TensorInfo], list[tuple[int, int]], dict]:
    """Validate a header's JSON bytes and return (tensors in storage order, their absolute byte spans, metadata).

    header: the N JSON bytes (after the 8-byte length).
    data_bytes: bytes available after the header (file size - 8 - N), or None to skip the bounds check
        (remote headers, where only the header was fetched).
    Spans are (begin, end) relative to the data section. Raises CheckpointError naming the tensor.
    """
    obj = loads_json_bounded(header, max_depth=JSON_MAX_DEPTH, what="safetensors header", path=path,
                             check=_entry_limit(path))
    if not isinstance(obj, dict):
        raise _fail(path, "header JSON is not an object")
    metadata = obj.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _fail(path, "header __metadata__ is not an object")

    entries: list[tuple[int, int, TensorInfo]] = []
    while obj:  # popped as converted, so the parsed JSON and the records never both exist whole
        name, entry = obj.popitem()
        if not isinstance(entry, dict):
            raise _fail(path, f"tensor {name!r}: header entry is not an object")
        code, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(code, str) or not code:
            raise _fail(path, f"tensor {name!r}: dtype {code!r} is not a dtype code string")
        problem = _shape_problem(shape)
        if problem:
            raise _fail(path, f"tensor {name!r}: shape {_short(shape)} {problem}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= INT64_MAX):
            raise _fail(path, f"tensor {name!r}: data_offsets {_short(offsets)} are not [begin, end] with "
                        "0 <= begin <= end < 2**63")
        begin, end = offsets
        if data_bytes is not None and end > data_bytes:
            raise _fail(
                path,
                f"truncated file: tensor {name!r} needs bytes {begin}..{end} of the data section but the file "
                f"has {data_bytes}",
                "re-download it",
            )
        spec = dtypes.spec(code)
        if spec is not None:
            want = spec.nbytes(tuple(shape))
            if end - begin != want:
                raise _fail(
                    path,
                    f"tensor {name!r}: header says {code} {tuple(shape)} = {want} bytes but its data_offsets "
                    f"span {end - begin} bytes (the header lies about its shape or dtype)",
                )
        entries.append((begin, end, TensorInfo(name=name, shape=tuple(shape), dtype=code, file=path,
                                               nbytes=end - begin)))

    entries.reverse()  # header order again (popitem is last-in first-out), so equal offsets keep it
    entries.sort(key=lambda e: (e[0], e[1]))
    prev_end, prev_name = 0, None
    for begin, end, info in entries:
        if begin < prev_end and end > begin:
            raise _fail(path, f"tensors {prev_name!r} and {info.name!r} overlap (bytes {begin}..{prev_end})")
        if end > begin:
            prev_end, prev_name = end, info.name
    return [e[2] for e in entries], [(e[0], e[1]) for e in entries], {str(k): v for k, v in metadata.items()}


def read_header_bytes(path: str) -> tuple[bytes, int]:
    """(header JSON bytes, header length N) of a local safetensors file; CheckpointError on a bad prefix.

    Regular files only (a FIFO or a device is refused, never read), the header length capped.
    """
    with open_regular(path, what="safetensors file") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _fail(path, f"truncated file: {size} bytes, shorter than the 8-byte header length", "re-download it")
        (n,) = struct.unpack("<Q", prefix)
        first = f.read(1)
        if first and first != b"{":  # checked first: a renamed zip's "length" is a large number too
            raise _fail(path, "not a safetensors file (its header does not start with '{')",
                        "check the file type (a .bin/.pt renamed?) or re-download it")
        if n < 2 or n > MAX_HEADER_BYTES:
            raise _fail(path, f"header length {n} is not sane (must be 2..{MAX_HEADER_BYTES}); "
                        "this is not a safetensors file or it is damaged")
        if 8 + n > size:
            raise _fail(path, f"truncated file: header needs bytes 8..{8 + n} but the file has {size}",
                        "re-download it")
        f.seek(8)
        header = f.read(n)
        if len(header) != n:  # shrank while being read
            raise _fail(path, f"truncated file: header needs bytes 8..{8 + n} but only {8 + len(header)} "
                        "could be read", "re-download it")
        return header, n


def _raw_spec(by_name: dict[str, TensorInfo], name: str) -> tuple[np.dtype, TensorInfo]:
    """(numpy dtype viewing the stored bytes, header entry) for `raw()`; KeyError / UnsupportedDtypeError."""
    info = by_name.get(name)
    if info is None:
        raise KeyError(name)
    spec = dtypes.spec(info.dtype)
    if spec is None or spec.numpy is None:
        raise UnsupportedDtypeError(f"tensor {name!r}: dtype {info.dtype} has no numpy view (sub-byte or unknown "
                                    "code); skip it")
    return spec.numpy, info


def _row_span(info: TensorInfo, span: tuple[int, int], start: int, stop: int) -> tuple[int, int, tuple[int, ...]]:
    """[lo, hi) in the data section and the result shape of entries start..stop-1 (first axis) of a tensor."""
    if len(info.shape) < 2 or not 0 <= start <= stop <= info.shape[0]:
        raise IndexError(f"tensor {info.name!r} of shape {tuple(info.shape)} has no entries {start}..{stop - 1}")
    begin, end = span
    per = (end - begin) // info.shape[0] if info.shape[0] else 0
    return begin + per * start, begin + per * stop, (stop - start, *info.shape[1:])


def _checked(by_name: dict[str, TensorInfo], name: str, dtype) -> tuple[np.dtype, TensorInfo]:
    """(target dtype, header entry) of a tensor about to be read; KeyError / UnsupportedDtypeError first."""
    target = dtypes.check_target(dtype)
    info = by_name.get(name)
    if info is None:
        raise KeyError(name)
    if not dtypes.is_analysable(info.dtype):
        raise dtypes.unsupported(name, info.dtype)
    return target, info


class _TensorBytes:
    """read / read_rows / raw over a header (`_by_name`, `_spans`: offsets in the data section) and a
    `_stored(name, lo, hi, np_dtype, shape)` that gives the bytes lo..hi as an array: the memory map of a
    local file (SafetensorsReader) or one HTTP Range request (SafetensorsRangeReader)."""

    _by_name: dict[str, TensorInfo]
    _spans: dict[str, tuple[int, int]]

    def _stored(self, name: str, lo: int, hi: int, np_dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    def read(self, name: str, *, dtype=np.float32) -> np.ndarray:
        """Tensor `name` in its stored shape, converted exactly to `dtype` (float32 or float64): only its bytes."""
        target, info = _checked(self._by_name, name, dtype)
        begin, end = self._spans[name]
        # astype copies: the result owns its memory (a memory map can be closed afterwards).
        return self._stored(name, begin, end, dtypes.spec(info.dtype).numpy, info.shape).astype(target, copy=True)

    def read_rows(self, name: str, start: int, stop: int, *, dtype=np.float32) -> np.ndarray:
        """Entries start..stop-1 along the FIRST axis of tensor `name` (e.g. experts of a [E, out, in] stack),
        converted exactly to `dtype`: only their bytes are read."""
        target, info = _checked(self._by_name, name, dtype)
        lo, hi, shape = _row_span(info, self._spans[name], start, stop)
        return self._stored(name, lo, hi, dtypes.spec(info.dtype).numpy, shape).astype(target, copy=True)

    def raw(self, name: str) -> np.ndarray:
        """Tensor `name` in its STORED dtype and shape (int32, uint8, float8 via ml_dtypes, ...), a copy:
        the packed integers and codes the dequantisers (ww_spectral/quant/) take."""
        np_dtype, info = _raw_spec(self._by_name, name)
        begin, end = self._spans[name]
        return self._stored(name, begin, end, np_dtype, info.shape).copy()

    def raw_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Entries start..stop-1 along the FIRST axis of tensor `name`, in its stored dtype (a copy): one
        expert of a quantised stack (ww_spectral/quant/mxfp4.py) without the others' bytes."""
        np_dtype, info = _raw_spec(self._by_name, name)
        lo, hi, shape = _row_span(info, self._spans[name], start, stop)
        return self._stored(name, lo, hi, np_dtype, shape).copy()


class SafetensorsReader(_TensorBytes):
    """One .safetensors file: validated header at open, one memory map, one tensor per `read()`.

    The map is created once; `read()` copies only the requested tensor's pages into a fresh array of the
    target dtype (float32/float64), so resident memory grows by that tensor (plus reclaimable page cache).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(Path(path).resolve())
        try:
            header, n = read_header_bytes(self.path)
        except OSError as exc:
            raise _fail(self.path, f"cannot read the file ({exc.strerror or exc})", "check the path and permissions") \
                from None
        self._data_start = 8 + n
        size = os.path.getsize(self.path)
        infos, spans, self.metadata = parse_safetensors_header(header, path=self.path, data_bytes=size - 8 - n)
        self._infos = infos
        self._spans = {info.name: span for info, span in zip(infos, spans)}
        self._by_name = {info.name: info for info in infos}
        self._mmap: mmap.mmap | None = None
        self._lock = threading.Lock()  # readers may be shared by threads: map once
        self._size = size

    def tensors(self) -> list[TensorInfo]:
        """Every tensor in storage order (by data offset); no data read."""
        return list(self._infos)

    def _buffer(self) -> mmap.mmap:
        with self._lock:
            if self._mmap is None:
                with open_regular(self.path, what="safetensors file") as f:
                    self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            return self._mmap

    def _stored(self, name: str, lo: int, hi: int, np_dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """Bytes lo..hi of the data section (part of tensor `name`) as `np_dtype` in `shape`: a view of the
        map. The one place that checks the file has not shrunk since it was opened (a map read past the end
        of a file kills the process)."""
        now = os.path.getsize(self.path)
        if now < self._data_start + hi:
            raise _fail(self.path, f"truncated file: tensor {name!r} needs bytes {lo}..{hi} of the data section but "
                        f"the file now has {now - self._data_start}", "re-download it")
        count = (hi - lo) // np_dtype.itemsize
        if count == 0:
            return np.zeros(shape, dtype=np_dtype)
        return np.frombuffer(self._buffer(), dtype=np_dtype, count=count, offset=self._data_start + lo).reshape(shape)

    def close(self) -> None:
        if self._mmap is not None:
            # BufferError: a caller still holds a view; the OS frees the map with the last reference.
            with contextlib.suppress(BufferError):
                self._mmap.close()
            self._mmap = None


# Fetch(start, end) -> (bytes start..end-1, total file size). Supplied by ww_spectral.hub (HTTP Range GETs).
Fetch = Callable[[int, int], tuple[bytes, int]]
FIRST_FETCH = 100_000  # like huggingface_hub: one request covers almost every header


class SafetensorsRangeReader(_TensorBytes):
    """A remote .safetensors file read by byte ranges: header at open (1-2 requests), one request per tensor.

    name: the file's name for messages and TensorInfo.file (e.g. its URL or repo path).
    fetch: returns the bytes [start, end) and the file's total size (HTTP Range reads).
    The header is validated exactly as for local files (truncation against the server's size included).
    """

    def __init__(self, name: str, fetch: Fetch) -> None:
        self.path = name
        self._fetch = fetch
        first, size = fetch(0, FIRST_FETCH)
        if len(first) < 8:
            raise _fail(name, f"truncated file: {size} bytes, shorter than the 8-byte header length", "re-upload it")
        (n,) = struct.unpack("<Q", first[:8])
        if n < 2 or n > MAX_HEADER_BYTES:
            raise _fail(name, f"header length {n} is not sane (must be 2..{MAX_HEADER_BYTES}); this is not a "
                        "safetensors file or it is damaged")
        if 8 + n > size:
            raise _fail(name, f"truncated file: header needs bytes 8..{8 + n} but the file has {size}")
        header = first[8:8 + n] if len(first) >= 8 + n else first[8:] + fetch(len(first), 8 + n)[0]
        self._data_start = 8 + n
        infos, spans, self.metadata = parse_safetensors_header(header, path=name, data_bytes=size - 8 - n)
        self._infos = infos
        self._spans = {info.name: span for info, span in zip(infos, spans)}
        self._by_name = {info.name: info for info in infos}

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def _stored(self, name: str, lo: int, hi: int, np_dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """Bytes lo..hi of the data section (part of tensor `name`) as `np_dtype` in `shape`: one Range request
        for exactly those bytes, its length checked."""
        if hi == lo:
            return np.zeros(shape, dtype=np_dtype)
        data, _ = self._fetch(self._data_start + lo, self._data_start + hi)
        if len(data) != hi - lo:
            raise _fail(self.path, f"tensor {name!r}: asked for {hi - lo} bytes, got {len(data)}",
                        "the remote file changed or the server ignores Range; retry")
        return np.frombuffer(data, dtype=np_dtype).reshape(shape)

    def close(self) -> None:
        self._fetch = None  # type: ignore[assignment]
