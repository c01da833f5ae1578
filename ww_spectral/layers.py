"""Which tensors are layers, and the matrices each one contributes (WeightWatcher 0.7.7's rules).

- 2-D tensors are dense layers (Linear, embeddings, lm_head, GPT-2 Conv1D): one matrix.
- 4-D tensors (out, in, kh, kw) are Conv2d kernels: one out x in matrix per kernel position
  (rf = kh*kw slices), pooled into one ESD; WW scales every conv2d eigenvalue by 0.5.
- 3-D tensors (out, in, k) are Conv1d kernels only with options.conv1d (WW analyses nn.Conv1d modules
  but skips 3-D tensors of state dicts and files, whose default this keeps); MoE expert stacks
  (roles.is_expert_stack) never are: experts.split_expert_stacks plans them per expert. WW's nn.Conv1d
  rule, reproduced: N = max and M = min of the three sides, rf = 1; the matrices are W[o] (in x k) for
  every output channel o, and the ESD is the M largest of all their eigenvalues (WW's batched SVD of the
  3-D array, truncated to M values).
- Anything else (biases, norms, other 3-D tensors, scalars) is skipped with a reason.
- Selection (options.layers / include / exclude, selection.py): a tensor left out is skipped.
- pool=False: a conv2d kernel gives one row per kernel position (row_count = rf), each slice's own ESD
  with num_evals = M, and the size filter applies to M instead of M*rf (WW's pool=False iterator).
- Size filter: analysed only if min_evals <= M*rf <= max_evals and N <= max_N.
- float8 and integer (packed/quantised) dtypes are skipped: their values are not the weights.

Eigenvalue scale (eigenvalue_scale), as WW's apply_normalize_Wmats: conv2d eigenvalues x 0.5 pooled and
x rf/2 for a pool=False slice (its conv2d_count / 2). glorot_fix=True multiplies every eigenvalue by
(N + M) * r / 2 instead (W divided by kappa = sqrt(2 / ((N + M) r)), r = rf for a pool=False conv2d slice,
else 1), with no conv2d factor: the rescaling WW's code sets out to do. WW 0.7.7 accepts glorot_fix but
never applies it (it stores the flag as 'glorot_fit' and reads 'glorot_fix'); alpha and D do not change
with a scale, the norm columns do.
"""

from __future__ import annotations

import numpy as np

from .records import FLOAT_DTYPES, AnalysisOptions, LayerPlan, TensorInfo
from .roles import is_expert_stack, tensor_role
from .selection import not_selected_reason

CONV2D_EVAL_SCALE = 0.5  # WW's conv2d_norm multiplies W by sqrt(1/2)


