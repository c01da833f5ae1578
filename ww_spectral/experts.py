"""Mixture-of-experts weights stored as one 3-D stack per block: split into one matrix per expert.

Layouts (E experts; names after ``model.layers.N.mlp.experts.``, GGUF's ``blk.N.ffn_*_exps``):
- "out_in": [E, out, in] - transformers v5 Mixtral / Qwen-MoE / OLMoE / DeepSeek (`F.linear(x, w[e])`),
  and every GGUF ``ffn_*_exps`` tensor in numpy order;
- "in_out": [E, in, out] - GPT-OSS and Llama-4 (`x @ w[e]`); each expert is transposed to (out, in).
Fused gate/up stacks (``gate_up_proj``, ``ffn_gate_up_exps``) hold both projections along the output dim:
"halves" (gate first, then up: Mixtral v5 `.chunk(2, dim=-1)`, Llama-4) or "interleaved" (GPT-OSS:
`gate_up[..., ::2], gate_up[..., 1::2]`). Split, each expert gives a gate (role mlp_gate) and an up (mlp_up)
matrix, so fused and unfused checkpoints of one model give the same rows.

Rows keep `tensor_name` = the stacked tensor and add `expert` (and `part` for a split fused stack).
In the analysis: `split_expert_stacks` (a plan step of ww_spectral/model.py) turns a stack's plan into one
plan per expert (and part), read_kind "expert", plan.shape = that matrix's (out, in); `read_expert` (the
"expert" branch of ww_spectral/layer_read.py) gives that matrix.
Memory: an expert is a contiguous slab of the stack ([E, a, b] C-order), so `expert_byte_range` lets a reader
map one expert at a time (peak memory = one expert's matrix, not the stack). `read_expert` uses a
checkpoint's `read_rows(name, start, stop, dtype=)` (stack[start:stop], or None where the tensor's reader
cannot read part of it) where it has one; otherwise it reads
the whole stack once and keeps it for the stack's next expert (the plans of one stack are consecutive).
A plan whose tensor is one expert's own 2-D matrix (``experts.5.w1``: its expert column comes from the name)
reads as that tensor.
Summaries: `expert_balanced_mean` averages each (block, role) group of expert rows first, so 128 experts
count as one layer of their block rather than drowning the attention and dense layers.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .layers import plan_layer
from .quant import mxfp4
from .records import AnalysisOptions, LayerPlan, TensorInfo
from .roles import TensorRole, is_expert_stack, tensor_role

__all__ = ["ExpertLayout", "ExpertMatrix", "expert_balanced_mean", "expert_byte_range", "expert_layout",
           "expert_matrix", "is_expert_stack", "iter_expert_matrices", "plan_experts", "read_expert", "stack_layout",
           "split_expert_stacks"]

ORIENTATIONS = ("out_in", "in_out")
FUSED = ("", "halves", "interleaved")
_IN_OUT_MODELS = frozenset({"gpt_oss", "llama4", "llama4_text"})
_INTERLEAVED_MODELS = frozenset({"gpt_oss"})


@dataclass(frozen=True)
class ExpertLayout:
    """How one 3-D stack stores its experts: orientation ("out_in" | "in_out") and fused gate/up split."""

    orientation: str = "out_in"
    fused: str = ""

    def __post_init__(self) -> None:
        if self.orientation not in ORIENTATIONS or self.fused not in FUSED:
            raise ValueError(f"ExpertLayout({self.orientation!r}, {self.fused!r}): orientation in {ORIENTATIONS}, "
                             f"fused in {FUSED}")


@dataclass(frozen=True)
class ExpertMatrix:
    """One matrix a stack contributes: expert index, part ("" | "gate" | "up"), role and (out, in) shape."""

    tensor_name: str
    expert: int
    part: str
    role: str
    shape: tuple[int, int]


def _is_fused(name: str) -> bool:
    low = name.lower()
    return "gate_up" in low or "w13" in low


def expert_layout(info: TensorInfo, config: Mapping | None = None) -> ExpertLayout:
    """The layout of a stack, from the model type (config.json) and, failing that, the hidden size.

    With `hidden_size` known, the side that equals it tells the orientation (it is the input of gate/up
    and the output of down); otherwise the transformers v5 / GGUF default "out_in" with "halves".
    """
    cfg = config if isinstance(config, Mapping) else {}
    model_type = str(cfg.get("model_type", "")).lower()
    fused = ("interleaved" if model_type in _INTERLEAVED_MODELS else "halves") if _is_fused(info.name) else ""
    if model_type in _IN_OUT_MODELS:
        return ExpertLayout("in_out", fused)
    hidden = cfg.get("hidden_size")
    _, a, b = info.shape
    if isinstance(hidden, int) and (a == hidden) != (b == hidden):
        is_down = tensor_role(info.name).role == "mlp_down"
        out_is_a = (a == hidden) if is_down else (b == hidden)
        return ExpertLayout("out_in" if out_is_a else "in_out", fused)
    return ExpertLayout("out_in", fused)


def stack_layout(info: TensorInfo, config: Mapping | None, quant_format: str = "") -> ExpertLayout:
    """The layout a stack's experts are read in: `expert_layout`, except an MXFP4 stack, whose dequantised
    blocks are always [E, out, in] (ww_spectral/quant/mxfp4.py) whatever the model stores in bf16."""
    layout = expert_layout(info, config)
    return ExpertLayout("out_in", layout.fused) if quant_format == mxfp4.QUANT_FORMAT else layout


def plan_experts(info: TensorInfo, layout: ExpertLayout, *, split_fused: bool = True) -> tuple[ExpertMatrix, ...]:
    """The matrices of a stack, from its header: E (or 2E for a split fused stack) entries, expert order."""
    experts, a, b = info.shape
    out_f, in_f = (a, b) if layout.orientation == "out_in" else (b, a)
    role = tensor_role(info.name).role
    if layout.fused and split_fused:
        half = (out_f // 2, in_f)
        return tuple(ExpertMatrix(info.name, e, part, r, half) for e in range(experts)
                     for part, r in (("gate", "mlp_gate"), ("up", "mlp_up")))
    return tuple(ExpertMatrix(info.name, e, "", role, (out_f, in_f)) for e in range(experts))


def expert_byte_range(shape: tuple[int, int, int], itemsize: float, expert: int) -> tuple[int, int]:
    """[start, end) bytes of expert `expert` within the stack's data (C-order [E, a, b])."""
    experts, a, b = shape
    if not 0 <= expert < experts:
        raise IndexError(f"expert {expert} out of range 0..{experts - 1}")
    per = int(math.ceil(a * b * itemsize))
    return expert * per, (expert + 1) * per


