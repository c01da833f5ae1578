"""NVIDIA TensorRT Model Optimizer's NVFP4 checkpoints (config `quantization_config.quant_method` = "modelopt",
`quant_algo` "NVFP4"; the nvidia/*-FP4 repos on the hub).

Stored per Linear: `weight` uint8 (out, in / 2), two FP4 e2m1 codes per byte, the low nibble first;
`weight_scale` float8 e4m3 (out, in / 16), one scale per 16 inputs; `weight_scale_2` float32, one value for
the tensor (amax / (6 * 448) at export); `input_scale` (activations: a part of the layer, not a weight).
Dequantised as modelopt/torch/quantization/qtensor/nvfp4_tensor.py `NVFP4QTensor.dequantize` does:
per_block_scale = float32(weight_scale) * weight_scale_2 (float32), value = e2m1[code] * per_block_scale.
ModelOpt then casts to the model's original dtype, which the checkpoint does not record per tensor; the
float32 product is kept here (one bf16 rounding away from ModelOpt's bf16 output, far below the FP4 step).
"""

from __future__ import annotations

import numpy as np

from .common import as_float32, expand_scale, need, unpack_fp4
from .fp8 import FP8_DTYPES

GROUP = 16


def dequantize_modelopt_nvfp4(weight: np.ndarray, weight_scale: np.ndarray, weight_scale_2: np.ndarray, *,
                              what: str = "modelopt nvfp4 layer") -> np.ndarray:
    """float32 (out, in) matrix from the stored uint8 codes, float8 e4m3 group scales and the float32 tensor
    scale (module docstring). Raises CheckpointError when they do not fit each other."""
    codes, group = np.asarray(weight), np.asarray(weight_scale)
    tensor_scale = as_float32(weight_scale_2, f"{what} weight_scale_2")
    need(codes.dtype == np.uint8 and codes.ndim == 2, what, f"weight {codes.dtype} {codes.shape} is not uint8 (out, in/2)")
    need(group.dtype == FP8_DTYPES["F8_E4M3"] and tensor_scale.size == 1, what,
         f"weight_scale {group.dtype} / weight_scale_2 {tensor_scale.shape} are not float8 e4m3 and one value")
    shape = (int(codes.shape[0]), 2 * int(codes.shape[1]))
    need(tuple(group.shape) == (shape[0], shape[1] // GROUP), what,
         f"weight_scale {tuple(group.shape)} is not one scale per {GROUP} inputs of a {shape} weight")
    per_block = expand_scale(group, shape, what=f"{what} weight_scale") * tensor_scale.reshape(())
    return unpack_fp4(codes) * per_block
