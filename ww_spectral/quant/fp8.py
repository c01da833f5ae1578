"""float8 weights (e4m3 / e5m2) with per-tensor, per-channel or block scales.

Stored as: `weight` F8_E4M3 or F8_E5M2 (out, in), plus
- `weight_scale`: per-tensor ([] or [1]) or per-channel ([out, 1]) - compressed-tensors "float-quantized",
  vLLM/llm-compressor FP8 checkpoints, Mistral FP8;
- `weight_scale_inv`: block scales [ceil(out/128), ceil(in/128)] - DeepSeek-V3, Qwen3-FP8,
  transformers' "fp8" quant_method (`weight_block_size` in the config). Despite the name the weight is
  MULTIPLIED by it (DeepSeek-V3 inference/kernel.py `weight_dequant`: y = x * s).

Dequantised W = float(weight) * scale, computed in float32; `out_dtype` rounds to the dtype the library
materialises (compressed-tensors computes in the scale's dtype:
compressed_tensors/quantization/lifecycle/forward_helpers.py `_dequantize`).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..errors import UnsupportedDtypeError
from .common import expand_scale, need, round_to

FP8_DTYPES = {"F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2)}


def dequantize_fp8(weight: np.ndarray, scale: np.ndarray | None = None, *, block: tuple[int, int] | None = None,
                   out_dtype: str | None = None, what: str = "fp8 weight") -> np.ndarray:
    """float32 (out, in) matrix of a float8 weight times its scale.

    weight: (out, in) array of dtype float8_e4m3fn / float8_e5m2 (ml_dtypes), as stored.
    scale: None (scale 1), per-tensor, per-channel, or block scales (see common.expand_scale).
    block: (bh, bw) of block scales when not 128 x 128 (config `weight_block_size`).
    out_dtype: "BF16" / "F16" to round like a library computing in that dtype; None keeps float32.
    """
    w = np.asarray(weight)
    if w.dtype not in FP8_DTYPES.values():
        raise UnsupportedDtypeError(f"{what}: dtype {w.dtype} is not float8 e4m3/e5m2 (format fp8); skip this layer")
    need(w.ndim == 2, what, f"a {w.ndim}-D float8 weight is not a matrix")
    values = w.astype(np.float32)
    if scale is not None:
        values *= expand_scale(scale, values.shape, block=block, what=what)
    return round_to(values, out_dtype)
