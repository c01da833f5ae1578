"""Hostile weight files (issue 9, rows 7, 9, 10 and the bounded-parse helpers): each test builds its file.

Every hostile file must give one CheckpointError line (exit 2 from `ww-spectral analyze`), never a
traceback, a hang or memory far beyond the file's own size. Memory is measured as the growth of peak
RSS (ru_maxrss) in a fresh subprocess, after its imports, so other tests cannot blur it.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from support.checkpoints import raw_header, write_raw_safetensors, write_torch_bin

from pipelines.cli import main as cli_main
from ww_spectral import untrusted
from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.errors import CheckpointError
from ww_spectral.readers import SafetensorsReader, TorchReader

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------------
# Helpers: one-line errors, CLI exit codes, peak memory of opening a file in a fresh process.


def _refused(path, *needles) -> str:
    with pytest.raises(CheckpointError) as info, open_checkpoint(path) as ckpt:
        ckpt.tensors()
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


def _cli_exit_2(path, capsys) -> None:
    """`ww-spectral analyze PATH` exits 2 with one line, and that line is our CheckpointError (it names the
    file first), not the CLI's catch-all for unexpected exceptions (which names the exception type)."""
    assert cli_main(["analyze", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ww-spectral: error: {Path(path).resolve()}: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def _peak_growth(path, *, expect_error: bool) -> tuple[int, str]:
    """(growth of peak RSS in bytes while open_checkpoint(path) lists its tensors, outcome) in a subprocess.

    The peak (VmHWM) is reset after the imports (/proc/self/clear_refs), so the import's own transient
    peak cannot hide the growth; growth = peak during the open - resident before it.
    """
    code = textwrap.dedent(f"""
        import json, sys
        import torch, numpy
        from ww_spectral.checkpoint import open_checkpoint
        from ww_spectral.errors import WWSpectralError
        def status(key):
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS counter
        before = status("VmRSS:")
        try:
            with open_checkpoint({str(path)!r}) as c:
                outcome = "ok %d" % len(c.tensors())
        except WWSpectralError as exc:
            outcome = "error " + str(exc)
        print(json.dumps([status("VmHWM:") - before, outcome]))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    growth, outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome.startswith("error" if expect_error else "ok"), outcome
    return growth, outcome


# --------------------------------------------------------------------------------------------------
# Crafting torch checkpoints by hand: the pickle torch.save writes, with any storage sizes and strides.


class _StorageRef:
    def __init__(self, key: str, storage_type, numel: int) -> None:
        self.key, self.storage_type, self.numel = key, storage_type, numel


class _TensorRef:
    def __init__(self, storage: _StorageRef, offset: int, size, stride) -> None:
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _Pickler(pickle.Pickler):
    legacy = False

    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            pid = ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
            return pid + (None,) if self.legacy else pid
        return None


def _pickle(obj, *, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    pickler = _Pickler(buf, protocol=2)
    pickler.legacy = legacy
    pickler.dump(obj)
    return buf.getvalue()


def _write_zip(path: Path, members: dict[str, bytes | int], *, deflate: frozenset = frozenset()) -> Path:
    """A torch-layout zip; members whose value is an int are that many zero bytes, streamed."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED
            if isinstance(data, int):
                with z.open(info, "w", force_zip64=True) as f:
                    chunk = bytes(4 * MiB)
                    for _ in range(data // len(chunk)):
                        f.write(chunk)
            else:
                z.writestr(info, data)
    return path


def _torch_zip(path: Path, state, storages: dict[str, bytes], **kw) -> Path:
    members = {"archive/data.pkl": _pickle(state), "archive/byteorder": b"little"}
    members |= {f"archive/data/{k}": v for k, v in storages.items()}
    members["archive/version"] = b"3\n"
    return _write_zip(path, members, **kw)


def _torch_legacy(path: Path, state, storages: dict[str, tuple[int, bytes]]) -> Path:
    """The pre-zip torch.save layout: magic, protocol, sys_info, the state pickle, keys, then the storages."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    out = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, sys_info):
        pickle.dump(obj, out, protocol=2)
    out.write(_pickle(state, legacy=True))
    pickle.dump(list(storages), out, protocol=2)
    for numel, data in storages.values():
        out.write(struct.pack("<q", numel) + data)
    path.write_bytes(out.getvalue())
    return path


def _float_state(size, stride, *, numel: int, offset: int = 0, legacy: bool = False) -> dict:
    return {"layer.weight": _TensorRef(_StorageRef("0", torch.FloatStorage, numel), offset, size, stride)}


def test_crafted_files_are_what_torch_writes(tmp_path):
    """The crafting helpers are faithful: honest crafted files load and read back exactly."""
    values = np.arange(12, dtype="<f4")
    state = _float_state((3, 4), (4, 1), numel=12)
    for path in (_torch_zip(tmp_path / "z.pt", state, {"0": values.tobytes()}),
                 _torch_legacy(tmp_path / "l.pt", state, {"0": (12, values.tobytes())})):
        with open_checkpoint(path) as ckpt:
            np.testing.assert_array_equal(ckpt.read("layer.weight"), values.reshape(3, 4))


def test_genuine_torch_files_still_load(tmp_path):
    """Real torch.save output: views sharing a storage, an expanded buffer, nesting, zip and legacy."""
    base = torch.arange(64, dtype=torch.float32).reshape(8, 8)
    state = {"a.weight": base, "a.t": base.t(), "a.half": base[4:], "pos": torch.arange(16.0).expand(4, 16),
             "enc": {"w": base * 2}, "step": 3}
    for legacy in (False, True):
        path = tmp_path / f"m{legacy}.pt"
        torch.save({"state_dict": state, "epoch": 1}, path, _use_new_zipfile_serialization=not legacy)
        with open_checkpoint(path) as ckpt:
            assert {t.name for t in ckpt.tensors()} == {"a.weight", "a.t", "a.half", "pos", "enc.w"}
            np.testing.assert_array_equal(ckpt.read("a.t"), base.t().numpy())
            np.testing.assert_array_equal(ckpt.read("a.half"), base[4:].numpy())
            np.testing.assert_array_equal(ckpt.read("pos"), torch.arange(16.0).expand(4, 16).numpy())
            np.testing.assert_array_equal(ckpt.read("enc.w"), (base * 2).numpy())


# --------------------------------------------------------------------------------------------------
# Row 7: zip bombs and tensors that reach beyond (or multiply) their storage.


def test_zip_bomb_pickle_is_refused_before_inflating(tmp_path, capsys):
    """A 0.1 MB .bin whose deflated data.pkl inflates to 128 MiB: refused from the zip directory alone."""
    n = 128 * MiB
    path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            f.write(b"\x80\x02}q\x00X\x01\x00\x00\x00xq\x01X" + struct.pack("<I", n))
            for _ in range(n // (4 * MiB)):
                f.write(b"a" * (4 * MiB))
            f.write(b"s.")
        z.writestr("archive/version", "3\n")
    assert path.stat().st_size < MiB
    _refused(path, "'archive/data.pkl' is compressed", "zip bomb")
    _cli_exit_2(path, capsys)
    growth, _ = _peak_growth(path, expect_error=True)
    assert growth < 32 * MiB, f"peak RSS grew {growth / MiB:.0f} MiB"  # before: ~430 MiB (the pickle, inflated)


def test_deflated_storage_member_is_refused(tmp_path):
    """A storage member holding 64 MiB of zeros deflated to 64 kB (torch.save never compresses)."""
    path = _torch_zip(tmp_path / "m.pt", _float_state((4096, 4096), (4096, 1), numel=4096 * 4096),
                      {"0": 64 * MiB}, deflate=frozenset({"archive/data/0"}))
    assert path.stat().st_size < MiB
    _refused(path, "'archive/data/0' is compressed", "zip bomb")


def test_zero_stride_tensor_is_refused(tmp_path, capsys):
    """A 1.6 kB .pt: a 16-byte storage viewed as 8192 x 8192 with strides (0, 0) -> 256 MiB if read."""
    path = _torch_zip(tmp_path / "m.pt", _float_state((8192, 8192), (0, 0), numel=4), {"0": bytes(16)})
    assert path.stat().st_size < 2000
    _refused(path, "strides (0, 0)", "would expand to 268435456 bytes", f"{untrusted.PICKLE_VIEW_MAX_BYTES}-byte")
    _cli_exit_2(path, capsys)


@pytest.mark.parametrize("size, stride, numel, offset, needle", [
    ((8192, 8192), (1, 1), 16384, 0, "would expand to"),  # overlapping strides
    ((8192, 8192), (8192, 1), 4, 0, "reach byte 268435456 of a 16-byte storage"),  # past the storage
    ((4, 4), (4, 1), 16, 2**40, "reach byte"),  # offset past the storage
    ((4, 4), (4, 1), 2**40, 0, "declares 4398046511104 bytes but its zip member holds 64"),  # storage lies
])
def test_tensor_geometry_beyond_storage_is_refused(tmp_path, size, stride, numel, offset, needle):
    path = _torch_zip(tmp_path / "m.pt", _float_state(size, stride, numel=numel, offset=offset), {"0": bytes(64)})
    _refused(path, needle, "lies about its tensors")


def test_small_broadcast_view_is_materialised(tmp_path):
    """Zero strides within PICKLE_VIEW_MAX_BYTES are fine (torch's expand() of a buffer)."""
    path = _torch_zip(tmp_path / "m.pt", _float_state((256, 4), (0, 1), numel=4),
                      {"0": np.arange(4, dtype="<f4").tobytes()})
    with open_checkpoint(path) as ckpt:
        np.testing.assert_array_equal(ckpt.read("layer.weight"), np.tile(np.arange(4, dtype=np.float32), (256, 1)))


def test_legacy_storage_declaring_more_than_the_file_is_refused(tmp_path, capsys):
    """Legacy torch.load allocates each storage at its declared size: 1 GiB declared by a 1 kB file."""
    numel = 256 * MiB
    path = _torch_legacy(tmp_path / "m.bin", _float_state((numel // 4096, 4096), (4096, 1), numel=numel),
                         {"0": (numel, bytes(16))})
    assert path.stat().st_size < 2000
    _refused(path, "storages declare 1073741832 bytes", "follow the pickle")
    _cli_exit_2(path, capsys)


@pytest.mark.parametrize("program", [b"\x80\x02B\xff\xff\xff\x7f", b"\x80\x04\x8e" + b"\xff" * 7 + b"\x0f",
                                     b"\x80\x05\x96" + (2**40).to_bytes(8, "little")])
@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_declaring_a_huge_operand_allocates_nothing(tmp_path, program, legacy):
    """A 7-byte pickle whose BINBYTES/BINBYTES8/BYTEARRAY8 operand claims gigabytes (found by the fuzz
    test: CPython 3.11's C unpickler allocates such an operand before reading it)."""
    path = tmp_path / "m.bin"
    if legacy:
        path.write_bytes(program)
    else:
        _write_zip(path, {"archive/data.pkl": program, "archive/version": b"3\n"})
    tracemalloc.start()
    try:
        _refused(path, "not a readable PyTorch checkpoint")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB, f"{peak / MiB:.0f} MiB traced"


def test_oversized_pickle_program_is_refused(tmp_path):
    path = _torch_zip(tmp_path / "m.pt", {"x": "a" * (untrusted.PICKLE_MAX_BYTES + 1)}, {})
    _refused(path, "pickle program", f"{untrusted.PICKLE_MAX_BYTES}-byte limit")


# --------------------------------------------------------------------------------------------------
# Row 10 (.pt): cyclic, 5,000-deep and exponentially shared dicts.


def _deep_dict_pickle(depth: int) -> bytes:
    """{"a": {"a": ... {"w": tensor-less float} ...}} as raw opcodes (the pickler itself would recurse)."""
    return b"\x80\x02" + b"}X\x01\x00\x00\x00a" * depth + b"}" + b"s" * depth + b"."


def test_deep_pt_dict_is_one_line(tmp_path, capsys):
    members = {"archive/data.pkl": _deep_dict_pickle(5000), "archive/version": b"3\n"}
    path = _write_zip(tmp_path / "deep.pt", members)
    _refused(path, "nest more than 64 levels")
    _cli_exit_2(path, capsys)


def test_cyclic_pt_dict_is_one_line(tmp_path, capsys):
    cyclic: dict = {}
    cyclic["self"] = cyclic
    state = {"w": _TensorRef(_StorageRef("0", torch.FloatStorage, 4), 0, (2, 2), (2, 1)), "c": cyclic}
    path = _torch_zip(tmp_path / "cyc.pt", state, {"0": bytes(16)})
    _refused(path, "contains itself (a cycle)")
    _cli_exit_2(path, capsys)
    nested_cycle: dict = {}
    nested_cycle["model"] = nested_cycle  # the unwrapping of nesting keys meets the cycle first
    path = _torch_zip(tmp_path / "cyc2.pt", nested_cycle, {})
    _refused(path, "contains itself")


def test_exponentially_shared_dicts_are_bounded(tmp_path):
    """d_i = {"a": d_i+1, "b": d_i+1}: 22 levels of a small pickle describe 4 million paths."""
    node: dict = {"step": 1}
    for _ in range(22):
        node = {"a": node, "b": node}
    path = _torch_zip(tmp_path / "dag.pt", node, {})
    assert path.stat().st_size < 4000
    _refused(path, f"more than {untrusted.PICKLE_MAX_KEYS} keys")


# --------------------------------------------------------------------------------------------------
# Row 10 (safetensors): headers that are valid JSON but no valid tensor description.


def _header_file(tmp_path, header: bytes | dict, data: bytes = bytes(64)) -> Path:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


DEEP = b"[" * 100_000 + b"]" * 100_000
HOSTILE_HEADERS = {
    "deep entry": (b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": ' + DEEP + b"}}",
                   "nests 100002 levels deep"),
    "deep metadata": (b'{"__metadata__": {"k": ' + DEEP + b"}}", "nests 100002 levels deep"),
    "deep objects": (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nests 5000 levels deep"),
    "zero dim, huge dim": ({"w": {"dtype": "F32", "shape": [0, 2**70], "data_offsets": [0, 0]}},
                           "more elements than int64"),
    "empty, too big for numpy": ({"w": {"dtype": "F32", "shape": [0, 2**61], "data_offsets": [0, 0]}},
                                 "more elements than int64"),
    "product overflows int64": ({"w": {"dtype": "Q9_X", "shape": [2**40, 2**40], "data_offsets": [0, 0]}},
                                "more elements than int64"),
    "negative dim": ({"w": {"dtype": "F32", "shape": [4, -4], "data_offsets": [0, 64]}}, "non-negative integers"),
    "float dim": ({"w": {"dtype": "F32", "shape": [4.0, 4], "data_offsets": [0, 64]}}, "non-negative integers"),
    "40 dims": ({"w": {"dtype": "F32", "shape": [1] * 40, "data_offsets": [0, 4]}}, "40 dimensions"),
    "offset over int64": ({"w": {"dtype": "Q9_X", "shape": [2], "data_offsets": [0, 2**64]}}, "< 2**63"),
    "offsets disagree with shape": ({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 32]}},
                                    "F32 (4, 4) = 64 bytes"),
    "5000-digit number": (b'{"w": {"dtype": "F32", "shape": [' + b"1" * 5000 + b'], "data_offsets": [0, 4]}}',
                          "not valid JSON"),
    "not utf-8": (b'{"w\xff": 1}', "not valid JSON"),
}


@pytest.mark.parametrize("case", list(HOSTILE_HEADERS))
def test_hostile_safetensors_header_is_one_line(tmp_path, capsys, case):
    header, needle = HOSTILE_HEADERS[case]
    path = _header_file(tmp_path, header)
    _refused(path, needle)
    _cli_exit_2(path, capsys)


# --------------------------------------------------------------------------------------------------
# Row 9: header size and entry count.


def _entries_header(n: int, *, name_len: int) -> bytes:
    """A header of n empty F32 tensors whose names are padded to name_len characters."""
    parts = (f'"{f"layers.{i}.w".ljust(name_len, "x")}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
             for i in range(n))
    return ("{" + ",".join(parts) + "}").encode()


def test_header_with_too_many_entries_is_refused_before_parsing(tmp_path, capsys):
    """Like the report's file (a 23 MB header listing 380k tensors, 1.07 GB resident before): 25 MB, 380k."""
    blob = _entries_header(380_000, name_len=13)
    assert 20e6 < len(blob) < untrusted.SAFETENSORS_HEADER_MAX_BYTES
    path = _header_file(tmp_path, blob, b"")
    _refused(path, "lists about 380000 tensors", f"limit of {untrusted.SAFETENSORS_HEADER_MAX_ENTRIES}")
    _cli_exit_2(path, capsys)
    growth, _ = _peak_growth(path, expect_error=True)
    # The file is read (23 MB) and scanned in 1 MiB numpy chunks; nothing is parsed into objects.
    assert growth < 96 * MiB, f"peak RSS grew {growth / MiB:.0f} MiB"


def _metadata_header(items: int) -> bytes:
    """A header with no tensors and __metadata__ of items / 2 short key/value pairs: the most objects
    json.loads may build under SAFETENSORS_HEADER_MAX_ITEMS."""
    return ('{"__metadata__":{' + ",".join(f'"{i}":"{i}"' for i in range(items // 2)) + "}}").encode()


@pytest.mark.parametrize("worst", ["entries", "metadata"])
def test_header_at_the_caps_parses_within_bound(tmp_path, worst):
    """The most a header may hold opens with peak RSS growth under 512 MiB (measured ~180 MiB for
    SAFETENSORS_HEADER_MAX_ENTRIES entries with names padded to fill SAFETENSORS_HEADER_MAX_BYTES, ~260 MiB
    for a __metadata__ of SAFETENSORS_HEADER_MAX_ITEMS small strings)."""
    cap = untrusted.SAFETENSORS_HEADER_MAX_BYTES
    if worst == "entries":
        n = untrusted.SAFETENSORS_HEADER_MAX_ENTRIES
        per_entry = len(_entries_header(2, name_len=0)) // 2 - len("layers.0.w")  # bytes besides the name
        blob = _entries_header(n, name_len=cap // n - per_entry - 1)
        assert 0.98 * cap < len(blob) <= cap
    else:
        n = 0
        blob = _metadata_header(untrusted.SAFETENSORS_HEADER_MAX_ITEMS - 4)
        assert len(blob) <= cap
    growth, outcome = _peak_growth(_header_file(tmp_path, blob, b""), expect_error=False)
    assert outcome == f"ok {n}"
    assert growth < 512 * MiB, f"peak RSS grew {growth / MiB:.0f} MiB"


def test_header_over_the_byte_cap_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", untrusted.SAFETENSORS_HEADER_MAX_BYTES + 8) + b"{" + bytes(64))
    _refused(path, "header length", "not sane")


# --------------------------------------------------------------------------------------------------
# Regular files only; the bounded JSON helpers.


@pytest.mark.timeout(30)
@pytest.mark.parametrize("reader", [SafetensorsReader, TorchReader])
def test_fifo_and_device_weight_files_are_refused_not_read(tmp_path, reader):
    fifo = tmp_path / "w.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="FIFO"):
        reader(fifo)  # before: SafetensorsReader blocked forever in open()
    zero = tmp_path / "z.bin"
    zero.symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match="character device"):
        reader(zero)
    with pytest.raises(CheckpointError, match="directory"):
        reader(tmp_path)


@pytest.mark.timeout(30)
def test_read_json_file_refuses_fifo_device_oversize_and_depth(tmp_path):
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="FIFO"):
        untrusted.read_json_file(fifo, max_bytes=untrusted.CONFIG_MAX_BYTES, what="config.json")
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match="character device"):
        untrusted.read_json_file(zero, max_bytes=untrusted.CONFIG_MAX_BYTES, what="config.json")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (untrusted.CONFIG_MAX_BYTES + 1))
    with pytest.raises(CheckpointError, match=f"over the {untrusted.CONFIG_MAX_BYTES}-byte limit"):
        untrusted.read_json_file(big, max_bytes=untrusted.CONFIG_MAX_BYTES, what="config.json")
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(CheckpointError, match="nests 200000 levels deep, over the limit of 64"):
        untrusted.read_json_file(deep, max_bytes=untrusted.CONFIG_MAX_BYTES, what="config.json")
    ok = tmp_path / "ok.json"
    value = {"a": [1, {"b": '[[[\\"{'}]}  # brackets, a backslash and a quote inside a string
    ok.write_text(json.dumps(value))
    assert untrusted.read_json_file(ok, max_bytes=100, what="config.json") == value


@pytest.mark.parametrize("text, depth", [
    (b'"[[[["', 0), (b'["\\\\", [[]]]', 3), (b'["\\"[", {"k": [{}]}]', 4), (b'{"a": "\\\\\\"]]"}', 1),
    (b"[]" * 10 + b"[[[]]]", 3),
])
def test_json_shape_skips_strings_and_escapes(text, depth):
    assert untrusted.json_shape(text).depth == depth


def test_genuine_headers_and_torch_files_are_unchanged(tmp_path):
    """A header just like a real one (metadata, many dtypes) still lists and reads."""
    header = {"__metadata__": {"format": "pt"},
              "a": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [0, 5], "data_offsets": [8, 8]},
              "c": {"dtype": "F32", "shape": [1] * 8, "data_offsets": [8, 12]}}
    path = write_raw_safetensors(tmp_path / "m.safetensors", header, bytes(12))
    assert raw_header(header)[8:9] == b"{"
    with open_checkpoint(path) as ckpt:
        assert [t.shape for t in ckpt.tensors()] == [(2, 2), (0, 5), (1,) * 8]
    bin_path = write_torch_bin(tmp_path / "m.bin", {"w": np.ones((3, 3), np.float32)}, nest="model")
    with open_checkpoint(bin_path) as ckpt:
        np.testing.assert_array_equal(ckpt.read("w"), np.ones((3, 3), np.float32))
