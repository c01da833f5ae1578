"""AWQ packed int4 weights, GEMM layout (AutoAWQ / transformers' "awq" quant_method, version "gemm").

Stored per Linear: `qweight` int32 [in, out / 8] and `qzeros` int32 [groups, out / 8] (packed along the
OUTPUT dim in AWQ's interleaved order [0, 2, 4, 6, 1, 3, 5, 7]), `scales` f16 [groups, out].
W[i, o] = (q[i, o] - z[i // group_size, o]) * scales[i // group_size, o] in the scales' dtype, then
transposed to (out, in).
Reference: casper-hansen/AutoAWQ awq/utils/packing_utils.py (unpack_awq, reverse_awq_order with
AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7], dequantize_gemm). The GEMV layout ("gemv", "gemv_fast")
packs differently and is refused with the format's name.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedDtypeError
from .common import float_code, need, need_shape, round_to, unpack_words

AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)


def _reorder(fields: np.ndarray) -> np.ndarray:
    """Undo AWQ's interleave: within every 8 columns, column j comes from column AWQ_REVERSE_ORDER[j]."""
    cols = fields.shape[1]
    index = (np.arange(cols).reshape(-1, 8)[:, list(AWQ_REVERSE_ORDER)]).reshape(-1)
    return fields[:, index]


def dequantize_awq(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, *, bits: int = 4,
                   version: str = "gemm", what: str = "awq layer") -> np.ndarray:
    """float32 (out, in) weight of one AWQ GEMM layer; see the module docstring for the layout."""
    if version.lower() != "gemm":
        raise UnsupportedDtypeError(f"{what}: AWQ version {version!r} is not supported (format awq, GEMM layout "
                                    "only); skip this layer")
    if bits != 4:
        raise UnsupportedDtypeError(f"{what}: {bits}-bit AWQ is not supported (format awq, 4 bits); skip this layer")
    s = np.asarray(scales)
    groups, out_f = s.shape
    qw = np.asarray(qweight)
    need(qw.ndim == 2 and qw.shape[1] * 8 == out_f, what,
         f"qweight {qw.shape} does not pack the {out_f} output columns of scales")
    in_f = qw.shape[0]
    need(groups > 0 and in_f % groups == 0, what, f"{groups} groups do not divide {in_f} input rows")
    need_shape(np.asarray(qzeros), (groups, out_f // 8), f"{what} qzeros")
    q = _reorder(unpack_words(qw, 4, axis=1))
    z = _reorder(unpack_words(qzeros, 4, axis=1))
    size = in_f // groups
    w = (q - np.repeat(z, size, axis=0)).astype(np.float32) * np.repeat(s.astype(np.float32), size, axis=0)
    return round_to(w, float_code(s)).T.copy()
