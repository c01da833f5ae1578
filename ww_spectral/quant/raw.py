"""Stored-dtype access to a local .safetensors file: int32 / uint8 / float8 tensors as they are.

The analysis readers (ww_spectral/readers/safetensors.py) convert only float tensors; dequantisation needs
the packed integers and float8 codes themselves. This reader reuses that module's validated header parse
(sizes, offsets, overlaps checked at open) and memory-maps the data; `raw()` copies one tensor.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from pathlib import Path

import numpy as np

from .. import dtypes
from ..errors import CheckpointError, UnsupportedDtypeError
from ..readers.safetensors import parse_safetensors_header, read_header_bytes
from ..records import TensorInfo


class RawSafetensors:
    """One local .safetensors file; `raw(name)` returns the stored array (its own dtype and shape, a copy)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(Path(path).resolve())
        header, n = read_header_bytes(self.path)
        self._start = 8 + n
        infos, spans, self.metadata = parse_safetensors_header(
            header, path=self.path, data_bytes=os.path.getsize(self.path) - 8 - n)
        self._infos = infos
        self._by_name = {i.name: (i, span) for i, span in zip(infos, spans)}
        self._mmap: mmap.mmap | None = None

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)

    def data_span(self, name: str) -> tuple[int, int]:
        """Absolute [start, end) file offsets of tensor `name`'s bytes (e.g. to map one expert of a stack)."""
        _, (begin, end) = self._by_name[name]
        return self._start + begin, self._start + end

    def raw(self, name: str) -> np.ndarray:
        """Tensor `name` in its stored dtype (int32, uint8, float8 via ml_dtypes, ...) and shape."""
        info, (begin, end) = self._by_name[name]
        spec = dtypes.spec(info.dtype)
        if spec is None or spec.numpy is None:
            raise UnsupportedDtypeError(f"tensor {name!r}: dtype {info.dtype} has no numpy view; skip it")
        if self._mmap is None:
            with open(self.path, "rb") as f:
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if len(self._mmap) < self._start + end:
            raise CheckpointError(f"{self.path}: truncated file: tensor {name!r} ends past the file; re-download it")
        count = (end - begin) // spec.numpy.itemsize
        arr = np.frombuffer(self._mmap, dtype=spec.numpy, count=count, offset=self._start + begin)
        return arr.reshape(info.shape).copy()

    def close(self) -> None:
        if self._mmap is not None:
            with contextlib.suppress(BufferError):
                self._mmap.close()
            self._mmap = None
