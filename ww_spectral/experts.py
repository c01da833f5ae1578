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
Memory: an expert is a contiguous slab of the stack ([E, a, b] C-order), so `expert_byte_range` lets a reader
map one expert at a time (peak memory = one expert's matrix, not the stack).
Summaries: `expert_balanced_mean` averages each (block, role) group of expert rows first, so 128 experts
count as one layer of their block rather than drowning the attention and dense layers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from .records import TensorInfo
from .roles import tensor_role

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


def is_expert_stack(info: TensorInfo) -> bool:
    """True for a 3-D tensor whose name marks it as experts (``experts.`` or GGUF ``_exps``)."""
    name = info.name.lower()
    return len(info.shape) == 3 and (".experts." in name or "_exps" in name or name.endswith(".experts"))


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
