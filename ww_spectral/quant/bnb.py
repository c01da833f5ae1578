"""bitsandbytes weights as transformers saves them to safetensors: LLM.int8 and 4-bit NF4 / FP4.

int8 (Linear8bitLt): `weight` int8 (out, in) + `SCB` float32 (out,) row absmax (+ `weight_format`).
    W = CB * SCB[:, None] * (1/127 as float32): bitsandbytes-foundation/bitsandbytes bitsandbytes/_ops.py,
    default kernel of `int8_vectorwise_dequant` (`A * stats.view(-1, 1) * 7.874015718698502e-3`).
4-bit (Linear4bit / Params4bit): `weight` uint8 (ceil(n/2), 1), two codes per byte (HIGH nibble first),
    `weight.absmax` float32 per block of `blocksize` elements (or uint8 when double-quantised, with
    `weight.nested_absmax` float32, `weight.nested_quant_map` float32 (256,), blocks of nested_blocksize),
    `weight.quant_map` float32 (16,) the code book, and `weight.quant_state.bitsandbytes__nf4|fp4`: uint8
    bytes of a JSON object {quant_type, blocksize, dtype, shape, nested_blocksize, nested_dtype, nested_offset}.
    W = quant_map[code] * absmax[i // blocksize], float32, then cast to `dtype`; nested absmax =
    nested_quant_map[absmax_u8] * nested_absmax[j // nested_blocksize] + nested_offset.
    Reference: bitsandbytes/backends/default/ops.py (`_dequantize_4bit_compute`,
    `_dequantize_blockwise_compute`) and bitsandbytes/functional.py (`dequantize_4bit`, QuantState.from_dict).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedDtypeError
from ..untrusted import loads_json_bounded
from .common import as_float32, need, need_shape, round_to

INV_127 = np.float32(7.874015718698502e-3)
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
_DTYPE_CODES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
STATE_MAX_BYTES = 4096  # the JSON of a quant state is ~200 bytes


def dequantize_bnb_int8(weight: np.ndarray, scb: np.ndarray, *, what: str = "bnb int8 layer") -> np.ndarray:
    """float32 (out, in) weight of an LLM.int8 layer (row-wise absmax scaling)."""
    w = np.asarray(weight)
    need(w.dtype == np.int8 and w.ndim == 2, what, f"weight is {w.dtype} {w.shape}, not a 2-D int8 matrix")
    stats = as_float32(scb, f"{what} SCB")
    need_shape(stats.reshape(-1), (w.shape[0],), f"{what} SCB")
    return (w.astype(np.float32) * stats.reshape(-1, 1)) * INV_127


@dataclass(frozen=True)
class Bnb4bitState:
    """The non-tensor part of a bitsandbytes 4-bit quant state (from its JSON tensor).

    quant_type: "nf4" | "fp4"; blocksize: elements per absmax block; dtype: "F32"/"F16"/"BF16" code of the
    dequantised weight; shape: the weight's (out, in); nested_*: double quantisation of absmax, or None.
    """

    quant_type: str
    blocksize: int
    dtype: str
    shape: tuple[int, ...]
    nested_blocksize: int | None = None
    nested_offset: float | None = None


def _int(value, what: str, field: str) -> int:
    need(isinstance(value, int) and not isinstance(value, bool) and value > 0, what, f"{field}={value!r}")
    return int(value)


def parse_bnb_state(raw: np.ndarray, *, what: str = "bnb 4-bit layer") -> Bnb4bitState:
    """Parse the `quant_state.bitsandbytes__*` uint8 tensor (JSON bytes), bounded and validated."""
    data = np.asarray(raw)
    need(data.dtype == np.uint8 and data.ndim == 1, what, "quant_state is not a 1-D uint8 tensor")
    need(data.shape[0] <= STATE_MAX_BYTES, what, f"quant_state of {data.shape[0]} bytes exceeds the "
         f"{STATE_MAX_BYTES}-byte limit")
    obj = loads_json_bounded(data.tobytes(), max_depth=4, what=f"{what} quant_state")
    need(isinstance(obj, dict), what, "quant_state JSON is not an object")
    quant_type = obj.get("quant_type")
    if quant_type not in ("nf4", "fp4"):
        raise UnsupportedDtypeError(f"{what}: bitsandbytes quant_type {quant_type!r} is not supported "
                                    "(format bitsandbytes 4-bit: nf4, fp4); skip this layer")
    blocksize = _int(obj.get("blocksize"), what, "blocksize")
    need(blocksize in BLOCKSIZES, what, f"blocksize {blocksize} is not one of {BLOCKSIZES}")
    dtype = _DTYPE_CODES.get(str(obj.get("dtype")))
    need(dtype is not None, what, f"dtype {obj.get('dtype')!r} is not float32/float16/bfloat16")
    shape = obj.get("shape")
    need(isinstance(shape, list) and len(shape) == 2, what, f"shape {shape!r} is not [out, in]")
    shape_t = tuple(_int(d, what, "shape") for d in shape)
    nested_bs = nested_off = None
    if "nested_blocksize" in obj:
        nested_bs = _int(obj.get("nested_blocksize"), what, "nested_blocksize")
        off = obj.get("nested_offset")
        need(isinstance(off, (int, float)) and not isinstance(off, bool) and np.isfinite(off), what,
             f"nested_offset={off!r}")
        nested_off = float(off)
    return Bnb4bitState(quant_type=quant_type, blocksize=blocksize, dtype=dtype, shape=shape_t,
                        nested_blocksize=nested_bs, nested_offset=nested_off)


def _blockwise(values: np.ndarray, absmax: np.ndarray, blocksize: int) -> np.ndarray:
    """values[i] * absmax[i // blocksize] in float32 (the last block may be short)."""
    n = values.shape[0]
    return values * np.repeat(absmax, blocksize)[:n]


def dequantize_bnb_4bit(packed: np.ndarray, absmax: np.ndarray, quant_map: np.ndarray, state: Bnb4bitState, *,
                        nested_absmax: np.ndarray | None = None, nested_quant_map: np.ndarray | None = None,
                        what: str = "bnb 4-bit layer") -> np.ndarray:
    """float32 (out, in) weight of a bitsandbytes NF4/FP4 layer, rounded to the state's dtype like the library."""
    n = int(np.prod(state.shape))
    data = np.asarray(packed).reshape(-1)
    need(data.dtype == np.uint8 and data.shape[0] == (n + 1) // 2, what,
         f"packed weight holds {data.shape[0]} bytes of {data.dtype}; a {state.shape} 4-bit weight needs {(n + 1) // 2}")
    code = as_float32(quant_map, f"{what} quant_map").reshape(-1)
    need_shape(code, (16,), f"{what} quant_map")
    blocks = -(-n // state.blocksize)
    amax = np.asarray(absmax).reshape(-1)
    need(amax.shape[0] == blocks, what, f"absmax has {amax.shape[0]} entries; {blocks} blocks need one each")
    if state.nested_blocksize is not None:
        need(nested_absmax is not None and nested_quant_map is not None and amax.dtype == np.uint8, what,
             "double-quantised absmax needs uint8 absmax, nested_absmax and nested_quant_map")
        ncode = as_float32(nested_quant_map, f"{what} nested_quant_map").reshape(-1)
        need_shape(ncode, (256,), f"{what} nested_quant_map")
        nabs = as_float32(nested_absmax, f"{what} nested_absmax").reshape(-1)
        need(nabs.shape[0] == -(-blocks // state.nested_blocksize), what, "nested_absmax does not cover absmax")
        amax = _blockwise(ncode[amax.astype(np.int64)], nabs, state.nested_blocksize) + np.float32(state.nested_offset)
    else:
        amax = as_float32(amax, f"{what} absmax")
    codes = np.empty(data.shape[0] * 2, dtype=np.int64)
    codes[0::2] = data >> 4
    codes[1::2] = data & 0x0F
    values = _blockwise(code[codes[:n]], amax.astype(np.float32), state.blocksize)
    return round_to(values.reshape(state.shape), state.dtype)
