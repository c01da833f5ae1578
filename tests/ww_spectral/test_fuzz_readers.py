"""Fuzzing the weight-file readers: mutated safetensors headers and mutated torch checkpoints.

Every example writes one file and opens it through the real entry points (open_checkpoint, which picks
SafetensorsReader / TorchReader; SafetensorsRangeReader over an in-memory fetch), then reads every tensor
it lists. The only allowed outcomes are success or a WWSpectralError, and per example:
  - no hang: hypothesis' deadline (FUZZ_DEADLINE_S) fails any example that runs longer;
  - bounded allocation: peak RSS growth (VmHWM reset through /proc/self/clear_refs before each example)
    stays under RSS_BOUND, and the growth of Python/numpy allocations (tracemalloc: peak during the
    example minus what was allocated before it) under TRACED_BOUND. The seeds are < 64 kB, so anything
    near these bounds means a file made the reader allocate what it does not hold.

Mutations: raw byte flips/splices/truncations of whole files; structured edits of safetensors headers
(dtype codes, shapes with huge/negative/float dims, offsets, header length, deep nesting, junk values);
for torch zips, edits of data.pkl (byte edits, random opcodes, every integer operand replaced by
interesting values: these are the storage sizes, offsets, shapes and strides) and of storage member
lengths, re-zipped; for legacy torch files, edits of the pickle region.

CI runs a bounded number of examples (~20-30 s in all). A longer run (the counts are per test):

    WW_FUZZ_EXAMPLES=20000 nice -n 19 .venv/bin/pytest -q -p no:cacheprovider tests/ww_spectral/test_fuzz_readers.py

A failure prints the minimal reproducing example (hypothesis shrinks it); the database is off, so
re-run with the printed @reproduce_failure blob or the seed to replay it.
"""

from __future__ import annotations

import io
import json
import os
import pickletools
import shutil
import struct
import tempfile
import tracemalloc
import zipfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ww_spectral import untrusted
from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.errors import CheckpointError, WWSpectralError
from ww_spectral.readers import SafetensorsRangeReader

MiB = 1 << 20
EXAMPLES = int(os.environ.get("WW_FUZZ_EXAMPLES", "0"))
FUZZ_DEADLINE_S = 5.0
RSS_BOUND = 128 * MiB  # views may materialise up to PICKLE_VIEW_MAX_BYTES (16 MiB) as float32 + torch's copy
TRACED_BOUND = 64 * MiB
_CLEAR_REFS = Path("/proc/self/clear_refs")