def expert_matrix(slab: np.ndarray, layout: ExpertLayout, part: str = "") -> np.ndarray:
    """One expert's (out, in) matrix from its [a, b] slab (or [1, a, b]); `part` "gate" / "up" of a fused stack."""
    m = np.asarray(slab)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"an expert slab is 2-D, got shape {m.shape}")
    w = m if layout.orientation == "out_in" else m.T
    if not part:
        return w
    if part not in ("gate", "up") or not layout.fused:
        raise ValueError(f"part {part!r} needs a fused layout and is 'gate' or 'up'")
    if w.shape[0] % 2:
        raise ValueError(f"fused gate/up with an odd output size {w.shape[0]} cannot be split")
    if layout.fused == "interleaved":
        return w[0::2] if part == "gate" else w[1::2]
    half = w.shape[0] // 2
    return w[:half] if part == "gate" else w[half:]


def iter_expert_matrices(stack: np.ndarray, info: TensorInfo, layout: ExpertLayout, *,
                         split_fused: bool = True) -> Iterator[tuple[ExpertMatrix, np.ndarray]]:
    """(plan, matrix view) for every matrix of an in-memory stack, in `plan_experts` order."""
    arr = np.asarray(stack)
    for plan in plan_experts(info, layout, split_fused=split_fused):
        yield plan, expert_matrix(arr[plan.expert], layout, plan.part)


# ---------------------------------------------------------------- the plan step and the read