def _longname(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


def plan_layer(info: TensorInfo, layer_id: int, options: AnalysisOptions) -> LayerPlan:
    """Decide, from the header alone, whether and how `info` is analysed.

    N, M: max/min side of the (slice) matrix; rf: slices pooled; num_evals = M*rf (M for a pool=False
    conv2d row); est_bytes: working memory of the analysis (the matrix in float64 + two Gram-sized
    buffers); row_count: rows it gives (rf for a pool=False conv2d kernel, else 1).
    skip_code: None (analysed) or 'not_matrix', 'not_selected', 'empty', 'unsupported_dtype',
    'size_filter'; skip_reason: the same in prose, naming what would make it a layer.
    block, role, role_group, stack, expert: roles.tensor_role of the name (expert: a per-expert 2-D tensor
    such as ``experts.5.w1``; 3-D stacks are split by experts.split_expert_stacks).
    """
    shape = tuple(int(s) for s in info.shape)
    where = tensor_role(info.name, shape=shape)
    base = {"tensor_name": info.name, "longname": _longname(info.name), "layer_id": layer_id,
            "shape": shape, "dtype": info.dtype, "block": where.block, "role": where.role,
            "role_group": where.group, "stack": where.stack, "expert": where.expert}
    conv1d = len(shape) == 3 and options.conv1d and not is_expert_stack(info)
    if len(shape) not in (2, 4) and not conv1d:
        hint = " (3-D Conv1d kernels with conv1d=True)" if len(shape) == 3 else ""
        return LayerPlan(**base, layer_type="other", N=0, M=0, Q=float("nan"), rf=0, num_evals=0,
                         skip_code="not_matrix",
                         skip_reason=f"{len(shape)}-D tensor: only 2-D (dense) and 4-D (conv2d) are layers{hint}")
    if conv1d:
        layer_type, N, M, rf = "conv1d", max(shape), min(shape), 1
        num_evals = M
        est = 8 * shape[0] * shape[1] * shape[2] + 8 * shape[0] * min(shape[1:]) ** 2
    else:
        if len(shape) == 2:
            layer_type, rows, cols, rf = "dense", shape[0], shape[1], 1
        else:
            layer_type, rows, cols, rf = "conv2d", shape[0], shape[1], shape[2] * shape[3]
        N, M = max(rows, cols), min(rows, cols)
        if options.ww_compat_conv_nm and layer_type == "conv2d" and rf % 2 == 0 and rows < cols:
            N, M = rows, cols  # WW 0.7.7's swapped N/M for even kernels with out < in (its bug, on request)
        num_evals = min(rows, cols) * rf
        est = 8 * rows * cols * rf + 2 * 8 * min(rows, cols) ** 2
    Q = N / M if M > 0 else float("nan")
    row_count = rf if layer_type == "conv2d" and not options.pool else 1
    if row_count > 1:
        num_evals = min(shape[0], shape[1])  # one kernel position per row
    plan = dict(base, layer_type=layer_type, N=N, M=M, Q=Q, rf=rf, num_evals=num_evals, est_bytes=est)
    why = not_selected_reason(tensor_name=info.name, longname=base["longname"], layer_id=layer_id,
                              layer_type=layer_type, layers=options.layers, include=options.include,
                              exclude=options.exclude)
    if why is not None:
        return LayerPlan(**plan, skip_code="not_selected", skip_reason=f"not selected: {why}")
    if min(shape) == 0:
        return LayerPlan(**plan, skip_code="empty", skip_reason="tensor has a zero-length dimension")
    if info.dtype not in FLOAT_DTYPES:
        return LayerPlan(**plan, skip_code="unsupported_dtype",
                         skip_reason=f"dtype {info.dtype}: float8 / integer (packed or quantised) values "
                                     "are not the weights; only F64/F32/F16/BF16 are analysed")
    largest = max(shape) if conv1d else max(shape[0], shape[1])
    if not options.min_evals <= num_evals <= options.max_evals or largest > options.max_N:
        what = "M" if row_count > 1 or conv1d else "M*rf"
        return LayerPlan(**plan, skip_code="size_filter",
                         skip_reason=f"needs {options.min_evals} <= {what} <= {options.max_evals} and "
                                     f"N <= {options.max_N}; has {what}={num_evals}, N={largest}")
    return LayerPlan(**plan, skip_code=None, row_count=row_count)


def layer_matrices(plan: LayerPlan, array: np.ndarray, *, slice_id: int | None = None) -> list[np.ndarray]:
    """The matrices of one planned layer: [W] for dense, the kh*kw (out x in) slices for conv2d (only
    slice `slice_id`, numbered i*kw + j, for a pool=False row), W[o] (in x k) per output channel for conv1d.

    array: the tensor as stored (shape plan.shape). Slices are views where possible.
    """
    a = np.asarray(array)
    if tuple(a.shape) != tuple(plan.shape):
        raise ValueError(f"{plan.tensor_name}: data shape {a.shape} != planned {plan.shape}")
    if plan.layer_type == "dense":
        return [a]
    if plan.layer_type == "conv2d":
        kh, kw = a.shape[2], a.shape[3]
        if slice_id is not None:
            return [a[:, :, slice_id // kw, slice_id % kw]]
        return [a[:, :, i, j] for i in range(kh) for j in range(kw)]
    if plan.layer_type == "conv1d":
        return [a[o] for o in range(a.shape[0])]
    raise ValueError(f"{plan.tensor_name}: layer_type {plan.layer_type!r} has no matrices")


def eigenvalue_scale(plan: LayerPlan, options: AnalysisOptions | None = None) -> float:
    """Factor applied to every eigenvalue of the layer (WW's conv2d_norm, or glorot_fix: module docstring)."""
    sliced = plan.row_count > 1
    if options is not None and options.glorot_fix:
        return (plan.N + plan.M) * (plan.rf if sliced else 1) / 2.0
    if plan.layer_type == "conv2d":
        return plan.rf / 2.0 if sliced else CONV2D_EVAL_SCALE
    return 1.0
