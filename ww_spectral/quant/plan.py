"""Quantised layers in the analysis: the plan step that makes each one ONE dequantised layer, and its read.

    plan_quantized(plans, infos=, config=, options=)   ww_spectral/model.py's first PLAN_STEP (headers only)
    read_dequant(checkpoint, plan, dtype=)              ww_spectral/layer_read.py's "dequant" branch

Safetensors checkpoints (quant/detect.py finds the layers from names, dtypes, shapes and config.json's
quantization_config): the stored tensor a row names (qweight / weight / weight_packed) becomes a plan with
read_kind "dequant", the logical (out, in) shape, `quant_format` (QUANT_FORMATS) and `companions` = the
layer's other stored parts; each companion (scales, zeros, g_idx, SCB, absmax, quant_state, ...) gives a
skipped row, skip_code "quant_part", naming the layer it belongs to. A recognised format that cannot be
dequantised gives one skipped row, skip_code "unsupported_quant", naming the format.

GGUF files: every quantised 2-D tensor (dtype "GGUF_<TYPE>") becomes a "dequant" plan, quant_format
"gguf_<type>" (read with the gguf package's dequantisers, ww_spectral/readers/gguf.py); plain F32/F16/BF16
tensors stay "tensor" plans. Every plan of a .gguf file gets the Llama-style HF module path as longname
(readers/gguf.hf_name: blk.3.attn_q.weight -> model.layers.3.self_attn.q_proj), so a GGUF copy's rows line
up with its original's. 3-D expert stacks (blk.N.ffn_*_exps) keep their plan, with quant_format set,
for the experts step (ww_spectral/experts.py): Checkpoint.read of a GGUF stack returns it dequantised.

MXFP4 expert stacks (quant/mxfp4.py: P_blocks + P_scales, GPT-OSS): the blocks' plan becomes the plan of the
dequantised 3-D stack named P, quant_format "mxfp4", for the experts step (one plan per expert, each read by
dequantising that expert's bytes alone); the scales give a quant_part row.

bitsandbytes 4-bit stores its (out, in) only inside the quant_state tensor; the header gives the element
count, so the plan takes the factor pair whose input side is config.json's hidden_size (intermediate_size
for down projections). The read checks it against the state; a transposed guess is returned transposed
(the same singular values, so the same row); a guess the state contradicts fails the layer with a reason.

Memory: a read holds one layer's stored parts and its float32 matrix, never more.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import CheckpointError
from ..layers import plan_layer
from ..readers.gguf import hf_name
from ..records import AnalysisOptions, LayerPlan, TensorInfo
from ..roles import tensor_role
from . import mxfp4
from .detect import QuantizedLayer, dequantize_layer, find_quantized

__all__ = ["QUANT_FORMATS", "plan_quantized", "quant_format", "read_dequant"]

# quant_format values (the layers table's column; documented in ww_spectral/columns.py).
QUANT_FORMATS = ("fp8_e4m3", "fp8_e5m2", "gptq_int2", "gptq_int4", "gptq_int8", "awq_int4", "bnb_int8", "bnb_nf4",
                 "bnb_fp4", "ct_pack_quantized", "ct_int_quantized", "ct_naive_quantized", "ct_float_quantized",
                 "ct_nvfp4_pack_quantized", "ct_mxfp4_pack_quantized", "modelopt_nvfp4", "mxfp4", "gguf_<type>")
SKIP_PART = "quant_part"
SKIP_UNSUPPORTED = "unsupported_quant"
GGUF_PREFIX = "GGUF_"


def quant_format(layer: QuantizedLayer, primary: TensorInfo | None) -> str:
    """The quant_format column of a quantised layer, e.g. "gptq_int4", "fp8_e4m3", "ct_pack_quantized"."""
    fmt = layer.format
    if fmt.name in ("gptq", "awq"):
        return f"{fmt.name}_int{fmt.param('bits', 4)}"
    if fmt.name == "fp8":
        return "fp8_e5m2" if primary is not None and primary.dtype == "F8_E5M2" else "fp8_e4m3"
    if fmt.name.startswith("compressed-tensors:"):
        return "ct_" + fmt.name.split(":", 1)[1].replace("-", "_")
    return fmt.name  # bnb_int8, bnb_nf4, bnb_fp4, bnb_4bit


def _bnb4_shape(layer: QuantizedLayer, infos: Mapping[str, TensorInfo], config: Mapping | None) -> tuple[int, int] | None:
    """(out, in) of a bitsandbytes 4-bit layer from its packed size and config.json (None: cannot tell)."""
    packed = infos.get(layer.tensor_name)
    cfg = config if isinstance(config, Mapping) else {}
    if packed is None:
        return None
    numel = 2 * int(np.prod(packed.shape))  # two codes per byte (an odd count rounds up: checked at read)
    is_down = tensor_role(layer.tensor_name).role == "mlp_down"
    for key in (("intermediate_size", "hidden_size") if is_down else ("hidden_size", "intermediate_size")):
        side = cfg.get(key)
        if isinstance(side, int) and not isinstance(side, bool) and side > 0:
            for n in (numel, numel - 1):
                if n > 0 and n % side == 0:
                    return n // side, side
    return None


def _as_dense(info: TensorInfo, name: str, shape: tuple[int, int], layer_id: int,
              options: AnalysisOptions) -> LayerPlan:
    """plan_layer's decision for a float (out, in) matrix called `name` (selection, size filter, N, M)."""
    return plan_layer(TensorInfo(name=name, shape=shape, dtype="F32", file=info.file, nbytes=info.nbytes),
                      layer_id, options)