def _expert_plan(stack: LayerPlan, info: TensorInfo, m: ExpertMatrix, options: AnalysisOptions) -> LayerPlan:
    """The plan of one expert matrix: plan_layer's rules (selection, dtype, size filter) on its 2-D shape."""
    # A GGUF- or MXFP4-quantised stack (quant/plan.py set its format) reads dequantised, one expert's slab at
    # a time (Checkpoint.read_rows / raw_rows): its experts are planned as the float matrices they become.
    dequantised = stack.quant_format.startswith("gguf_") or stack.quant_format == mxfp4.QUANT_FORMAT
    flat = TensorInfo(name=info.name, shape=m.shape, dtype="F32" if dequantised else info.dtype, file=info.file,
                      nbytes=info.nbytes // max(1, int(info.shape[0])))
    plan = plan_layer(flat, stack.layer_id, options)
    where = TensorRole(stack.block, m.role, m.expert, stack.stack)
    suffix = f".{m.expert}" + (f".{m.part}" if m.part else "")
    return dataclasses.replace(plan, dtype=info.dtype, quant_format=stack.quant_format,
                               longname=stack.longname + suffix, read_kind="expert", expert=m.expert,
                               part=m.part, role=where.role, role_group=where.group, block=stack.block,
                               stack=stack.stack)


def split_expert_stacks(plans: list[LayerPlan], *, infos: list[TensorInfo], config: Mapping | None,
                        options: AnalysisOptions) -> list[LayerPlan]:
    """Plan step (ww_spectral/model.py PLAN_STEPS): each 3-D expert stack's plan becomes one plan per expert
    (gate and up apart for a fused stack), in expert order, where the stack was. Other plans pass unchanged.

    A fused stack with an odd output size cannot be halved: it stays one skipped plan saying so.
    """
    by_name = {i.name: i for i in infos}
    out: list[LayerPlan] = []
    for p in plans:
        info = _planned_stack(p, by_name.get)
        if p.read_kind != "tensor" or info is None or not is_expert_stack(info):
            out.append(p)
            continue
        layout = stack_layout(info, config, p.quant_format)
        out_size = info.shape[1] if layout.orientation == "out_in" else info.shape[2]
        if layout.fused and int(out_size) % 2:
            out.append(dataclasses.replace(p, skip_code="not_matrix", skip_reason=(
                f"fused gate/up expert stack with an odd output size {out_size}: cannot be split into gate "
                "and up; store the projections apart")))
            continue
        out.extend(_expert_plan(p, info, m, options) for m in plan_experts(info, layout))
    return out


def _planned_stack(plan: LayerPlan, lookup: Callable[[str], TensorInfo | None]) -> TensorInfo | None:
    """The header entry a plan splits: the stored tensor, or for an MXFP4 stack (stored as U8 blocks and
    scales) the dequantised [E, out, in] float stack they make. lookup: header entry by name, or None."""
    if plan.quant_format != mxfp4.QUANT_FORMAT:
        return lookup(plan.tensor_name)
    stored = [lookup(name) for name in mxfp4.stored_names(plan.tensor_name)]
    stacks = mxfp4.find_mxfp4_stacks([i for i in stored if i is not None])
    return stacks[0].logical_info() if stacks else None


class _LastStacks:
    """The last whole stacks read from checkpoints without `read_rows`: a stack's next experts reuse it (the
    plans of one stack are consecutive), so a stack is read once, not once per expert. Two entries per
    process: a base delta reads expert e of the model's stack, then of the base's, in turn."""

    SIZE = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # key (id(checkpoint), name, dtype) -> (weakref to the checkpoint, array); most recent last
        self._entries: dict[tuple, tuple[Any, np.ndarray]] = {}

    def get(self, checkpoint: Any, name: str, dtype: np.dtype) -> np.ndarray:
        key = (id(checkpoint), name, np.dtype(dtype).str)
        with self._lock:
            hit = self._entries.pop(key, None)
            if hit is not None and hit[0]() is checkpoint:  # a new checkpoint never hits an old entry
                self._entries[key] = hit
                return hit[1]
        array = checkpoint.read(name, dtype=dtype)
        try:
            owner = weakref.ref(checkpoint)
            weakref.finalize(checkpoint, self.clear, key)  # the stack goes with its checkpoint
        except TypeError:  # not weak-referenceable: never cached
            return array
        with self._lock:
            self._entries[key] = (owner, array)
            while len(self._entries) > self.SIZE:
                self._entries.pop(next(iter(self._entries)))
        return array

    def clear(self, key: tuple | None = None) -> None:
        """Forget every stack (or only `key`'s)."""
        with self._lock:
            if key is None:
                self._entries.clear()
            else:
                self._entries.pop(key, None)


_LAST_STACK = _LastStacks()


def _stack_info(checkpoint: Any, name: str) -> TensorInfo:
    info_of = getattr(checkpoint, "info", None)
    if callable(info_of):
        return info_of(name)
    for info in checkpoint.tensors():
        if info.name == name:
            return info
    raise KeyError(f"no tensor named {name!r}")


def _info_or_none(checkpoint: Any, name: str) -> TensorInfo | None:
    try:
        return _stack_info(checkpoint, name)
    except KeyError:
        return None


def _read_layout(info: TensorInfo, plan: LayerPlan, config: Mapping | None) -> ExpertLayout:
    """The stack's layout as planned: the orientation the planned (out, in) shape implies where the stack's
    sides differ (config otherwise), the fused split from the config (GPT-OSS interleaves gate and up)."""
    layout = stack_layout(info, config, plan.quant_format)
    fused = layout.fused if plan.part else ""
    if plan.quant_format == mxfp4.QUANT_FORMAT:
        return ExpertLayout(layout.orientation, fused)
    _, a, b = (int(s) for s in info.shape)
    out_f, in_f = plan.shape
    k = 2 if plan.part else 1
    if (a, b) == (k * out_f, in_f) and (a, b) != (in_f, k * out_f):
        return ExpertLayout("out_in", fused)
    if (a, b) == (in_f, k * out_f) and (a, b) != (k * out_f, in_f):
        return ExpertLayout("in_out", fused)
    return ExpertLayout(layout.orientation, fused)


def read_expert(checkpoint: Any, plan: LayerPlan, *, dtype: np.dtype = np.float32) -> np.ndarray:
    """The (out, in) matrix of expert `plan.expert` (half `plan.part` of a fused stack) of the 3-D stack
    `plan.tensor_name`, as `dtype`, shape plan.shape.

    checkpoint: an opened checkpoint (`.tensors()` or `.info(name)`, `.read()`, `.ref.config`; with
    `read_rows(name, start, stop, dtype=)` -> stack[start:stop] only that expert's slab is read; read_rows
    returning None means "not for this tensor's reader"). Raises ValueError when the stored stack does not give
    the planned shape (the checkpoint changed since it was planned).
    """
    config = getattr(getattr(checkpoint, "ref", None), "config", None)
    if plan.quant_format == mxfp4.QUANT_FORMAT:
        stack = _planned_stack(plan, lambda name: _info_or_none(checkpoint, name))
        if stack is None or plan.expert is None or not 0 <= plan.expert < int(stack.shape[0]):
            raise ValueError(f"{plan.tensor_name}: its stored MXFP4 blocks and scales have no expert {plan.expert}; "
                             "the checkpoint changed since it was planned: analyse it again")
        slab = mxfp4.read_expert_slab(checkpoint, plan.tensor_name, plan.expert)
        return _checked_matrix(expert_matrix(slab, _read_layout(stack, plan, config), plan.part), plan, dtype)
    info = _stack_info(checkpoint, plan.tensor_name)
    if len(info.shape) == 2 and tuple(info.shape) == tuple(plan.shape):
        # one expert stored on its own (Mixtral's experts.E.w1): the tensor is the matrix
        return checkpoint.read(plan.tensor_name, dtype=dtype)
    if len(info.shape) != 3 or plan.expert is None or not 0 <= plan.expert < int(info.shape[0]):
        raise ValueError(f"{plan.tensor_name}: stored shape {tuple(info.shape)} has no expert {plan.expert}")
    layout = _read_layout(info, plan, config)
    read_rows = getattr(checkpoint, "read_rows", None)
    slab = read_rows(plan.tensor_name, plan.expert, plan.expert + 1, dtype=dtype) if callable(read_rows) else None
    if slab is None:  # no partial read here (None: this tensor's reader has none)
        slab = _LAST_STACK.get(checkpoint, plan.tensor_name, dtype)[plan.expert]
    return _checked_matrix(expert_matrix(slab, layout, plan.part), plan, dtype)


def _checked_matrix(matrix: np.ndarray, plan: LayerPlan, dtype: np.dtype) -> np.ndarray:
    """An expert's matrix as `dtype` in its own memory, after checking it has the planned shape."""
    if tuple(matrix.shape) != tuple(plan.shape):
        raise ValueError(f"{plan.tensor_name}: expert {plan.expert} is {tuple(matrix.shape)}, the plan has "
                         f"{tuple(plan.shape)}; the checkpoint changed since it was planned: analyse it again")
    return np.array(matrix, dtype=dtype, copy=True)  # own memory: never a view keeping the stack alive


def expert_balanced_mean(rows: Iterable[Mapping], metric: str) -> dict[str, float]:
    """Per-model means of `metric` over finite values that 128 experts cannot drown.

    rows: layer rows with `metric`, `block`, `role` and `expert` (None/NaN for non-expert rows).
    Returns {"mean": plain mean over all rows, "expert_mean": mean over expert rows, "block_mean": mean
    where each (block, role) group of expert rows first collapses to its own mean}.
    """
    plain, experts, groups, others = [], [], {}, []
    for row in rows:
        value = row.get(metric)
        if value is None or not np.isfinite(value):
            continue
        plain.append(float(value))
        expert = row.get("expert")
        if expert is None or (isinstance(expert, float) and math.isnan(expert)):
            others.append(float(value))
        else:
            experts.append(float(value))
            groups.setdefault((row.get("block"), row.get("role")), []).append(float(value))
    collapsed = others + [float(np.mean(v)) for v in groups.values()]

    def mean(values):
        return float(np.mean(values)) if values else math.nan

    return {"mean": mean(plain), "expert_mean": mean(experts), "block_mean": mean(collapsed)}
