"""Which tensors are layers, and the matrices each one contributes (WeightWatcher 0.7.7's rules).

- 2-D tensors are dense layers (Linear, embeddings, lm_head, GPT-2 Conv1D): one matrix.
- 4-D tensors (out, in, kh, kw) are Conv2d kernels: one out x in matrix per kernel position
  (rf = kh*kw slices), pooled into one ESD; WW scales every conv2d eigenvalue by 0.5.
- Anything else (biases, norms, 3-D tensors, scalars) is skipped with a reason.
- Size filter: analysed only if min_evals <= M*rf <= max_evals and N <= max_N.
- float8 and integer (packed/quantised) dtypes are skipped: their values are not the weights.
"""

from __future__ import annotations

import numpy as np

from .records import FLOAT_DTYPES, AnalysisOptions, LayerPlan, TensorInfo

CONV2D_EVAL_SCALE = 0.5  # WW's conv2d_norm multiplies W by sqrt(1/2)


def _longname(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


def plan_layer(info: TensorInfo, layer_id: int, options: AnalysisOptions) -> LayerPlan:
    """Decide, from the header alone, whether and how `info` is analysed.

    N, M: max/min side of the (slice) matrix; rf: slices pooled; num_evals = M*rf;
    est_bytes: working memory of the analysis (the matrix in float64 + two Gram-sized buffers).
    skip_code: None (analysed) or 'not_matrix', 'empty', 'unsupported_dtype', 'size_filter'; skip_reason:
    the same in prose, naming what would make it a layer.
    """
    shape = tuple(int(s) for s in info.shape)
    base = {"tensor_name": info.name, "longname": _longname(info.name), "layer_id": layer_id,
            "shape": shape, "dtype": info.dtype}
    if len(shape) not in (2, 4):
        return LayerPlan(**base, layer_type="other", N=0, M=0, Q=float("nan"), rf=0, num_evals=0,
                         skip_code="not_matrix",
                         skip_reason=f"{len(shape)}-D tensor: only 2-D (dense) and 4-D (conv2d) are layers")
    if len(shape) == 2:
        layer_type, rows, cols, rf = "dense", shape[0], shape[1], 1
    else:
        layer_type, rows, cols, rf = "conv2d", shape[0], shape[1], shape[2] * shape[3]
    N, M = max(rows, cols), min(rows, cols)
    if options.ww_compat_conv_nm and layer_type == "conv2d" and rf % 2 == 0 and rows < cols:
        N, M = rows, cols  # WW 0.7.7's swapped N/M for even kernels with out < in (its bug, on request)
    num_evals = min(rows, cols) * rf
    Q = N / M if M > 0 else float("nan")
    est = 8 * rows * cols * rf + 2 * 8 * min(rows, cols) ** 2
    plan = dict(base, layer_type=layer_type, N=N, M=M, Q=Q, rf=rf, num_evals=num_evals, est_bytes=est)
    if min(shape) == 0:
        return LayerPlan(**plan, skip_code="empty", skip_reason="tensor has a zero-length dimension")
    if info.dtype not in FLOAT_DTYPES:
        return LayerPlan(**plan, skip_code="unsupported_dtype",
                         skip_reason=f"dtype {info.dtype}: float8 / integer (packed or quantised) values "
                                     "are not the weights; only F64/F32/F16/BF16 are analysed")
    if not options.min_evals <= num_evals <= options.max_evals or max(rows, cols) > options.max_N:
        return LayerPlan(**plan, skip_code="size_filter",
                         skip_reason=f"needs {options.min_evals} <= M*rf <= {options.max_evals} and "
                                     f"N <= {options.max_N}; has M*rf={num_evals}, N={max(rows, cols)}")
    return LayerPlan(**plan, skip_code=None)


def layer_matrices(plan: LayerPlan, array: np.ndarray) -> list[np.ndarray]:
    """The matrices of one planned layer: [W] for dense, the kh*kw (out x in) slices for conv2d.

    array: the tensor as stored (shape plan.shape). Slices are views where possible.
    """
    a = np.asarray(array)
    if tuple(a.shape) != tuple(plan.shape):
        raise ValueError(f"{plan.tensor_name}: data shape {a.shape} != planned {plan.shape}")
    if plan.layer_type == "dense":
        return [a]
    if plan.layer_type == "conv2d":
        kh, kw = a.shape[2], a.shape[3]
        return [a[:, :, i, j] for i in range(kh) for j in range(kw)]
    raise ValueError(f"{plan.tensor_name}: layer_type {plan.layer_type!r} has no matrices")


def eigenvalue_scale(plan: LayerPlan) -> float:
    """Factor applied to every eigenvalue of the layer (WW's conv2d_norm)."""
    return CONV2D_EVAL_SCALE if plan.layer_type == "conv2d" else 1.0