def _part_plan(plan: LayerPlan, prefix: str, rows_of: str, fmt: str) -> LayerPlan:
    """The skipped row of a stored part (scales, zeros, ...) of quantised layer `prefix`, analysed in the
    row(s) of `rows_of`."""
    return dataclasses.replace(
        plan, skip_code=SKIP_PART, quant_format=fmt, row_count=1,
        skip_reason=f"part of quantised layer {prefix} ({fmt}): analysed in the row of {rows_of}")


def _layer_plans(plans: list[LayerPlan], index: Mapping[str, int], infos: Mapping[str, TensorInfo],
                 layer: QuantizedLayer, config: Mapping | None, options: AnalysisOptions) -> None:
    """Replace, in `plans`, the plans of one quantised layer's stored tensors (its primary and parts)."""
    primary = infos.get(layer.tensor_name)
    if primary is None or layer.tensor_name not in index:
        return
    fmt = quant_format(layer, primary)
    i = index[layer.tensor_name]
    old = plans[i]
    companions = tuple(n for n in layer.stored if n != layer.tensor_name)
    shape = layer.shape
    if shape is None and not layer.skip_reason:
        shape = _bnb4_shape(layer, infos, config)
    base = dict(tensor_name=layer.tensor_name, dtype=primary.dtype, quant_format=fmt, companions=companions,
                read_kind="dequant")
    if layer.skip_reason or shape is None:
        why = layer.skip_reason or (f"bitsandbytes 4-bit layer ({fmt}): its matrix shape is only in the "
                                    "quant_state tensor and config.json has no hidden_size it factors by")
        # read_kind "dequant" although never read: later steps (experts) leave this one row alone.
        plans[i] = dataclasses.replace(old, skip_code=SKIP_UNSUPPORTED, row_count=1, quant_format=fmt,
                                       read_kind="dequant", companions=companions, longname=layer.prefix,
                                       skip_reason=f"quantised layer not dequantised: {why}")
    else:
        dense = _as_dense(primary, layer.prefix + ".weight", shape, old.layer_id, options)
        plans[i] = dataclasses.replace(dense, **base)
    for name in companions:
        j = index.get(name)
        if j is not None:
            plans[j] = _part_plan(plans[j], layer.prefix, layer.tensor_name, fmt)


def _mxfp4_plans(plans: list[LayerPlan], index: Mapping[str, int], stack: mxfp4.Mxfp4Stack,
                 options: AnalysisOptions) -> None:
    """An MXFP4 stack's stored blocks become the plan of the dequantised [E, out, in] stack, named P (the
    experts step splits it into one plan per expert, read_kind "expert"); its scales a quant_part row."""
    i, j = index.get(stack.blocks.name), index.get(stack.scales.name)
    if i is None:
        return
    logical = plan_layer(stack.logical_info(), plans[i].layer_id, options)
    plans[i] = dataclasses.replace(logical, dtype=stack.blocks.dtype, quant_format=mxfp4.QUANT_FORMAT,
                                   companions=(stack.blocks.name, stack.scales.name))
    if j is not None:
        plans[j] = _part_plan(plans[j], stack.prefix, f"{stack.prefix} (one per expert)", mxfp4.QUANT_FORMAT)


