"""Reading one tensor touches only that tensor: mapped pages and Python allocations stay near its size."""

from __future__ import annotations

import tracemalloc

import ml_dtypes
import numpy as np
from support.checkpoints import Raw, write_safetensors

from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.errors import UnsupportedDtypeError

MB = 2**20


def _mapped_rss(path: str) -> int:
    """Resident bytes of this process' mappings of `path` (from /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping header line
                inside = line.rstrip().endswith(path)
            elif inside and first == "Rss:":
                total += int(line.split()[1]) * 1024
    return total


def test_read_one_tensor_maps_only_its_pages(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2048, 2048), dtype=np.float32)
    tensors = {f"layer{i}.weight": base + i for i in range(8)}
    path = write_safetensors(tmp_path / "big.safetensors", tensors, dtype="BF16")  # 8 MiB per tensor, 64 MiB
    with open_checkpoint(path) as ckpt:
        assert len(ckpt.tensors()) == 8
        assert _mapped_rss(str(path.resolve())) == 0  # header read with plain I/O; nothing mapped yet
        tracemalloc.start()
        w = ckpt.read("layer5.weight")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss = _mapped_rss(str(path.resolve()))
        # One bf16 tensor, plus at most a 2 MiB folio at each end (the kernel maps large page-cache folios whole).
        assert 8 * MB <= rss <= 12 * MB
        assert peak <= 16 * MB + 64 * 1024  # the float32 result, no whole-file copy
        np.testing.assert_array_equal(w, tensors["layer5.weight"].astype(ml_dtypes.bfloat16).astype(np.float32))
        ckpt.read("layer6.weight")
        assert _mapped_rss(str(path.resolve())) <= 20 * MB
    assert _mapped_rss(str(path.resolve())) == 0  # close() unmapped it


def test_unsupported_tensors_are_listed_not_read(tmp_path):
    tensors = {
        "w": np.ones((4, 4), np.float32),
        "q": Raw("F8_E4M3", (4, 4), bytes(range(16))),
        "idx": Raw("I32", (3,), np.arange(3, dtype="<i4").tobytes()),
        "packed": Raw("U8", (2, 8), bytes(16)),
        "future": Raw("F17", (2,), bytes(6)),
    }
    path = write_safetensors(tmp_path / "q.safetensors", tensors)
    with open_checkpoint(path) as ckpt:
        assert [(t.name, t.dtype, t.shape) for t in ckpt.tensors()] == [
            ("w", "F32", (4, 4)), ("q", "F8_E4M3", (4, 4)), ("idx", "I32", (3,)), ("packed", "U8", (2, 8)),
            ("future", "F17", (2,)),
        ]
        for name in ("q", "idx", "packed", "future"):
            try:
                ckpt.read(name)
            except UnsupportedDtypeError as exc:
                assert name in str(exc) and "dequantise" in str(exc)
            else:
                raise AssertionError(f"{name} was read")
        np.testing.assert_array_equal(ckpt.read("w"), tensors["w"])
