"""The per-model unit: a checkpoint's plan (layers + facts), then its rows assembled into one analysis.

    plan = plan_model(checkpoint, options)       # headers only: LayerPlans, ModelFacts; typed error when
                                                 # no tensor is an analysable layer
    rows = analysis.analyze_layers(checkpoint, plan.layers, plan.options)   # anywhere, in any chunks
    result = assemble_model(plan, rows, seconds=...)                        # rows checked and ordered
    result.model_record(source_kind="hub", downloads=...)                   # the `models` row to store

`analysis.analyze_model`, the scan's model task (pipelines/tasks.py) and the plots all go through these
functions, so a model means the same thing whichever command looked at it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import adapters, experts
from .columns import FLOAT_COLUMNS, INT_COLUMNS, LAYER_COLUMN_NAMES
from .errors import NoAnalysableLayerError
from .layers import plan_layer
from .progress import safe_text
from .quant import plan as quant_plan
from .records import AnalysisOptions, CheckpointRef, LayerPlan, TensorInfo, make_options
from .roles import depth_key
from .selection import not_selected_reason
from .summary import summarize

__all__ = ["ModelAnalysis", "ModelFacts", "ModelPlan", "TensorListing", "assemble_model", "depth_order",
           "plan_infos", "plan_key", "plan_model", "plan_layers", "require_analysable", "rows_to_frame",
           "slice_ids"]

_INT64_MAX = 2**63 - 1  # the catalog stores parameter_count as int64


@dataclass(frozen=True)
class ModelFacts:
    """What the headers and config.json say about a model (no tensor data read).

    parameter_count: sum of the element counts of every tensor (None without tensors, or beyond int64);
    dtype: the stored dtype code holding the most elements (e.g. "BF16");
    architecture: config.json architectures[0] (e.g. "LlamaForCausalLM"); model_type: config.json
    model_type (e.g. "llama"). None where the source does not say.
    """

    parameter_count: int | None
    dtype: str | None
    architecture: str | None
    model_type: str | None

    @classmethod
    def from_tensors(cls, infos: Iterable[TensorInfo], config: Mapping[str, Any] | None) -> ModelFacts:
        """Facts from tensor headers and a parsed config.json (anything not a JSON object counts as {})."""
        dtypes: Counter[str] = Counter()
        total = 0
        for info in infos:
            count = math.prod(int(d) for d in info.shape)
            total += count
            dtypes[info.dtype] += count
        config = config if isinstance(config, Mapping) else {}
        archs = config.get("architectures")
        arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
        model_type = config.get("model_type")
        return cls(
            parameter_count=total if 0 < total <= _INT64_MAX else None,
            dtype=dtypes.most_common(1)[0][0] if dtypes else None,  # ties: the first in checkpoint order
            architecture=arch,
            model_type=model_type if isinstance(model_type, str) else None,
        )

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelPlan:
    """One model, planned from headers: where it is, the options, every tensor's LayerPlan (depth order,
    layer_id = position: see plan_infos) and its facts."""

    ref: CheckpointRef
    options: AnalysisOptions
    layers: tuple[LayerPlan, ...]
    facts: ModelFacts

    @property
    def analysed(self) -> tuple[LayerPlan, ...]:
        """The plans whose tensors are analysed (the others give skipped rows)."""
        return tuple(p for p in self.layers if p.analysed)


class TensorListing:
    """A header-only "checkpoint" (what plan_model reads: `.ref` and `.tensors()`), e.g. over TensorInfos
    read from remote safetensors headers before any weight is downloaded."""

    def __init__(self, ref: CheckpointRef, infos: Iterable[TensorInfo]) -> None:
        self.ref = ref
        self._infos = tuple(infos)

    def tensors(self) -> list[TensorInfo]:
        return list(self._infos)


def _skip_summary(plans: Sequence[LayerPlan]) -> str:
    counts = Counter(p.skip_code or "?" for p in plans)
    return ", ".join(f"{code} x{n}" for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def require_analysable(label: str, plans: Sequence[LayerPlan]) -> None:
    """Raise NoAnalysableLayerError unless some plan is analysed (THE rule for "nothing to analyse").

    label: the model's name in the message (repo id or file name; escaped to one line here).
    """
    if any(p.analysed for p in plans):
        return
    why = f"skip reasons: {_skip_summary(plans)}" if plans else "it holds no tensor"
    raise NoAnalysableLayerError(
        f"{safe_text(label)}: none of its {len(plans)} tensors is an analysable layer ({why}); "
        "ww-spectral analyses float 2-D (dense) and 4-D (conv2d) weights")


def plan_layers(checkpoint: Any, options: AnalysisOptions | Mapping[str, Any] | None = None) -> list[LayerPlan]:
    """A LayerPlan for every tensor of `checkpoint` (anything with `.tensors()`), in depth order
    (plan_infos), from headers only. No rule about "anything to analyse": see plan_model."""
    ref = getattr(checkpoint, "ref", None)
    return plan_infos(checkpoint.tensors(), make_options(options), config=getattr(ref, "config", None))


# A plan step refines the per-tensor plans of one model, from headers and config alone:
#   step(plans, *, infos, config, options) -> list[LayerPlan]
# e.g. a quantised layer's stored parts become one "dequant" plan, a 3-D expert stack one plan per expert.
# Steps run in this order; layer_id is renumbered after the last one (position in the final list).
PlanStep = Callable[..., list[LayerPlan]]
PLAN_STEPS: tuple[PlanStep, ...] = (quant_plan.plan_quantized, experts.split_expert_stacks,
                                    adapters.plan_adapter_layers)


def depth_order(infos: Iterable[TensorInfo]) -> list[TensorInfo]:
    """`infos` in depth order (roles.depth_key of each name: block 2 before block 10, embeddings first, the
    head last, an encoder before its decoder), whatever order the checkpoint stores them in: a model's
    tensors get the same layer_ids from a safetensors file (alphabetical headers), a state dict or an
    nn.Module. Names the key ties on keep their checkpoint order."""
    return sorted(infos, key=lambda info: depth_key(info.name, tuple(info.shape)))


def plan_infos(infos: Iterable[TensorInfo], options: AnalysisOptions, *,
               config: Mapping[str, Any] | None = None) -> list[LayerPlan]:
    """THE planning rule: depth_order, layers.plan_layer per tensor, then every PLAN_STEPS step; layer_id is
    the position in the result, and the ids of options.layers select by that final layer_id (what the rows
    show, also after a step split a stack into experts). config: the model's parsed config.json (None when
    unknown)."""
    ordered = depth_order(infos)
    # layers= ids name FINAL layer_ids (the ones rows show), known only after the steps: applied last
    ids = tuple(v for v in options.layers if isinstance(v, int))
    planning = dataclasses.replace(options, layers=tuple(v for v in options.layers if not isinstance(v, int))) \
        if ids else options
    plans = [plan_layer(info, i, planning) for i, info in enumerate(ordered)]
    for step in PLAN_STEPS:
        plans = step(plans, infos=ordered, config=config if isinstance(config, Mapping) else None, options=planning)
    plans = [p if p.layer_id == i else dataclasses.replace(p, layer_id=i) for i, p in enumerate(plans)]
    return [_select_by_id(p, ids) for p in plans] if ids else plans


def _select_by_id(plan: LayerPlan, ids: tuple[int, ...]) -> LayerPlan:
    """An analysed plan whose final layer_id the layers= ids leave out becomes a not_selected skip."""
    if not plan.analysed:
        return plan
    why = not_selected_reason(tensor_name=plan.tensor_name, longname=plan.longname, layer_id=plan.layer_id,
                              layer_type=plan.layer_type, layers=ids)
    return plan if why is None else dataclasses.replace(plan, skip_code="not_selected", row_count=1,
                                                        skip_reason=f"not selected: {why}")


def plan_model(checkpoint: Any, options: AnalysisOptions | Mapping[str, Any] | None = None) -> ModelPlan:
    """Plan every tensor of `checkpoint` (anything with `.ref` and `.tensors()`), from headers alone.

    Raises NoAnalysableLayerError (a CheckpointError: permanent) when no tensor is an analysable layer,
    including a checkpoint without tensors.
    """
    opts = make_options(options)
    infos = list(checkpoint.tensors())
    ref: CheckpointRef = checkpoint.ref
    layers = tuple(plan_infos(infos, opts, config=ref.config))
    require_analysable(ref.repo_id, layers)
    return ModelPlan(ref=ref, options=opts, layers=layers, facts=ModelFacts.from_tensors(infos, ref.config))


def slice_ids(plan: LayerPlan, options: AnalysisOptions) -> list[int | None]:
    """The slice_id of each row a plan gives, in order (THE rule the analysis and assemble_model share):
    0..rf-1 for a conv2d kernel analysed with pool=False, [0] for another analysed layer with pool=False
    (as WW numbers them), [None] otherwise (pooled analyses and skipped tensors)."""
    if not plan.analysed:
        return [None]
    if plan.row_count > 1:
        return list(range(plan.row_count))
    return [None] if options.pool else [0]


def _float_column(values: list) -> np.ndarray:
    """float64 values of one column: numbers as they are, None/NaN as NaN, anything else as pandas' to_numeric
    with errors="coerce" reads it (numeric text parsed, other text NaN)."""
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=np.float64)


def _str_column(values: list) -> list[str]:
    """Text of one column: None, NA and NaN (of any float type) as "", anything else str()."""
    return ["" if v is None or v is pd.NA or (isinstance(v, float | np.floating) and v != v) else str(v)
            for v in values]


_INT, _FLOAT = frozenset(INT_COLUMNS), frozenset(FLOAT_COLUMNS)


def rows_to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """DataFrame with exactly LAYER_COLUMN_NAMES, ints as nullable Int64, floats as float64, strings str
    (missing values: NA, NaN, ""). Built column by column from the rows, in one DataFrame construction:
    assigning ~70 columns one at a time into a frame cost ~13 ms per model (tests/ww_spectral/
    test_model_unit.py checks the result against that column-wise conversion)."""
    rows = list(rows)
    data: dict[str, Any] = {}
    for c in LAYER_COLUMN_NAMES:
        values = [r.get(c) for r in rows]
        if c in _INT:
            data[c] = pd.array(values, dtype="Int64")
        elif c in _FLOAT:
            data[c] = _float_column(values)
        else:
            data[c] = pd.Series(_str_column(values), dtype=str)
    return pd.DataFrame(data, columns=list(LAYER_COLUMN_NAMES))


@dataclass(frozen=True, eq=False)
class ModelAnalysis:
    """One model's analysis: where it came from, with which options, every tensor's row, the summary.

    layers: DataFrame with columns LAYER_COLUMN_NAMES, one row per planned matrix in depth order (skipped
    tensors included; analysis.analyze_model(include_skipped=False) drops them from this table only);
    summary: summarize() of all rows (keys summary.SUMMARY_KEYS); facts: the plan's ModelFacts;
    seconds: wall time of the analysis.
    """

    ref: CheckpointRef
    options: AnalysisOptions
    layers: pd.DataFrame
    summary: dict
    facts: ModelFacts
    seconds: float

    def model_record(self, **extra: Any) -> dict:
        """The `models` row: summary + facts + analysis_seconds + options_json (JSON of the options,
        sorted keys) + extra (e.g. source_kind, and listing facts: downloads, likes, library, pipeline_tag,
        base_model, parameter_count). An extra value wins over ours unless it is None ("unknown": ours
        stays); this is what catalogs.store.ResultStore.write_model(model=...) takes."""
        record: dict[str, Any] = {**self.summary, **self.facts.as_dict(), "analysis_seconds": self.seconds,
                                  "options_json": json.dumps(dataclasses.asdict(self.options), sort_keys=True)}
        for key, value in extra.items():
            if value is not None or key not in record:
                record[key] = value
        return record


def plan_key(plan_or_row: LayerPlan | Mapping[str, Any]) -> tuple:
    """What one plan analyses, independent of its layer_id: (tensor_name, expert, part, delta_kind).

    Works on a LayerPlan and on a row (analysis copies these columns from the plan into every row), so rows
    planned elsewhere (a scan planning shard by shard, whose layer_ids are not the model's) still find their
    plan. NaN/NA expert counts as None.
    """
    get = (lambda k: getattr(plan_or_row, k)) if isinstance(plan_or_row, LayerPlan) else plan_or_row.get
    expert = get("expert")
    expert = None if expert is None or pd.isna(expert) else int(expert)
    return (str(get("tensor_name")), expert, get("part") or "", get("delta_kind") or "")


def _slice(row: Mapping[str, Any]) -> int | None:
    sid = row.get("slice_id")
    return None if sid is None or pd.isna(sid) else int(sid)


def assemble_model(plan: ModelPlan, rows: Iterable[dict], *, seconds: float) -> ModelAnalysis:
    """One ModelAnalysis from a plan and the rows of its layers (in any order, e.g. from chunks).

    Every plan must have exactly its rows (slice_ids: one, or one per kernel position with pool=False),
    matched by plan_key (tensor, expert, part, delta kind) and slice_id - and by layer_id as well where two
    plans share a plan_key. A row takes its plan's layer_id (a scan that planned shard by shard numbered its
    rows before it knew the whole model). A missing, extra or duplicated row raises ValueError (rows lost on
    the way are a bug, never a result). Rows are ordered by (layer_id, slice_id).
    """
    label = safe_text(plan.ref.repo_id)
    keys = Counter(plan_key(p) for p in plan.layers)

    def key_of(identity: tuple, layer_id: int, sid: int | None) -> tuple:
        return (identity, layer_id if keys[identity] > 1 else None, sid)

    by_key: dict[tuple, dict] = {}
    for row in rows:
        identity = plan_key(row)
        key = key_of(identity, int(row["layer_id"]), _slice(row))
        if key in by_key:
            where = f"{safe_text(identity[0])}" + (f" expert {identity[1]}" if identity[1] is not None else "") + \
                (f" slice {key[2]}" if key[2] is not None else "")
            raise ValueError(f"{label}: two rows for {where} (layer_id {row['layer_id']})")
        by_key[key] = row
    ordered = []
    missing: list[LayerPlan] = []
    for p in plan.layers:
        for sid in slice_ids(p, plan.options):
            row = by_key.pop(key_of(plan_key(p), p.layer_id, sid), None)
            if row is None:
                missing.append(p)
                continue
            ordered.append(row if row["layer_id"] == p.layer_id else dict(row, layer_id=p.layer_id))
    if missing or by_key:
        lost = sorted({p.layer_id for p in missing})[:10]
        lost_names = list(dict.fromkeys(safe_text(p.tensor_name, limit=80) for p in missing))[:10]
        extra = [safe_text(k[0][0], limit=80) + (f"#{k[0][1]}" if k[0][1] is not None else "") for k in by_key][:10]
        raise ValueError(f"{label}: rows do not match the plan (missing layer_ids {lost} {lost_names}, "
                         f"unplanned rows {extra})")
    layers = rows_to_frame(ordered)
    return ModelAnalysis(ref=plan.ref, options=plan.options, layers=layers, summary=summarize(layers),
                         facts=plan.facts, seconds=float(seconds))
