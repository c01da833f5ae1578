"""Checkpoint: the opened model every analysis reads - its tensors listed from metadata, read one at a time.

    with open_checkpoint(SOURCE) as ckpt:      # ww_spectral/checkpoint.py resolves SOURCE
        for info in ckpt.tensors():            # TensorInfo(name, shape, dtype code, file, nbytes)
            W = ckpt.read(info.name)           # np.float32 array of info.shape (float64 on request)

A Checkpoint is built from a CheckpointRef and one reader per weight file (ww_spectral/readers/__init__.py
lists the formats); `readers_for(ref)` opens those readers for local files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from ..errors import CheckpointError, UnsupportedDtypeError
from ..layout import GGUF_SUFFIXES, SAFETENSORS_SUFFIXES
from ..records import CheckpointRef, TensorInfo
from .gguf import GGUFReader
from .safetensors import SafetensorsReader
from .torch_state import TorchReader


class Checkpoint:
    """An opened checkpoint: `.ref`, `.tensors()`, `.read(name, dtype=)`; a context manager.

    Files are opened (headers parsed and validated) when the Checkpoint is created; `close()` releases
    the memory maps. A tensor name present in several files is served from the first (load order).
    readers: objects with tensors(), read(name, dtype=) and close() (readers.TensorReader).
    """

    def __init__(self, ref: CheckpointRef, readers: list) -> None:
        self.ref = ref
        self._readers = readers
        self._infos: list[TensorInfo] = []
        self._owner: dict[str, object] = {}
        self._by_name: dict[str, TensorInfo] = {}
        self._closed = False
        for reader in readers:
            for info in reader.tensors():
                if info.name not in self._owner:
                    self._owner[info.name] = reader
                    self._by_name[info.name] = info
                    self._infos.append(info)

    def tensors(self) -> list[TensorInfo]:
        """Every tensor, in checkpoint order (files in load order, storage order within a file); no data read."""
        return list(self._infos)

    def read(self, name: str, *, dtype=np.float32) -> np.ndarray:
        """Tensor `name` in its stored shape, converted exactly to float32 (default) or float64.

        Reads only this tensor (a GGUF tensor dequantised with the gguf package). Raises KeyError for an
        unknown name, UnsupportedDtypeError for float8 / integer / unknown codes, CheckpointError when the
        bytes are damaged.
        """
        return self._reader(name).read(name, dtype=dtype)

    def read_rows(self, name: str, start: int, stop: int, *, dtype=np.float32) -> np.ndarray:
        """Entries start..stop-1 along the first axis of tensor `name` (e.g. experts of a [E, out, in] stack,
        a GGUF stack dequantised), as float32/float64; only their bytes are read where the format allows
        (safetensors, GGUF), else the tensor is read and sliced."""
        reader = self._reader(name)
        read_rows = getattr(reader, "read_rows", None)
        if read_rows is not None:
            return read_rows(name, start, stop, dtype=dtype)
        return np.ascontiguousarray(reader.read(name, dtype=dtype)[start:stop])

    def raw(self, name: str) -> np.ndarray:
        """Tensor `name` as STORED (packed int32, uint8, float8, GGUF block bytes, ...): what the dequantisers
        of ww_spectral/quant/ take. One tensor read; UnsupportedDtypeError where the format has no raw view
        (torch state dicts, in-memory mappings, sub-byte codes)."""
        reader = self._reader(name)
        raw = getattr(reader, "raw", None)
        if raw is None:
            raise UnsupportedDtypeError(f"tensor {name!r}: its stored values cannot be read raw from a "
                                        f"{type(reader).__name__} (quantised layers are read from .safetensors and "
                                        ".gguf files); skip it")
        return raw(name)

    def raw_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Entries start..stop-1 along the first axis of tensor `name` as STORED (e.g. one expert's MXFP4
        blocks): only their bytes where the reader can (safetensors), else the raw tensor sliced."""
        reader = self._reader(name)
        raw_rows = getattr(reader, "raw_rows", None)
        if raw_rows is not None:
            return raw_rows(name, start, stop)
        return np.ascontiguousarray(self.raw(name)[start:stop])

    def info(self, name: str) -> TensorInfo:
        """The header entry of tensor `name` (KeyError when there is none)."""
        info = self._by_name.get(name)
        if info is None:
            raise KeyError(f"no tensor named {name!r} in {self.ref.repo_id}")
        return info

    def _reader(self, name: str):
        if self._closed:
            raise CheckpointError(f"{self.ref.repo_id}: the checkpoint is closed; open it again to read {name!r}")
        reader = self._owner.get(name)
        if reader is None:
            raise KeyError(f"no tensor named {name!r} in {self.ref.repo_id}")
        return reader

    def close(self) -> None:
        """Release memory maps and in-memory references; the Checkpoint cannot be read afterwards."""
        for reader in self._readers:
            reader.close()
        self._readers = []
        self._owner = {}
        self._closed = True

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Checkpoint({self.ref.repo_id!r}, revision={self.ref.revision!r}, kind={self.ref.kind!r}, "
                f"files={len(self.ref.files)}, tensors={len(self._infos)})")


def open_all(openers: Iterable[Callable[[], object]]) -> list:
    """Call each opener in turn and return the readers; when one fails, those already opened are closed."""
    readers: list = []
    try:
        for opener in openers:
            readers.append(opener())
    except BaseException:
        for r in readers:
            r.close()
        raise
    return readers


def reader_for_file(path: str):
    """The reader of one local weight file, by suffix: safetensors, GGUF, else a torch state dict."""
    if path.endswith(SAFETENSORS_SUFFIXES):
        return SafetensorsReader(path)
    if path.endswith(GGUF_SUFFIXES):
        return GGUFReader(path)
    return TorchReader(path)


def readers_for(ref: CheckpointRef) -> list:
    """Open a reader per local weight file of `ref` (safetensors, GGUF or torch, by suffix); all or none."""
    return open_all((lambda f=f: reader_for_file(f)) for f in ref.files)
