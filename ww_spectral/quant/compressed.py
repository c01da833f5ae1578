"""compressed-tensors checkpoints (llm-compressor / vLLM; config `quantization_config.quant_method` =
"compressed-tensors"), the formats that hold a dense weight after dequantisation.

- "pack-quantized": `weight_packed` int32 (out, ceil(in * bits / 32)), `weight_shape` int (2,) = (out, in),
  `weight_scale` (out, G) / (out, 1), optional `weight_zero_point` packed int32 along the OUTPUT dim,
  optional `weight_g_idx` (in,) (activation-ordered groups). Values are dense little-endian bit fields
  stored with an offset of 2**(bits-1): compressed_tensors/compressors/pack_quantized/helpers.py
  (`unpack_from_int32`). 2/4/8 bits (the widths whose layout every compressed-tensors version shares).
- "int-quantized" / "naive-quantized": `weight` int8 (out, in) + `weight_scale` (+ `weight_zero_point`).
- "float-quantized": `weight` float8 + `weight_scale` (ww_spectral.quant.fp8).
- "nvfp4-pack-quantized": `weight_packed` uint8 (out, in / 2), two FP4 e2m1 codes per byte (low nibble
  first), `weight_scale` float8 e4m3 (out, in / 16), `weight_global_scale` float32 (1,).
- "mxfp4-pack-quantized": the same codes, `weight_scale` uint8 E8M0 exponents (out, in / 32), no global scale.
Dequantised W = (q - zero_point) * scale computed in the scale's dtype:
compressed_tensors/quantization/lifecycle/forward_helpers.py (`_dequantize`, `_process_group`, `_process_block`).
nvfp4 (compressors/nvfp4/base.py `decompress`): the codes unpacked to bfloat16, the group scale to bfloat16
(exact), then `scale / global_scale` in float32, times the code, rounded once to bfloat16. mxfp4
(compressors/mxfp4/base.py): scale 2 ** (byte - 127) in bfloat16 (byte 255: inf, so a zero code there is NaN),
times the code, in bfloat16 (exact products).
Other formats (mxfp6/mxfp8-pack-quantized, sparse-*, marlin-24) are refused with their name.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import UnsupportedDtypeError
from .common import as_float32, expand_scale, float_code, need, round_to, unpack_fp4, unpack_words
from .fp8 import dequantize_fp8

NVFP4, MXFP4 = "nvfp4-pack-quantized", "mxfp4-pack-quantized"
FP4_FORMATS = (NVFP4, MXFP4)  # two FP4 e2m1 codes per stored byte
SUPPORTED = ("pack-quantized", "int-quantized", "naive-quantized", "float-quantized", *FP4_FORMATS)


def unpack_ct(packed: np.ndarray, bits: int, count: int, *, axis: int = 1) -> np.ndarray:
    """Signed integers (int32) unpacked from compressed-tensors' int32 words along `axis`, cropped to `count`."""
    values = unpack_words(packed, bits, axis=axis)
    values = values[:, :count] if axis == 1 else values[:count]
    return values - (1 << (bits - 1))


def _grouped_scale(scale: np.ndarray, shape: tuple[int, int], g_idx: np.ndarray | None,
                   block: tuple[int, int] | None, what: str) -> np.ndarray:
    if g_idx is None:
        return expand_scale(scale, shape, block=block, what=what)
    s = as_float32(scale, what)
    g = np.asarray(g_idx).astype(np.int64).reshape(-1)
    need(s.ndim == 2 and s.shape[0] == shape[0] and g.shape[0] == shape[1], what,
         f"weight_g_idx {g.shape} / scale {s.shape} do not fit a {shape} weight")
    need(bool(np.all((g >= 0) & (g < s.shape[1]))), what, f"weight_g_idx values must lie in [0, {s.shape[1]})")
    return s[:, g]


def _zero_points(zp: np.ndarray | None, shape: tuple[int, int], bits: int | None,
                 g_idx: np.ndarray | None, block, what: str) -> np.ndarray | None:
    if zp is None:
        return None
    z = np.asarray(zp)
    if bits is not None and z.dtype == np.int32:
        z = unpack_ct(z, bits, shape[0], axis=0)          # pack-quantized: packed along the output dim
    return _grouped_scale(z.astype(np.float32), shape, g_idx, block, f"{what} zero_point")


