"""Dtype code tables: safetensors code <-> numpy/ml_dtypes <-> torch, with bit widths.

The safetensors dtype code (e.g. "BF16") is the one vocabulary the rest of the package uses
(`TensorInfo.dtype`). Only the float codes in `ANALYSABLE` are ever converted to numbers; every other
known code (float8, packed/quantised ints, bool, sub-byte floats) is listed so a header can be
validated (byte length = numel * bits / 8) and the tensor reported as a skip row.

torch is imported lazily (only by the torch helpers): reading safetensors needs numpy + ml_dtypes only.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from .errors import UnsupportedDtypeError


@dataclass(frozen=True)
class DtypeSpec:
    """One safetensors dtype code.

    code: safetensors code ("F32", "BF16", "F8_E4M3", ...).
    bits: storage bits per element (4 for F4, 6 for F6_*, else 8 * itemsize).
    numpy: little-endian numpy dtype that views the raw bytes exactly, or None (sub-byte packed codes).
    analysable: True for the float codes the spectral analysis converts exactly (F64/F32/F16/BF16).
    """

    code: str
    bits: int
    numpy: np.dtype | None
    analysable: bool

    @property
    def itemsize(self) -> float:
        """Bytes per element (may be fractional for sub-byte codes)."""
        return self.bits / 8

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """Stored size in bytes of a tensor of `shape` (sub-byte codes round up to whole bytes)."""
        numel = 1
        for d in shape:
            numel *= int(d)
        return (numel * self.bits + 7) // 8


def _np(name: str) -> np.dtype:
    return np.dtype(name).newbyteorder("<") if np.dtype(name).itemsize > 1 else np.dtype(name)


_SPECS: tuple[DtypeSpec, ...] = (
    DtypeSpec("F64", 64, _np("float64"), True),
    DtypeSpec("F32", 32, _np("float32"), True),
    DtypeSpec("F16", 16, _np("float16"), True),
    DtypeSpec("BF16", 16, np.dtype(ml_dtypes.bfloat16), True),
    DtypeSpec("F8_E4M3", 8, np.dtype(ml_dtypes.float8_e4m3fn), False),
    DtypeSpec("F8_E5M2", 8, np.dtype(ml_dtypes.float8_e5m2), False),
    DtypeSpec("F8_E8M0", 8, np.dtype(ml_dtypes.float8_e8m0fnu), False),
    DtypeSpec("F6_E2M3", 6, None, False),
    DtypeSpec("F6_E3M2", 6, None, False),
    DtypeSpec("F4", 4, None, False),
    DtypeSpec("I64", 64, _np("int64"), False),
    DtypeSpec("U64", 64, _np("uint64"), False),
    DtypeSpec("I32", 32, _np("int32"), False),
    DtypeSpec("U32", 32, _np("uint32"), False),
    DtypeSpec("I16", 16, _np("int16"), False),
    DtypeSpec("U16", 16, _np("uint16"), False),
    DtypeSpec("I8", 8, np.dtype("int8"), False),
    DtypeSpec("U8", 8, np.dtype("uint8"), False),
    DtypeSpec("BOOL", 8, np.dtype("bool"), False),
    DtypeSpec("C64", 64, _np("complex64"), False),
)

SPECS: dict[str, DtypeSpec] = {s.code: s for s in _SPECS}
ANALYSABLE: tuple[str, ...] = tuple(s.code for s in _SPECS if s.analysable)

# numpy dtype -> code (native byte order keys; bfloat16/float8 via ml_dtypes).
_NUMPY_TO_CODE: dict[np.dtype, str] = {}
for _s in _SPECS:
    if _s.numpy is not None:
        _NUMPY_TO_CODE[_s.numpy.newbyteorder("=")] = _s.code

_TORCH_NAME_TO_CODE = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e8m0fnu": "F8_E8M0",
    "int64": "I64",
    "uint64": "U64",
    "int32": "I32",
    "uint32": "U32",
    "int16": "I16",
    "uint16": "U16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "complex64": "C64",
}


def spec(code: str) -> DtypeSpec | None:
    """The spec of a safetensors code, or None when the code is unknown."""
    return SPECS.get(code)


def is_analysable(code: str) -> bool:
    """True for F64/F32/F16/BF16: the codes converted exactly to float32/float64."""
    return code in ANALYSABLE


def code_of_numpy(dtype: np.dtype) -> str:
    """Safetensors code of a numpy dtype; unknown dtypes map to their upper-cased name (never analysed)."""
    dt = np.dtype(dtype)
    code = _NUMPY_TO_CODE.get(dt.newbyteorder("=") if dt.byteorder not in "|=" else dt)
    return code if code is not None else dt.name.upper()


def code_of_torch(dtype) -> str:
    """Safetensors code of a torch dtype (e.g. torch.bfloat16 -> "BF16"); others -> "TORCH_<NAME>"."""
    name = str(dtype).removeprefix("torch.")
    return _TORCH_NAME_TO_CODE.get(name, f"TORCH_{name.upper()}")


def check_target(dtype) -> np.dtype:
    """Validate the `read(dtype=...)` target: float32 or float64 only."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise UnsupportedDtypeError(f"read() converts to float32 or float64 only, not {dt}; pass dtype=np.float32")
    return dt


def unsupported(name: str, code: str) -> UnsupportedDtypeError:
    """The error for reading a tensor whose code is not analysable (recorded as a skip row upstream)."""
    if code.startswith("F8") or code in ("F4", "F6_E2M3", "F6_E3M2"):
        why = "float8/sub-byte float (usually quantised with separate scales)"
    elif code in SPECS:
        why = "integer/bool tensor (packed or quantised weights, or an index buffer)"
    else:
        why = "unknown dtype code"
    return UnsupportedDtypeError(
        f"tensor {name!r} has dtype {code}: {why}; only {', '.join(ANALYSABLE)} are analysed - "
        "skip it, or dequantise the checkpoint to bf16/fp16/fp32 first"
    )
