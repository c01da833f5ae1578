"""Getting one planned layer's data: THE dispatch on LayerPlan.read_kind (records.LayerPlan documents the kinds).

Every way of running layers (in process, forked workers, Ray chunks, plots) reads through `read_layer`, so a
dequantised, per-expert, adapter or delta matrix is the same matrix whichever command analysed it. Each kind's
reading lives beside the format it belongs to (experts.py, quant/, adapters.py, deltas.py); this module only
routes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import adapters, deltas, experts
from .quant import plan as quant_plan
from .records import LayerPlan

__all__ = ["READ_KINDS", "read_layer"]

READ_KINDS = ("tensor", "expert", "dequant", "lora_update", "lora_merged", "base_delta")


def read_layer(checkpoint: Any, plan: LayerPlan, *, dtype: np.dtype = np.float32) -> np.ndarray:
    """The data of `plan` in `dtype` (float32 or float64), shaped plan.shape: the stored tensor for
    read_kind "tensor" (what layers.layer_matrices slices), else the one matrix the kind defines.

    checkpoint: an opened checkpoint (`.read(name, dtype=)`; formats with quantised or stacked tensors
    add what their kind needs). Raises ValueError for a read_kind this version does not know.
    """
    kind = plan.read_kind
    if kind == "tensor":
        return checkpoint.read(plan.tensor_name, dtype=dtype)
    if kind == "dequant":
        return quant_plan.read_dequant(checkpoint, plan, dtype=dtype)
    if kind == "expert":
        return experts.read_expert(checkpoint, plan, dtype=dtype)
    if kind == "base_delta":
        return deltas.read_base_delta(checkpoint, plan, dtype=dtype, read=read_layer)
    if kind == "lora_update":
        return adapters.read_lora_update(checkpoint, plan, dtype=dtype)
    if kind == "lora_merged":
        return adapters.read_lora_merged(checkpoint, plan, dtype=dtype)
    raise ValueError(f"{plan.tensor_name}: read_kind {kind!r} is not one of {READ_KINDS} or has no reader yet")
