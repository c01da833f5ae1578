"""Bounded reads and parses of untrusted bytes: regular files only, size caps, JSON depth and size caps.

Everything a checkpoint or hub repo hands us (config.json, index files, safetensors headers, pickles)
is read through here, so a FIFO, a link to /dev/zero, a 600 MB config or a 100 000-deep JSON array
becomes one CheckpointError line naming the file, the limit and the fix - never a hang, unbounded
memory or a RecursionError traceback.

Limits (module constants, one place):
    CONFIG_MAX_BYTES       4 MiB   config.json / generation_config.json (real ones are < 100 kB)
    INDEX_MAX_BYTES       16 MiB   *.index.json (a 1000-shard, 100k-tensor index is ~ 10 MB)
    JSON_MAX_DEPTH            64   nesting of arrays/objects (real files nest < 10)
    SAFETENSORS_HEADER_MAX_BYTES / _ENTRIES / _ITEMS: see the comment at their definition
    PICKLE_*: limits for pickle-based (.bin/.pt/.pth) checkpoints, see ww_spectral/readers/torch_state.py
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import CheckpointError

MiB = 1 << 20

CONFIG_MAX_BYTES = 4 * MiB
INDEX_MAX_BYTES = 16 * MiB
JSON_MAX_DEPTH = 64

# A safetensors header holds ~100-160 bytes per tensor (a long MoE name such as
# "model.layers.60.mlp.experts.255.down_proj.weight_scale_inv" plus ~80 bytes of dtype/shape/offsets).
# The largest real single files (merged MoE checkpoints with per-expert weights and scales, e.g.
# DeepSeek-V3's ~92k tensors if saved unsharded) stay far below 200 000 tensors, and 25 MiB holds ~180k
# such entries; a 70B dense model's whole index is a few hundred kB. Peak RSS of opening a header at these
# caps (tests/ww_spectral/test_hostile_readers.py): ~180 MiB for 200k entries filling 25 MiB, ~260 MiB
# for a __metadata__ of 2.4M small strings (the most objects the item cap allows); bound asserted 512 MiB.
SAFETENSORS_HEADER_MAX_BYTES = 25 * MiB
SAFETENSORS_HEADER_MAX_ENTRIES = 200_000
# JSON members + elements (commas + containers) a header may hold: 8 per 2-D tensor entry (its object,
# shape and offsets, their commas), 10 for a 4-D one; 12 per entry leaves room for __metadata__.
SAFETENSORS_HEADER_MAX_ITEMS = 12 * SAFETENSORS_HEADER_MAX_ENTRIES

# Pickle-based checkpoints (torch zip archives and legacy pickles).
# The pickle program itself (data.pkl) holds names, shapes and storage references only, ~200 bytes per
# tensor: 4 MiB covers ~20k tensors (real .bin shards hold hundreds; a 7B training checkpoint with its
# optimizer state ~1.2k). The cap also bounds time: torch's weights_only unpickler is pure Python
# (~1-2 us per opcode), so a hostile 4 MiB program of 2M one-byte opcodes costs seconds, not minutes.
# Storages live in separate, stored (uncompressed) zip members and are not counted here.
PICKLE_MAX_BYTES = 4 * MiB
# Nesting of dicts/lists in a state dict (real ones: < 5) and tensors per file (like the header cap).
PICKLE_MAX_DEPTH = JSON_MAX_DEPTH
PICKLE_MAX_TENSORS = SAFETENSORS_HEADER_MAX_ENTRIES
# Keys visited while flattening nested dicts (shared sub-dicts are visited once per path, so a small
# pickle could otherwise describe an exponential tree): one per tensor plus counters, with room to spare.
PICKLE_MAX_KEYS = 4 * PICKLE_MAX_TENSORS
# A view may hold more elements than its storage (zero strides, overlapping strides: torch's expand()).
# Materialising one costs numel * itemsize; allowed up to this many bytes, refused above (a 1.6 kB file
# could otherwise ask for gigabytes).
PICKLE_VIEW_MAX_BYTES = 16 * MiB

# Tensor shapes (safetensors headers): numpy's historical limit of 32 dimensions (real weights: <= 5),
# and element counts / byte offsets that fit int64 (what numpy, torch and the file format can address).
TENSOR_MAX_NDIM = 32
INT64_MAX = 2**63 - 1
# numpy refuses any array (even an empty one: shape [0, 2**61]) whose nonzero dims times its item size
# overflow int64; reads may convert to float64 (8 bytes), so that is the bound on the nonzero dims' product.
TENSOR_MAX_NUMEL = INT64_MAX // 8


def _limit_error(path: os.PathLike | str, problem: str, fix: str) -> CheckpointError:
    return CheckpointError(f"{os.fspath(path)}: {problem}; {fix}")


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _require_regular(st: os.stat_result, path, what: str) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
    raise _limit_error(path, f"{what} is {kind}, not a regular file; it was not read",
                       "point the tool at a real file (links to devices or pipes are refused)")


def check_regular_file(path: os.PathLike | str, what: str = "file") -> os.stat_result:
    """stat() of `path` (links followed) if it is a regular file; CheckpointError for FIFOs, devices,
    sockets and directories (a FIFO would block a reader forever, /dev/zero would never end)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _limit_error(path, f"cannot read {what} ({exc.strerror or exc})", "check the path and permissions") \
            from None
    _require_regular(st, path, what)
    return st


