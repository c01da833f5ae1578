"""Quantised weights, dequantised exactly as their own libraries do, to float32 (out, in) matrices.

Formats (one module each, pure functions from raw stored arrays):
    fp8         float8 e4m3/e5m2 with per-tensor, per-channel or block scales (weight_scale, weight_scale_inv)
    gptq        GPTQ packed 2/4/8-bit: qweight, qzeros, scales, g_idx (checkpoint formats gptq, gptq_v2)
    awq         AWQ packed int4, GEMM layout: qweight, qzeros, scales
    bnb         bitsandbytes LLM.int8 (weight + SCB) and 4-bit nf4/fp4 (absmax, quant_map, quant_state, nested)
    compressed  compressed-tensors pack-quantized, int-quantized, naive-quantized, float-quantized
    mxfp4       MXFP4 expert stacks (GPT-OSS): P_blocks (FP4 codes) + P_scales (E8M0), read one expert at a time
    modelopt    NVIDIA ModelOpt NVFP4: weight (FP4 codes) + weight_scale (fp8 per 16) + weight_scale_2
detect: which stored tensors form a quantised layer (header + config only) and `dequantize_layer`;
raw: stored-dtype reads of a local .safetensors file.
"""

from .awq import dequantize_awq
from .bnb import Bnb4bitState, dequantize_bnb_4bit, dequantize_bnb_int8, parse_bnb_state
from .compressed import dequantize_compressed
from .detect import (
    QuantFormat,
    QuantizedLayer,
    dequantize_layer,
    find_quantized,
    quantization_config,
    resolve_shape,
)
from .fp8 import dequantize_fp8
from .gptq import dequantize_gptq
from .modelopt import dequantize_modelopt_nvfp4
from .mxfp4 import dequantize_mxfp4, find_mxfp4_stacks
from .raw import RawSafetensors

__all__ = [
    "Bnb4bitState", "QuantFormat", "QuantizedLayer", "RawSafetensors", "dequantize_awq", "dequantize_bnb_4bit",
    "dequantize_bnb_int8", "dequantize_compressed", "dequantize_fp8", "dequantize_gptq", "dequantize_layer",
    "dequantize_modelopt_nvfp4", "dequantize_mxfp4", "find_mxfp4_stacks", "find_quantized", "parse_bnb_state", "quantization_config", "resolve_shape",
]
