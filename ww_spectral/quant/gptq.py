"""GPTQ packed integer weights (AutoGPTQ / GPTQModel / transformers' "gptq" quant_method).

Stored per Linear: `qweight` int32 [in * bits / 32, out] (packed along the INPUT dim, lowest bits first),
`qzeros` int32 [groups, out * bits / 32] (packed along the output dim), `scales` f16 [groups, out],
`g_idx` int32 [in] (the group of each input row; desc_act / act-order checkpoints permute it).

W[i, o] = scales[g_idx[i], o] * (q[i, o] - z[g_idx[i], o]), computed in the scales' dtype (the int
difference times fp16 is one rounding), then transposed to (out, in).
Reference: ModelCloud/GPTQModel gptqmodel/nn_modules/qlinear/__init__.py
(PackableQuantLinear.dequantize_weight: `scales[g_idx] * (weight - zeros[g_idx])`).
Zero points: checkpoint_format "gptq" (v1, AutoGPTQ and most hub checkpoints) stores z - 1, and the
loader adds it back modulo 2**bits: AutoGPTQ/AutoGPTQ auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py
(`zeros = zeros + 1; zeros = bitwise_and(zeros, 2**bits - 1)`). "gptq_v2" stores z itself.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedDtypeError
from .common import float_code, need, need_shape, round_to, unpack_words

CHECKPOINT_FORMATS = ("gptq", "gptq_v2")


def dequantize_gptq(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, g_idx: np.ndarray | None = None,
                    *, bits: int = 4, checkpoint_format: str = "gptq", group_size: int | None = None,
                    what: str = "gptq layer") -> np.ndarray:
    """float32 (out, in) weight of one GPTQ layer; see the module docstring for the layout.

    g_idx: None means contiguous groups of `group_size` rows (default: in / groups).
    """
    if checkpoint_format not in CHECKPOINT_FORMATS:
        raise UnsupportedDtypeError(f"{what}: GPTQ checkpoint_format {checkpoint_format!r} is not supported "
                                    f"(format gptq; known: {', '.join(CHECKPOINT_FORMATS)}); skip this layer")
    if bits not in (2, 4, 8):
        raise UnsupportedDtypeError(f"{what}: {bits}-bit GPTQ is not supported (format gptq, 2/4/8 bits); "
                                    "skip this layer")
    s = np.asarray(scales)
    groups, out_f = s.shape
    need(np.asarray(qweight).ndim == 2 and np.asarray(qweight).shape[1] == out_f, what,
         f"qweight {np.asarray(qweight).shape} does not have the {out_f} output columns of scales")
    need_shape(np.asarray(qzeros), (groups, out_f * bits // 32), f"{what} qzeros")
    q = unpack_words(qweight, bits, axis=0)                    # (in_padded, out)
    in_f = q.shape[0] if g_idx is None else int(np.asarray(g_idx).shape[0])
    need(in_f <= q.shape[0], what, f"g_idx has {in_f} rows but qweight packs only {q.shape[0]}")
    q = q[:in_f]
    z = unpack_words(qzeros, bits, axis=1)                     # (groups, out)
    if checkpoint_format == "gptq":
        z = (z + 1) & ((1 << bits) - 1)
    if g_idx is None:
        size = group_size or in_f // groups
        need(size > 0 and -(-in_f // size) == groups, what, f"{groups} groups do not cover {in_f} rows")
        g = np.arange(in_f) // size
    else:
        g = np.asarray(g_idx).astype(np.int64)
        need(g.ndim == 1 and bool(np.all((g >= 0) & (g < groups))), what,
             f"g_idx values must lie in [0, {groups})")
    w = s.astype(np.float32)[g] * (q - z[g]).astype(np.float32)
    return round_to(w, float_code(s)).T.copy()