def open_regular(path: os.PathLike | str, *, what: str = "file"):
    """A binary file object for `path`, guaranteed to be a regular file at the moment it was opened.

    Opened with O_NONBLOCK, so a FIFO swapped in after a stat() check never blocks the open, then the
    open descriptor itself is fstat()ed (closes the check-then-open race). Caller closes it.
    """
    check_regular_file(path, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _limit_error(path, f"cannot open {what} ({exc.strerror or exc})", "check the path and permissions") \
            from None
    try:
        _require_regular(os.fstat(fd), path, what)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a regular file: ordinary reads from here on
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes_bounded(path: os.PathLike | str, *, max_bytes: int, what: str = "file") -> bytes:
    """All bytes of regular file `path`, refusing (CheckpointError) a file larger than `max_bytes`.

    The cap is enforced while reading (at most max_bytes + 1 bytes are read), so a file that grows,
    or lies about its size, cannot make this read more.
    """
    with open_regular(path, what=what) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise _too_big(path, what, size, max_bytes)
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_big(path, what, len(data), max_bytes)
    return data


def _too_big(path, what: str, size: int, max_bytes: int) -> CheckpointError:
    return _limit_error(path, f"{what} is {size} bytes, over the {max_bytes}-byte limit for such files",
                        "this is not a genuine file of that kind, or it is damaged; remove or replace it")


@dataclass(frozen=True)
class JsonShape:
    """Structure counts of a JSON text, from a linear scan outside strings (no parse).

    depth: deepest nesting of [ and {; objects / arrays: counts of { and [;
    items: commas + containers, an upper bound on members + elements json.loads would create (minus one).
    """

    depth: int
    objects: int
    arrays: int
    items: int


_STEP = np.zeros(256, dtype=np.int8)
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1
_CHUNK = 1 << 20  # bytes scanned per numpy pass: bounds the scan's own memory (~30 MB) at any input size


def json_shape(data: bytes) -> JsonShape:
    """Nesting depth and container/item counts of JSON `data`, ignoring everything inside strings.

    Linear time, no recursion, bounded extra memory. Escaped backslashes and escaped quotes are dropped
    first, so every remaining quote delimits a string. For text json.loads accepts the counts are exact;
    for text it rejects they are exact up to the first error, which is as far as json.loads recurses.
    """
    # In a run of backslashes, pairs are literal backslashes (dropped left to right, as a JSON scanner
    # pairs them); a lone remaining backslash escapes the next byte, which only matters for a quote.
    text = data.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in data else data
    depth = best = objects = arrays = commas = 0
    inside = 0  # 1 while the scan is inside a string
    for start in range(0, len(text), _CHUNK):
        arr = np.frombuffer(text, dtype=np.uint8, count=min(_CHUNK, len(text) - start), offset=start)
        quote = arr == 0x22
        # parity after each byte: 1 from an opening quote to just before its closing quote.
        parity = (np.cumsum(quote, dtype=np.int64) + inside) & 1
        outside = (parity == 0) & ~quote
        inside = int(parity[-1])
        steps = _STEP[arr] * outside
        running = np.cumsum(steps, dtype=np.int64) + depth
        best, depth = max(best, int(running.max())), int(running[-1])
        objects += int(np.count_nonzero((arr == 0x7B) & outside))
        arrays += int(np.count_nonzero((arr == 0x5B) & outside))
        commas += int(np.count_nonzero((arr == 0x2C) & outside))
    return JsonShape(depth=best, objects=objects, arrays=arrays, items=commas + objects + arrays)


def loads_json_bounded(data: bytes | str, *, max_depth: int = JSON_MAX_DEPTH, what: str = "JSON",
                       max_items: int | None = None, path: os.PathLike | str | None = None,
                       check: Callable[[JsonShape], None] | None = None) -> Any:
    """json.loads of untrusted text with its nesting checked first (never a RecursionError).

    max_items: optional cap on JsonShape.items (bounds the objects json.loads builds).
    path: named in messages (defaults to `what`).
    check: optional extra test of the scanned JsonShape (raises its own error) run before parsing.
    Invalid JSON, too deep, too many items -> CheckpointError.
    """
    where = what if path is None else path
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data) \
        if not isinstance(data, bytes) else data
    shape = json_shape(raw)
    if shape.depth > max_depth:
        raise _limit_error(where, f"{what} nests {shape.depth} levels deep, over the limit of {max_depth}",
                           "this is not a genuine file of that kind, or it is damaged; remove or replace it")
    if max_items is not None and shape.items > max_items:
        raise _limit_error(where, f"{what} holds {shape.items} JSON items, over the limit of {max_items}",
                           "this is not a genuine file of that kind, or it is damaged; remove or replace it")
    if check is not None:
        check(shape)
    try:
        # Strict UTF-8 (json.loads on bytes would also guess UTF-16/32 from NUL bytes).
        return json.loads(raw.decode("utf-8") if not isinstance(data, str) else data)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as exc:
        # ValueError: e.g. an integer literal over Python's digit limit.
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise _limit_error(where, f"{what} is not valid JSON ({text})",
                           "the file is damaged or not of that kind; re-download or replace it") from None


# The contract's short name for the same function.
loads_bounded = loads_json_bounded


def read_json_file(path: os.PathLike | str, *, max_bytes: int, max_depth: int = JSON_MAX_DEPTH,
                   what: str = "JSON file") -> Any:
    """Parsed JSON of regular file `path`: size capped while reading, depth checked before parsing."""
    data = read_bytes_bounded(path, max_bytes=max_bytes, what=what)
    return loads_json_bounded(data, max_depth=max_depth, what=what, path=path)