def _gguf_plan(plan: LayerPlan, info: TensorInfo, options: AnalysisOptions) -> LayerPlan:
    """A GGUF tensor's plan: HF longname; quantised 2-D tensors read by dequantisation."""
    longname = hf_name(info.name).removesuffix(".weight")
    if not info.dtype.startswith(GGUF_PREFIX):
        return dataclasses.replace(plan, longname=longname)
    fmt = "gguf_" + info.dtype[len(GGUF_PREFIX):].lower()
    if len(info.shape) != 2:  # expert stacks: the experts step's; norms/biases are never quantised
        return dataclasses.replace(plan, longname=longname, quant_format=fmt)
    dense = _as_dense(info, info.name, (int(info.shape[0]), int(info.shape[1])), plan.layer_id, options)
    return dataclasses.replace(dense, longname=longname, dtype=info.dtype, quant_format=fmt, read_kind="dequant")


def _is_gguf(info: TensorInfo) -> bool:
    return info.dtype.startswith(GGUF_PREFIX) or (info.file or "").lower().endswith(".gguf")


def plan_quantized(plans: list[LayerPlan], *, infos: Sequence[TensorInfo], config: Mapping | None,
                   options: AnalysisOptions) -> list[LayerPlan]:
    """The plan step (ww_spectral/model.py PLAN_STEPS): quantised layers as one "dequant" plan each, their
    parts as "quant_part" skips, GGUF tensors with HF longnames (module docstring). Headers + config only.

    plans: one per tensor of `infos`, same order (plans[k].tensor_name == infos[k].name); returns a new list
    of the same length and order.
    """
    out = list(plans)
    by_name = {info.name: info for info in infos}
    index = {p.tensor_name: k for k, p in enumerate(out)}
    stored = [i for i in infos if not _is_gguf(i)]
    for layer in find_quantized(stored, config):
        _layer_plans(out, index, by_name, layer, config, options)
    for stack in mxfp4.find_mxfp4_stacks(stored):
        _mxfp4_plans(out, index, stack, options)
    for k, plan in enumerate(out):
        info = by_name.get(plan.tensor_name)
        if info is not None and _is_gguf(info) and plan.read_kind == "tensor":
            out[k] = _gguf_plan(plan, info, options)
    return out


def _layer_of(checkpoint, plan: LayerPlan) -> QuantizedLayer:
    """The QuantizedLayer a "dequant" plan names, found again from its stored tensors' headers."""
    names = (plan.tensor_name, *plan.companions)
    infos = [checkpoint.info(n) for n in names]
    config = getattr(getattr(checkpoint, "ref", None), "config", None)
    for layer in find_quantized(infos, config):
        if layer.tensor_name == plan.tensor_name:
            return layer
    raise CheckpointError(f"{plan.tensor_name}: its stored parts ({', '.join(names)}) no longer form a quantised "
                          f"layer ({plan.quant_format}); the checkpoint changed since it was planned - plan it again")


def read_dequant(checkpoint, plan: LayerPlan, *, dtype=np.float32) -> np.ndarray:
    """The dequantised (out, in) matrix of a "dequant" plan, in `dtype` (float32 or float64), shaped plan.shape.

    checkpoint: an opened Checkpoint (`read`, `raw`, `info`, `ref.config`). GGUF tensors: Checkpoint.read
    (the gguf package's dequantisers); safetensors layers: quant/detect.dequantize_layer over the raw parts.
    Raises UnsupportedDtypeError (the analysis records a skip naming the format), CheckpointError when the
    stored parts disagree with each other or with the plan.
    """
    if plan.quant_format.startswith("gguf_"):
        return checkpoint.read(plan.tensor_name, dtype=dtype)
    layer = _layer_of(checkpoint, plan)
    matrix = dequantize_layer(layer, checkpoint.raw)
    want = tuple(plan.shape)
    if matrix.shape != want:
        if matrix.shape[::-1] != want:
            raise CheckpointError(f"{plan.tensor_name}: dequantised {plan.quant_format} matrix is "
                                  f"{matrix.shape[0]}x{matrix.shape[1]} but the header and config.json promised "
                                  f"{want[0]}x{want[1]}; the layer's stored parts or config.json are inconsistent")
        matrix = matrix.T  # bitsandbytes 4-bit, shape guessed transposed: same singular values
    return np.ascontiguousarray(matrix, dtype=dtype)