def fuzz_settings(default: int):
    return settings(max_examples=EXAMPLES or default, deadline=timedelta(seconds=FUZZ_DEADLINE_S),
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------------------------------
# Running one example: only success or WWSpectralError, bounded memory.


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def _reset_peak() -> int | None:
    """Reset the kernel's peak-RSS counter; the resident bytes now, or None where that is impossible."""
    try:
        _CLEAR_REFS.write_text("5")
        return _status("VmRSS:")
    except OSError:
        return None


def _exercise(open_fn) -> str:
    """Open with open_fn() (a context manager with .tensors()/.read()), read every tensor; the outcome."""
    if not tracemalloc.is_tracing():
        tracemalloc.start()
    tracemalloc.reset_peak()
    traced_before = tracemalloc.get_traced_memory()[0]  # hypothesis' own data stays alive across examples
    before = _reset_peak()
    outcome = "ok"
    try:
        with open_fn() as ckpt:
            for info in ckpt.tensors():
                try:
                    ckpt.read(info.name)
                except WWSpectralError:
                    outcome = "read refused"
    except WWSpectralError:
        outcome = "refused"
    traced = tracemalloc.get_traced_memory()[1] - traced_before
    assert traced < TRACED_BOUND, f"traced allocations peaked at {traced / MiB:.1f} MiB"
    if before is not None:
        growth = _status("VmHWM:") - before
        assert growth < RSS_BOUND, f"peak RSS grew {growth / MiB:.1f} MiB"
    return outcome


@pytest.fixture(scope="module", autouse=True)
def _stop_tracing():
    yield
    if tracemalloc.is_tracing():
        tracemalloc.stop()
    shutil.rmtree(_DIR, ignore_errors=True)


# Thousands of small files: a RAM-backed folder where there is one (overlay /tmp makes each write slow).
_DIR = Path(tempfile.mkdtemp(prefix="ww-fuzz-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))


def _write(name: str, data: bytes) -> Path:
    path = _DIR / name
    path.write_bytes(data)
    return path


def _open_path(path: Path):
    return lambda: open_checkpoint(path)


class _RangeOpen:
    """SafetensorsRangeReader over bytes held in memory, as a context manager."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __enter__(self):
        def fetch(start: int, end: int) -> tuple[bytes, int]:
            return self.data[start:end], len(self.data)

        self.reader = SafetensorsRangeReader("fuzz.safetensors", fetch)
        return self.reader

    def __exit__(self, *exc) -> None:
        self.reader.close()


# --------------------------------------------------------------------------------------------------
# Byte-level mutation shared by every format.


@st.composite
def byte_mutations(draw, data: bytes, *, region: tuple[int, int] | None = None) -> bytes:
    """`data` with a few random edits (set, insert, delete, duplicate a slice, truncate) in `region`."""
    out = bytearray(data)
    lo, hi = region or (0, len(data))
    for _ in range(draw(st.integers(1, 6))):
        hi = min(hi, len(out))
        if hi <= lo:
            break
        pos = draw(st.integers(lo, hi - 1))
        kind = draw(st.sampled_from(["set", "set", "insert", "delete", "dup", "truncate", "interesting"]))
        if kind == "set":
            out[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del out[pos:pos + draw(st.integers(1, 16))]
        elif kind == "dup":
            n = draw(st.integers(1, 64))
            out[pos:pos] = out[pos:pos + n] * draw(st.integers(1, 8))
        elif kind == "truncate":
            del out[pos:]
        else:  # an 8-byte little-endian extreme, e.g. over a length field
            value = draw(st.sampled_from([0, 1, 2**31 - 1, 2**32, 2**63 - 1, 2**64 - 1, 2**40]))
            out[pos:pos + 8] = value.to_bytes(8, "little")
    return bytes(out)


# --------------------------------------------------------------------------------------------------
# Safetensors.


def _seed_header() -> dict:
    return {
        "__metadata__": {"format": "pt"},
        "a.weight": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]},
        "b.weight": {"dtype": "BF16", "shape": [2, 8], "data_offsets": [64, 96]},
        "c.bias": {"dtype": "F16", "shape": [8], "data_offsets": [96, 112]},
        "d.idx": {"dtype": "I32", "shape": [4], "data_offsets": [112, 128]},
    }


SEED_DATA = np.arange(32, dtype="<f4").tobytes()  # 128 bytes


def _file(header_blob: bytes, data: bytes, *, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header_blob) if length is None else length) + header_blob + data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
dims = st.one_of(st.integers(0, 16), st.integers(-4, 2**70), st.sampled_from([2**31, 2**32, 2**62, 2**63, 2**64]))
shapes = st.one_of(st.lists(dims, max_size=6), st.lists(st.integers(0, 3), min_size=30, max_size=70), json_values)
offsets = st.one_of(st.lists(st.integers(-8, 200), min_size=2, max_size=2),
                    st.lists(st.integers(-(2**64), 2**64), max_size=3), json_values)
codes = st.one_of(st.sampled_from(["F64", "F32", "F16", "BF16", "F8_E4M3", "F4", "F6_E2M3", "I8", "U8", "BOOL",
                                   "C64", "Q4_K", "", "f32"]), json_values)


@st.composite
def safetensors_files(draw) -> bytes:
    header = _seed_header()
    for name in list(header):
        if name == "__metadata__":
            if draw(st.booleans()):
                header[name] = draw(json_values)
            continue
        entry = header[name]
        for field, values in (("dtype", codes), ("shape", shapes), ("data_offsets", offsets)):
            choice = draw(st.integers(0, 5))
            if choice == 0:
                entry[field] = draw(values)
            elif choice == 1:
                del entry[field]
        if draw(st.integers(0, 9)) == 0:
            header[name] = draw(json_values)
    for _ in range(draw(st.integers(0, 2))):
        header[draw(st.text(max_size=10))] = {"dtype": draw(codes), "shape": draw(shapes), "data_offsets": draw(offsets)}
    blob = json.dumps(header).encode()
    if draw(st.integers(0, 7)) == 0:  # deep nesting inside an entry
        depth = draw(st.sampled_from([10, 63, 64, 65, 5000]))
        blob = blob[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
    if draw(st.booleans()):
        blob += b" " * draw(st.integers(0, 7))
    data = SEED_DATA[: draw(st.integers(0, len(SEED_DATA)))] if draw(st.integers(0, 3)) == 0 else SEED_DATA
    length = draw(st.one_of(st.none(), st.integers(0, 2**64 - 1), st.integers(len(blob) - 4, len(blob) + 4)))
    return _file(blob, data, length=max(0, length) if length is not None else None)


@fuzz_settings(80)
@given(safetensors_files())
def test_fuzz_safetensors_structured(data):
    _exercise(_open_path(_write("s.safetensors", data)))
    _exercise(lambda: _RangeOpen(data))


SEED_FILE = _file(json.dumps(_seed_header()).encode(), SEED_DATA)


@fuzz_settings(100)
@given(st.data())
def test_fuzz_safetensors_bytes(data):
    mutated = data.draw(byte_mutations(SEED_FILE))
    _exercise(_open_path(_write("b.safetensors", mutated)))


# --------------------------------------------------------------------------------------------------
# Torch checkpoints.


def _torch_seed(obj, *, legacy: bool) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


_BASE = torch.arange(32, dtype=torch.float32).reshape(4, 8)
TORCH_SEEDS = {
    "plain": {"a.weight": _BASE, "b.weight": torch.ones(3, 3, dtype=torch.bfloat16), "step": 3},
    "views": {"w": _BASE, "t": _BASE.t(), "half": _BASE[2:], "pos": torch.arange(8.0).expand(2, 8)},
    "nested": {"state_dict": {"enc": {"w": _BASE.half()}, "dec": {"w": _BASE[:, :4]}}, "epoch": 1},
}
ZIP_SEEDS = {k: _torch_seed(v, legacy=False) for k, v in TORCH_SEEDS.items()}
LEGACY_SEEDS = {k: _torch_seed(v, legacy=True) for k, v in TORCH_SEEDS.items()}

INTERESTING_INTS = [0, 1, 2, 3, 4, 7, 8, 255, 2**16, 2**31 - 1, -1, -(2**31), 2**32, 2**40, 2**62, 2**63 - 1,
                    2**63, 2**64, 10**30]
OPCODES = [b"}", b"]", b")", b"(", b"t", b"s", b"u", b"a", b"e", b"R", b"b", b"0", b"2", b"N", b"\x88", b"\x89",
           b"Q", b"h\x00", b"q\x00", b"K\x00", b"K\xff", b"J\xff\xff\xff\x7f", b"X\x01\x00\x00\x00a",
           b"ctorch._utils\n_rebuild_tensor_v2\n", b"ctorch\nFloatStorage\n", b"ccollections\nOrderedDict\n",
           b"cbuiltins\nset\n", b"\x8a\x09" + b"\xff" * 9, b"."]


def _encode_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _int_ops(program: bytes) -> list[tuple[int, int]]:
    """(start, end) byte spans of the integer operands' opcodes in a pickle program."""
    spans: list[tuple[int, int]] = []
    try:
        ops = list(pickletools.genops(program))
    except Exception:  # noqa: BLE001 - a mutated program: use what could be listed
        return spans
    for i, (op, _arg, pos) in enumerate(ops):
        if op.name in ("BININT1", "BININT2", "BININT", "LONG1") and pos is not None:
            end = ops[i + 1][2] if i + 1 < len(ops) else len(program)
            spans.append((pos, end))
    return spans


@st.composite
def pickle_mutations(draw, program: bytes) -> bytes:
    """Integer operands replaced by interesting values, random opcodes spliced in, byte edits."""
    spans = _int_ops(program)
    out = program
    if spans and draw(st.booleans()):
        picks = draw(st.lists(st.sampled_from(range(len(spans))), min_size=1, max_size=4, unique=True))
        for idx in sorted(picks, reverse=True):  # back to front, so earlier spans stay valid
            start, end = spans[idx]
            value = draw(st.one_of(st.sampled_from(INTERESTING_INTS), st.integers(-(2**70), 2**70)))
            out = out[:start] + _encode_int(value) + out[end:]
    if draw(st.integers(0, 3)) == 0:
        pos = draw(st.integers(2, max(2, len(out) - 1)))
        out = out[:pos] + b"".join(draw(st.lists(st.sampled_from(OPCODES), min_size=1, max_size=4))) + out[pos:]
    if draw(st.integers(0, 2)) == 0:
        out = draw(byte_mutations(out))
    return out


def _rezip(seed: bytes, members: dict[str, bytes]) -> bytes:
    """`seed`'s zip with members replaced, written stored (as torch.save does)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(seed)) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, members.get(info.filename, src.read(info)))
    return buf.getvalue()


@st.composite
def torch_zip_files(draw) -> bytes:
    seed = ZIP_SEEDS[draw(st.sampled_from(sorted(ZIP_SEEDS)))]
    with zipfile.ZipFile(io.BytesIO(seed)) as z:
        names = [i.filename for i in z.infolist()]
        pkl = next(n for n in names if n.endswith("/data.pkl"))
        members = {pkl: draw(pickle_mutations(z.read(pkl)))}
        storages = [n for n in names if "/data/" in n]
        if storages and draw(st.booleans()):  # a storage member shorter or longer than declared
            name = draw(st.sampled_from(storages))
            data = z.read(name)
            members[name] = data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data * 3
    out = _rezip(seed, members)
    if draw(st.integers(0, 4)) == 0:  # and sometimes the archive bytes themselves
        out = draw(byte_mutations(out))
    return out


@fuzz_settings(100)
@given(torch_zip_files())
def test_fuzz_torch_zip(data):
    _exercise(_open_path(_write("z.pt", data)))


@fuzz_settings(80)
@given(st.data())
def test_fuzz_torch_legacy(data):
    seed = LEGACY_SEEDS[data.draw(st.sampled_from(sorted(LEGACY_SEEDS)))]
    # The pickles come first; mutate mostly there (what the pre-scan and torch's unpickler parse).
    mutated = data.draw(byte_mutations(seed, region=(0, min(len(seed), 1200))))
    _exercise(_open_path(_write("l.bin", mutated)))


@fuzz_settings(60)
@given(st.data())
def test_fuzz_torch_zip_bytes(data):
    seed = ZIP_SEEDS[data.draw(st.sampled_from(sorted(ZIP_SEEDS)))]
    _exercise(_open_path(_write("zb.pt", data.draw(byte_mutations(seed)))))


# --------------------------------------------------------------------------------------------------
# The bounded JSON helper: the scan agrees with json's own nesting; any bytes -> value or CheckpointError.


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


tricky_text = st.text(alphabet=st.sampled_from(list('[]{}",\\:ab \n') + ["\u00e9", "\ud7ff"]), max_size=12)
nested = st.recursive(st.none() | st.integers() | tricky_text,
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
                      max_leaves=30)


@fuzz_settings(100)
@given(nested)
def test_fuzz_json_shape_matches_json(value):
    text = json.dumps(value, ensure_ascii=False).encode()
    shape = untrusted.json_shape(text)
    assert shape.depth == _depth(value)
    assert untrusted.loads_json_bounded(text, what="x") == value


@fuzz_settings(100)
@given(st.one_of(st.binary(max_size=64),
                 st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b",", b":", b"1", b"a", b"\xff"]),
                          max_size=200).map(b"".join)))
def test_fuzz_json_bytes_value_or_checkpoint_error(data):
    try:
        untrusted.loads_json_bounded(data, max_depth=8, what="x")
    except CheckpointError as exc:
        assert "\n" not in str(exc)
