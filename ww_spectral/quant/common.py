"""Shared pieces of the dequantisers: bit unpacking, the library's output rounding, shape checks.

Every dequantiser is a pure function from raw stored arrays (numpy, as the safetensors file holds them)
to a float32 matrix (out_features, in_features), the orientation of nn.Linear.weight.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..errors import CheckpointError, UnsupportedDtypeError

# The dtype a library materialises its dequantised weight in (scales' dtype, mostly): safetensors code ->
# numpy. Rounding our float32 result to it reproduces the library's numbers exactly (see `round_to`).
_ROUND = {"F16": np.dtype(np.float16), "BF16": np.dtype(ml_dtypes.bfloat16), "F32": None, "F64": None}


def round_to(values: np.ndarray, code: str | None) -> np.ndarray:
    """`values` (float32) rounded once to the float type `code` ("F16", "BF16"; "F32"/None: unchanged), as float32.

    The libraries compute (q - z) * s in the scales' dtype; q - z is a small integer, exact in any float
    type, so the float32 product rounded once to that dtype equals their product bit for bit.
    """
    target = _ROUND.get(code or "F32")
    out = np.asarray(values, dtype=np.float32)
    return out if target is None else out.astype(target).astype(np.float32)


def float_code(arr: np.ndarray) -> str:
    """Safetensors code of a float array's dtype (for `round_to`)."""
    dt = np.dtype(arr.dtype)
    if dt == np.float16:
        return "F16"
    if dt == np.dtype(ml_dtypes.bfloat16):
        return "BF16"
    if dt == np.float64:
        return "F64"
    return "F32"


def as_float32(arr: np.ndarray, what: str) -> np.ndarray:
    """A float array (F16/BF16/F32/F64/float8) as float32; integer input is an error naming `what`."""
    a = np.asarray(arr)
    if a.dtype.kind not in "fV":  # ml_dtypes' bfloat16 / float8 types have kind "V"
        raise CheckpointError(f"{what}: expected a float tensor, got {a.dtype}; the file does not hold this format")
    return a.astype(np.float32)


def unpack_words(words: np.ndarray, bits: int, *, axis: int) -> np.ndarray:
    """Unpack `bits`-wide fields from int32/uint32 words along `axis`, lowest bits first, as int32 in [0, 2**bits).

    Word w holds elements w*k .. w*k+k-1 with k = 32 // bits; element j of the word sits at bit j*bits.
    (GPTQ qweight packs along rows, GPTQ qzeros / AWQ along columns, compressed-tensors along columns.)
    """
    if bits not in (2, 4, 8):
        raise UnsupportedDtypeError(f"{bits}-bit packing: only 2, 4 and 8 bits are unpacked; skip this layer")
    w = np.ascontiguousarray(words).view(np.uint32)
    k = 32 // bits
    shifts = (np.arange(k, dtype=np.uint32) * bits)
    mask = np.uint32((1 << bits) - 1)
    moved = np.moveaxis(w, axis, -1)
    fields = (moved[..., None] >> shifts) & mask           # (..., words, k)
    fields = fields.reshape(*moved.shape[:-1], moved.shape[-1] * k)
    return np.moveaxis(fields, -1, axis).astype(np.int32)


def need_shape(arr: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    """CheckpointError unless `arr.shape == shape` (a damaged or mislabelled quantised layer)."""
    if tuple(arr.shape) != tuple(shape):
        raise CheckpointError(f"{what}: shape {tuple(arr.shape)} does not match the expected {tuple(shape)}; "
                              "the quantisation tensors of this layer disagree (damaged or a different format)")


def need(cond: bool, what: str, problem: str) -> None:
    """CheckpointError naming `what` unless `cond`."""
    if not cond:
        raise CheckpointError(f"{what}: {problem}; the quantisation tensors of this layer are inconsistent "
                              "(damaged file or a different format)")


def expand_scale(scale: np.ndarray, shape: tuple[int, int], *, block: tuple[int, int] | None = None,
                 what: str) -> np.ndarray:
    """A scale tensor broadcast to the full (out, in) matrix, float32.

    Recognised layouts (the shape decides): per-tensor ([], [1], [1, 1]); per-channel ([out], [out, 1]);
    per-group along the input ([out, G], G > 1 dividing in: column j uses group j // (in / G)); block
    ([ceil(out / bh), ceil(in / bw)], `block` = (bh, bw), or 128 x 128 when it fits, as DeepSeek-V3 and
    Qwen3 FP8 checkpoints store it).
    """
    out_f, in_f = shape
    s = as_float32(scale, what)
    if s.size == 1:
        return np.full(shape, s.reshape(()), dtype=np.float32)
    if s.ndim == 1:
        s = s[:, None]
    need(s.ndim == 2, what, f"scale of shape {tuple(scale.shape)} is not 0-, 1- or 2-D")
    rows, cols = s.shape
    if rows == out_f and cols == 1:
        return np.broadcast_to(s, shape).copy()
    if rows == out_f and block is None:
        need(in_f % cols == 0, what, f"{cols} scale groups do not divide the {in_f} input features")
        return np.repeat(s, in_f // cols, axis=1)
    if block is None:
        block = (128, 128)
    bh, bw = block
    need(rows == -(-out_f // bh) and cols == -(-in_f // bw), what,
         f"block scale of shape {tuple(s.shape)} does not tile a {out_f} x {in_f} matrix in {bh} x {bw} blocks")
    return np.repeat(np.repeat(s, bh, axis=0), bw, axis=1)[:out_f, :in_f]


# FP4 e2m1 code -> value (the OCP MX table: sign bit 3, then exponent and mantissa; code 8 is -0.0), as
# transformers (integrations/mxfp4.py FP4_VALUES) and compressed-tensors (nvfp4 kE2M1ToFloat) decode it.
FP4_E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
                    dtype=np.float32)


def unpack_fp4(codes: np.ndarray) -> np.ndarray:
    """float32 [..., 2 n] from uint8 [..., n] holding two FP4 e2m1 codes per byte, the low nibble first (the
    order MXFP4 (GPT-OSS) and compressed-tensors' nvfp4 both pack)."""
    values = np.empty((*codes.shape, 2), dtype=np.float32)
    values[..., 0] = FP4_E2M1[codes & 0x0F]
    values[..., 1] = FP4_E2M1[codes >> 4]
    return values.reshape(*codes.shape[:-1], codes.shape[-1] * 2)
