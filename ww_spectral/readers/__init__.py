"""Tensor readers: one per storage format, all with the same small interface.

A reader lists its tensors from metadata alone (`tensors()`) and converts ONE tensor on demand
(`read(name, dtype)`), so peak memory is bounded by the largest tensor, never the whole model.

    SafetensorsReader(path)   header parsed and validated eagerly; data memory-mapped with numpy
    TorchReader(path)         torch.load(weights_only=True, mmap=True); refuses pickles that need code
    SafetensorsRangeReader    a remote .safetensors file read by HTTP Range (header, then one tensor per read)
    GGUFReader(path)          llama.cpp .gguf: bounded header parse, one tensor dequantised per read (gguf package)
    MappingReader(mapping)    in-memory {name: numpy array | torch tensor} (also nn.Module.state_dict())

Checkpoint (ww_spectral/readers/checkpoint.py) puts one reader per weight file behind one name -> tensor view.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..records import TensorInfo
from .checkpoint import Checkpoint, open_all, reader_for_file, readers_for
from .gguf import GGUFReader
from .mapping import MappingReader
from .safetensors import SafetensorsRangeReader, SafetensorsReader, parse_safetensors_header
from .torch_state import TorchReader


class TensorReader(Protocol):
    """What Checkpoint needs from a reader."""

    def tensors(self) -> list[TensorInfo]: ...

    def read(self, name: str, *, dtype: np.dtype) -> np.ndarray: ...

    # Optional: `raw(name)` -> the stored array (packed / quantised values), for Checkpoint.raw.

    def close(self) -> None: ...


__all__ = ["Checkpoint", "GGUFReader", "MappingReader", "SafetensorsRangeReader", "SafetensorsReader", "TensorReader", "TorchReader",
           "open_all", "parse_safetensors_header", "reader_for_file", "readers_for"]
