"""Stored-dtype access to a local .safetensors file: int32 / uint8 / float8 tensors as they are.

The analysis readers convert only float tensors (`read`); dequantisation needs the packed integers and
float8 codes themselves: `raw(name)` of ww_spectral/readers/safetensors.py's SafetensorsReader (validated
header at open, memory-mapped data, one tensor copied per call). RawSafetensors is that reader plus the
byte span of a tensor (e.g. to map one expert of a stack).
"""

from __future__ import annotations

from ..readers.safetensors import SafetensorsReader


class RawSafetensors(SafetensorsReader):
    """One local .safetensors file; `raw(name)` returns the stored array (its own dtype and shape, a copy)."""

    def data_span(self, name: str) -> tuple[int, int]:
        """Absolute [start, end) file offsets of tensor `name`'s bytes."""
        begin, end = self._spans[name]
        return self._data_start + begin, self._data_start + end