def dequantize_compressed(fmt: str, tensors: Mapping[str, np.ndarray], *, block: tuple[int, int] | None = None,
                          what: str = "compressed-tensors layer") -> np.ndarray:
    """float32 (out, in) weight of one compressed-tensors layer.

    fmt: the layer's format (config `format` of its config group, or the global one).
    tensors: the layer's stored tensors by parameter name (weight / weight_packed, weight_scale,
        weight_zero_point, weight_shape, weight_g_idx), raw dtypes.
    block: (bh, bw) for block-strategy scales (config `block_structure`).
    """
    if fmt not in SUPPORTED:
        raise UnsupportedDtypeError(f"{what}: compressed-tensors format {fmt!r} is not supported "
                                    f"(supported: {', '.join(SUPPORTED)}); skip this layer")
    scale = tensors.get("weight_scale")
    need(scale is not None, what, "weight_scale is missing")
    g_idx = tensors.get("weight_g_idx")
    if fmt == "float-quantized":
        need(g_idx is None and tensors.get("weight_zero_point") is None, what, "float-quantized with zero points")
        return dequantize_fp8(tensors["weight"], scale, block=block, out_dtype=float_code(scale), what=what)
    if fmt in FP4_FORMATS:
        return _dequantize_fp4(fmt, tensors, scale, what)
    if fmt == "pack-quantized":
        packed, shape_t = tensors.get("weight_packed"), tensors.get("weight_shape")
        need(packed is not None and shape_t is not None, what, "weight_packed / weight_shape missing")
        p = np.asarray(packed)
        dims = np.asarray(shape_t).reshape(-1)
        need(p.ndim == 2 and dims.shape == (2,) and int(dims[0]) == p.shape[0], what,
             f"weight_shape {dims.tolist()} does not fit weight_packed {p.shape}")
        shape = (int(dims[0]), int(dims[1]))
        need(shape[1] > 0, what, "weight_shape has no input features")
        bits = next((b for b in (4, 8, 2) if -(-shape[1] * b // 32) == p.shape[1]), None)
        if bits is None:
            raise UnsupportedDtypeError(f"{what}: pack-quantized with {p.shape[1]} words per {shape[1]} inputs is "
                                        "not 2/4/8 bits (format compressed-tensors pack-quantized); skip this layer")
        q = unpack_ct(p, bits, shape[1])
    else:
        q = np.asarray(tensors.get("weight"))
        need(q.dtype.kind == "i" and q.ndim == 2, what, f"weight is {q.dtype} {q.shape}, not an integer matrix")
        shape, bits = (int(q.shape[0]), int(q.shape[1])), None
    s = _grouped_scale(scale, shape, g_idx, block, f"{what} weight_scale")
    z = _zero_points(tensors.get("weight_zero_point"), shape, bits, g_idx, block, what)
    w = q.astype(np.float32) if z is None else q.astype(np.float32) - z
    return round_to(w * s, float_code(scale))


def _dequantize_fp4(fmt: str, tensors: Mapping[str, np.ndarray], scale: np.ndarray, what: str) -> np.ndarray:
    """float32 (out, in) of an nvfp4- or mxfp4-pack-quantized layer (module docstring), bit for bit the
    library's bf16."""
    packed = tensors.get("weight_packed")
    need(packed is not None, what, "weight_packed is missing")
    need(tensors.get("weight_zero_point") is None and tensors.get("weight_g_idx") is None, what,
         f"{fmt} with zero points or g_idx")
    p = np.asarray(packed)
    need(p.dtype == np.uint8 and p.ndim == 2, what, f"weight_packed {p.dtype} {p.shape} is not uint8 (out, in/2)")
    shape = (int(p.shape[0]), 2 * int(p.shape[1]))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # inf / NaN where the library has them
        if fmt == MXFP4:
            exponents = np.asarray(scale)
            need(exponents.dtype == np.uint8, what, f"weight_scale is {exponents.dtype}, not uint8 E8M0 exponents")
            group_scale = expand_scale(np.ldexp(np.float32(1.0), exponents.astype(np.int32) - 127), shape,
                                       what=f"{what} weight_scale")
        else:
            global_scale = tensors.get("weight_global_scale")
            need(global_scale is not None, what, "weight_global_scale is missing")
            gs = as_float32(global_scale, f"{what} weight_global_scale")
            need(gs.size == 1, what, f"weight_global_scale of shape {gs.shape} is not one value")
            group_scale = expand_scale(scale, shape, what=f"{what} weight_scale") / gs.reshape(())
        return round_to(unpack_fp4(p) * group_scale, "BF16")
