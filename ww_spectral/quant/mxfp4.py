"""MXFP4 expert stacks (GPT-OSS's safetensors checkpoints): detection from the header and the dequantisation.

Stored per stack P (e.g. ``model.layers.0.mlp.experts.gate_up_proj``), E experts, R output rows, G blocks of
32 input values per row:
    P_blocks  U8 [E, R, G, 16]   two FP4 (e2m1) codes per byte: low nibble first, then high
    P_scales  U8 [E, R, G]       one E8M0 exponent per block: scale = 2 ** (byte - 127)
(`P_bias` is a plain 2-D bias and stays the skipped row it already is.)
Dequantised (`dequantize_mxfp4`): value = FP4_E2M1[code] * scale (quant/common.py), expert e's matrix is [R, 32 G] = (out, in),
so the logical stack is [E, R, 32 G] in the "out_in" orientation of ww_spectral/experts.py. transformers'
`convert_moe_packed_tensors` computes the same products in bfloat16 and returns the stack transposed to
[E, in, out] (what GPT-OSS's bf16 checkpoints store): an FP4 value has at most 2 significant bits and the
scale is a power of two, so every product is exact in bfloat16 and in float32 alike and the two agree bit
for bit (tests/ww_spectral/test_quant_mxfp4.py). Like torch.ldexp there, each value is scaled by the power of
two itself (np.ldexp), so a scale byte of 255 keeps 0.5 * 2 ** 128 finite and turns 1.5 * 2 ** 128 into inf:
such a layer fails as non-finite.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError
from ..records import TensorInfo
from .common import unpack_fp4

BLOCKS_SUFFIX, SCALES_SUFFIX = "_blocks", "_scales"
QUANT_FORMAT = "mxfp4"
SCALE_BIAS = 127


@dataclass(frozen=True)
class Mxfp4Stack:
    """One MXFP4 stack as the header shows it: the stored blocks and scales, and the dequantised [E, R, 32 G]."""

    prefix: str
    blocks: TensorInfo
    scales: TensorInfo

    @property
    def shape(self) -> tuple[int, int, int]:
        """(experts, out, in) of the dequantised stack."""
        experts, rows, groups, per = (int(s) for s in self.blocks.shape)
        return experts, rows, groups * per * 2

    def logical_info(self) -> TensorInfo:
        """The dequantised stack as a 3-D float tensor named P (what the experts step splits; rows name it, as
        they name GPT-OSS's bf16 stack P, so a quantised copy's rows line up with its original's)."""
        return TensorInfo(name=self.prefix, shape=self.shape, dtype="F32", file=self.blocks.file,
                          nbytes=self.blocks.nbytes + self.scales.nbytes)


def stored_names(prefix: str) -> tuple[str, str]:
    """(blocks, scales) tensor names of stack P."""
    return prefix + BLOCKS_SUFFIX, prefix + SCALES_SUFFIX


def find_mxfp4_stacks(infos: Iterable[TensorInfo]) -> tuple[Mxfp4Stack, ...]:
    """Every consistent (P_blocks, P_scales) pair: U8 blocks [E, R, G, B], U8 scales [E, R, G]. Names and
    dtypes and shapes decide (a checkpoint's config may lack the quantization_config); a pair whose shapes
    disagree is not a stack, and its tensors stay the skipped rows any U8 tensor gives."""
    by_name = {i.name: i for i in infos}
    found = []
    for name, blocks in by_name.items():
        if not name.endswith(BLOCKS_SUFFIX):
            continue
        prefix = name[: -len(BLOCKS_SUFFIX)]
        scales = by_name.get(stored_names(prefix)[1])
        if (scales is None or blocks.dtype != "U8" or scales.dtype != "U8" or len(blocks.shape) != 4
                or tuple(blocks.shape[:-1]) != tuple(scales.shape) or min(blocks.shape) < 1):
            continue
        found.append(Mxfp4Stack(prefix=prefix, blocks=blocks, scales=scales))
    return tuple(found)


def dequantize_mxfp4(blocks: np.ndarray, scales: np.ndarray, *, what: str = "mxfp4") -> np.ndarray:
    """float32 [..., R, 2 B G] from U8 blocks [..., R, G, B] and U8 scales [..., R, G] (module docstring).

    Raises CheckpointError when the arrays are not uint8 or their shapes disagree.
    """
    blocks, scales = np.asarray(blocks), np.asarray(scales)
    if blocks.dtype != np.uint8 or scales.dtype != np.uint8 or blocks.ndim < 2 or blocks.shape[:-1] != scales.shape:
        raise CheckpointError(f"{what}: MXFP4 blocks {blocks.dtype} {blocks.shape} and scales {scales.dtype} "
                              f"{scales.shape} do not match (uint8 [..., G, B] and uint8 [..., G])")
    values = unpack_fp4(blocks)  # [..., G, 2 B]
    exponents = (scales.astype(np.int32) - SCALE_BIAS)[..., None]
    with np.errstate(over="ignore"):  # byte 255: 0.5 * 2**128 is finite, 1.5 * 2**128 is inf, as in the reference
        np.ldexp(values, exponents, out=values)  # in place: peak memory is the float32 matrix once
    return values.reshape(*blocks.shape[:-2], blocks.shape[-2] * blocks.shape[-1] * 2)


def read_expert_slab(checkpoint, prefix: str, expert: int) -> np.ndarray:
    """Expert `expert`'s dequantised (out, in) float32 matrix of the MXFP4 stack P = `prefix`: only that
    expert's blocks and scales are read where the checkpoint can (`raw_rows`)."""
    raw_rows = getattr(checkpoint, "raw_rows", None)
    names = stored_names(prefix)
    if callable(raw_rows):
        blocks, scales = (raw_rows(n, expert, expert + 1) for n in names)
    else:
        blocks, scales = (checkpoint.raw(n)[expert:expert + 1] for n in names)
    return dequantize_mxfp4(blocks, scales, what=prefix)[0]

