"""Fine-tunes against their base: the delta W - W_base of every tensor the model shares with its base
(WeightWatcher 0.7.7's `base_model=` option), as rows beside the model's own.

    with open_with_base(SOURCE, BASE) as pair:            # BaseDeltaCheckpoint: the model + its base
        plan = plan_with_base(pair, options)              # the model's plans + one delta plan per layer
        rows = analysis.analyze_layers(pair, plan.layers, plan.options)
    result = model.assemble_model(plan, rows, seconds=...)
    delta_summary(result.layers)                          # delta_* keys: what a base family is ranked by

A delta plan (read_kind "base_delta", delta_kind "base_delta", base_ref "repo_id@revision" of the base) is
added for every analysed plain-tensor plan of the model; it is analysed when the base has a float tensor
of the same name (`base_name`: up to a "model." or PEFT wrapper prefix) and shape, else it is a skipped
row saying why ("base_missing", "base_shape",
"base_dtype"). For a PEFT adapter (ww_spectral/adapters.py) the base gives each analysed update a
"lora_merged" plan (W_base + ΔW) instead. Delta plans follow the model's own plans (layer_id continues);
`read_base_delta` reads one (ww_spectral/layer_read.py routes to it).

Which rows are which: `DELTA_KINDS` (base_delta, lora_update) are updates ΔW; rows with delta_kind ''
are the model's own weights; lora_merged rows are merged weights of the adapted layers only. The model's
summary (summary.summarize of `own_rows`) holds only its own weights; `delta_summary` gives the metrics of
the ΔW rows, so fine-tunes and adapters of one base compare by the update they make.

A Ray chunk or a forked worker re-opens a pair from a `BaseSource` (model and base SOURCE, both plain
data): `open_source(source)` opens either a BaseSource or any other SOURCE.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from . import adapters
from .checkpoint import open_checkpoint
from .errors import CheckpointError, WWSpectralError
from .model import ModelPlan, plan_model
from .progress import safe_text
from .records import FLOAT_DTYPES, AnalysisOptions, CheckpointRef, LayerPlan, TensorInfo, make_options
from .summary import delta_kinds, own_rows

__all__ = ["BASE_KINDS", "DELTA_KINDS", "DELTA_SUMMARY_KEYS", "BaseDeltaCheckpoint", "BaseModelError",
           "BaseSource", "add_base_deltas", "base_label", "base_name", "delta_rows", "delta_summary", "open_source",
           "open_with_base", "own_rows", "plan_with_base", "read_base_delta"]

DELTA_KINDS = ("base_delta", "lora_update")  # rows whose matrix is an update ΔW
BASE_KINDS = ("base_delta", "lora_merged")  # rows that need the base checkpoint
# delta_summary's keys (the columns of the catalog's family_deltas view, catalogs/sql/61_family_deltas.sql).
DELTA_SUMMARY_KEYS = ("n_delta_layers", "n_delta_fitted", "delta_alpha", "delta_alpha_weighted", "delta_log_norm",
                      "delta_log_spectral_norm", "delta_stable_rank", "base_ref")


class BaseModelError(CheckpointError):
    """The base model cannot serve as the model's base: it shares no analysable tensor (name and shape)."""


def base_label(ref: CheckpointRef) -> str:
    """The base_ref column's text of a base: "repo_id@revision"."""
    return f"{ref.repo_id}@{ref.revision}"


# ---------------------------------------------------------------- the pair


class BaseDeltaCheckpoint:
    """A model checkpoint and its base, read as one: `.ref`, `.tensors()`, `.read()` are the model's (any
    other attribute too: a format's readers keep working), `.base_ref`, `.base_tensors()`, `.read_base()`
    the base's. A context manager; close() closes what it owns (`owned`: both by default). source: the
    BaseSource it was opened from, if any.
    """

    def __init__(self, model: Any, base: Any, *, source: BaseSource | None = None,
                 owned: tuple[bool, bool] = (True, True)) -> None:
        self._model = model
        self._base = base
        self._owned = owned
        self.source = source

    @property
    def ref(self) -> CheckpointRef:
        return self._model.ref

    @property
    def base_ref(self) -> CheckpointRef:
        return self._base.ref

    @property
    def model(self) -> Any:
        """The model's own checkpoint."""
        return self._model

    @property
    def base(self) -> Any:
        """The base's checkpoint."""
        return self._base

    def tensors(self) -> list[TensorInfo]:
        return self._model.tensors()

    def base_tensors(self) -> list[TensorInfo]:
        return self._base.tensors()

    def read(self, name: str, *, dtype=np.float32) -> np.ndarray:
        return self._model.read(name, dtype=dtype)

    def read_base(self, name: str, *, dtype=np.float32) -> np.ndarray:
        """The base's tensor `name` (KeyError when it has none)."""
        return self._base.read(name, dtype=dtype)

    def close(self) -> None:
        for ckpt, owned in zip((self._model, self._base), self._owned):
            close = getattr(ckpt, "close", None)
            if owned and callable(close):
                close()

    def __getattr__(self, name: str) -> Any:  # only reached for attributes this class lacks
        if name.startswith("__") or name in ("_model", "_base", "_owned"):
            raise AttributeError(name)
        return getattr(self._model, name)

    def __enter__(self) -> BaseDeltaCheckpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BaseDeltaCheckpoint({self.ref.repo_id!r}, base={base_label(self.base_ref)!r})"


@dataclass(frozen=True)
class BaseSource:
    """A model SOURCE and its base SOURCE (any form open_checkpoint takes: path, folder, "org/name@rev"),
    plus the open_checkpoint keywords for each (revision, endpoint, cache_dir, ...): plain data, picklable,
    so a Ray chunk or a worker can re-open the pair (`open()`)."""

    model: Any
    base: Any
    model_options: Mapping[str, Any] = field(default_factory=dict)
    base_options: Mapping[str, Any] = field(default_factory=dict)

    def open(self) -> BaseDeltaCheckpoint:
        return open_with_base(self.model, self.base, base_options=dict(self.base_options), described_by=self,
                              **dict(self.model_options))


def _is_checkpoint(obj: Any) -> bool:
    return callable(getattr(obj, "tensors", None)) and callable(getattr(obj, "read", None))


def _open_base(base: Any, options: Mapping[str, Any]) -> Any:
    """open_checkpoint(base), its errors keeping their type and saying that the base was at fault."""
    try:
        return open_checkpoint(base, **options)
    except WWSpectralError as exc:
        raise type(exc)(f"base model: {exc}") from exc


def open_with_base(source: Any, base: Any, *, base_options: Mapping[str, Any] | None = None,
                   described_by: BaseSource | None = None, **open_options: Any) -> BaseDeltaCheckpoint:
    """Open SOURCE and its BASE (any source forms; opened checkpoints are used as they are) as one
    BaseDeltaCheckpoint. open_options go to SOURCE's open_checkpoint; base_options to BASE's (default:
    the same endpoint, token, cache_dir and allow_external_links, never SOURCE's revision: a base's
    revision is part of BASE, "org/name@rev"). Errors opening BASE keep their type and say "base model:".
    described_by: the BaseSource this pair is opened from (kept as `.source`).
    """
    if base_options is None:
        base_options = {k: v for k, v in open_options.items() if k != "revision"}
    model = source if _is_checkpoint(source) else open_checkpoint(source, **open_options)
    try:
        base_ckpt = base if _is_checkpoint(base) else _open_base(base, base_options)
    except BaseException:
        if model is not source:
            model.close()
        raise
    return BaseDeltaCheckpoint(model, base_ckpt, source=described_by,
                               owned=(model is not source, base_ckpt is not base))


def open_source(source: Any, **open_options: Any) -> Any:
    """A checkpoint for any SOURCE: a BaseSource opens as its pair, anything else via open_checkpoint."""
    if isinstance(source, BaseSource):
        return source.open()
    return open_checkpoint(source, **open_options)


# ---------------------------------------------------------------- plans


def _skip(plan: LayerPlan, code: str, reason: str) -> LayerPlan:
    return replace(plan, skip_code=code, skip_reason=reason)


# The read kinds a base delta is taken of: the same matrix read from the model and from the base.
DELTA_OF_KINDS = ("tensor", "expert")


def _inner_kind(plan: LayerPlan) -> str:
    """The read_kind of the matrix a base_delta plan subtracts (its expert column says which)."""
    return "expert" if plan.expert is not None else "tensor"


def base_name(name: str, base: Mapping[str, TensorInfo]) -> str | None:
    """The base's tensor for the model's tensor `name`: the same name, else the name without a PEFT
    wrapper prefix ("base_model.model.": an adapter's modules_to_save), without or with a leading "model."
    (a ...ForCausalLM checkpoint against its bare ...Model base, or the other way round); None: none."""
    for candidate in (name, name.removeprefix(adapters.PEFT_PREFIX), name.removeprefix("model."), f"model.{name}"):
        if candidate in base:
            return candidate
    return None


def _delta_plan(own: LayerPlan, stored: TensorInfo | None, base: TensorInfo | None, label: str) -> LayerPlan:
    """The base_delta plan of one analysed plan of DELTA_OF_KINDS (module docstring); stored: the model's
    tensor own.tensor_name (for an expert: its whole stack), base: the base's tensor (base_name). When
    the base's name differs, it is the plan's one companion."""
    size = 8 * math.prod(own.shape)
    p = replace(own, read_kind="base_delta", delta_kind="base_delta", base_ref=label,
                companions=(base.name,) if base is not None and base.name != own.tensor_name else (),
                est_bytes=own.est_bytes + 2 * size)
    if base is None:
        return _skip(p, "base_missing", f"the base {label} has no tensor of this name")
    shape = tuple(stored.shape) if stored is not None else tuple(own.shape)
    if tuple(base.shape) != shape:
        return _skip(p, "base_shape", f"the base tensor is {'x'.join(map(str, base.shape))}, the model's "
                                      f"{'x'.join(map(str, shape))}: no delta")
    if base.dtype not in FLOAT_DTYPES:
        return _skip(p, "base_dtype", f"the base tensor is stored as {base.dtype}, not a float: no delta")
    return p


def add_base_deltas(plan: ModelPlan, *, infos: Iterable[TensorInfo], base_infos: Iterable[TensorInfo],
                    base_ref: CheckpointRef) -> ModelPlan:
    """`plan` (the model's own, from model.plan_model) with its delta plans appended (module docstring):
    one per analysed plan of a stored tensor or of one expert of a stack ("base_delta": the base must hold
    a float tensor of the same name and stored shape) and per analysed adapter update ("lora_merged");
    layer ids continue after the model's. Headers only: infos are the model's tensors, base_infos the
    base's. Other analysed plans (dequantised layers) get a skipped delta row saying so.

    Raises BaseModelError when no delta can be analysed: the base shares no float tensor of the same name
    and shape with the model.
    """
    base = {i.name: i for i in base_infos}
    by_name = {i.name: i for i in infos}
    label = base_label(base_ref)
    extra: list[LayerPlan] = []
    for own in plan.layers:
        if not own.analysed or own.delta_kind not in ("", "lora_update"):
            continue
        if own.read_kind == "lora_update":
            extra.append(adapters.merged_plan(own, base.get(own.tensor_name), infos=by_name, config=plan.ref.config,
                                              base_label=label, options=plan.options))
        elif own.read_kind in DELTA_OF_KINDS and not own.quant_format:
            match = base_name(own.tensor_name, base)
            extra.append(_delta_plan(own, by_name.get(own.tensor_name), base.get(match or ""), label))
        else:  # dequantised layers, quantised expert stacks (GGUF, MXFP4) included
            what = f"{own.quant_format} quantised" if own.quant_format else repr(own.read_kind)
            extra.append(_skip(replace(own, read_kind="base_delta", delta_kind="base_delta", base_ref=label),
                               "base_delta_unsupported",
                               f"no delta against the base for a {what} layer in this version"))
    if not any(p.analysed for p in extra):
        codes = sorted({p.skip_code or "" for p in extra})
        raise BaseModelError(f"base model {safe_text(label)} shares no float tensor of the same name and shape "
                             f"with {safe_text(plan.ref.repo_id)} ({len(extra)} layers tried: {', '.join(codes) or 'none'}); "
                             "pass the model's own base")
    first = len(plan.layers)
    extra = [replace(p, layer_id=first + i) for i, p in enumerate(extra)]
    return replace(plan, layers=plan.layers + tuple(extra))


def plan_with_base(checkpoint: BaseDeltaCheckpoint, options: AnalysisOptions | Mapping[str, Any] | None = None
                   ) -> ModelPlan:
    """model.plan_model of the pair's model, plus its delta plans against the pair's base (add_base_deltas)."""
    opts = make_options(options)
    plan = plan_model(checkpoint, opts)
    return add_base_deltas(plan, infos=checkpoint.tensors(), base_infos=checkpoint.base_tensors(),
                           base_ref=checkpoint.base_ref)


# ---------------------------------------------------------------- reading


def read_base_delta(checkpoint: Any, plan: LayerPlan, *, dtype: np.dtype = np.float32,
                    read: Callable[..., np.ndarray] | None = None) -> np.ndarray:
    """read_kind "base_delta": W - W_base of the matrix plan names, in `dtype`, shaped plan.shape.

    checkpoint: a BaseDeltaCheckpoint. The matrix is the stored tensor plan.tensor_name (in the base: the
    plan's companion when it has one, base_name), or for an expert
    plan (plan.expert set) that expert of the stack read by `read` (layer_read.read_layer, passed in by
    it: this module cannot import it) from the model and from the base alike. Float32 analyses of
    F32/F16/BF16 tensors subtract in float32 (IEEE subtraction rounds the exact difference once: the same
    as rounding a float64 difference); otherwise the difference is taken in float64 (two float64 tensors
    that differ in their low bits keep it).
    """
    exact32 = np.dtype(dtype) == np.float32 and plan.dtype in ("F32", "F16", "BF16")
    work = np.float32 if exact32 else np.float64
    inner = replace(plan, read_kind=_inner_kind(plan), delta_kind="", base_ref="", companions=())
    in_base = plan.companions[0] if plan.companions else plan.tensor_name
    if inner.read_kind == "tensor":
        w = checkpoint.read(plan.tensor_name, dtype=work)
        b = checkpoint.read_base(in_base, dtype=work)
    else:
        if read is None:
            raise ValueError(f"{plan.tensor_name}: a {inner.read_kind} delta needs the layer reader (read=)")
        w = read(checkpoint.model, inner, dtype=work)
        b = read(checkpoint.base, replace(inner, tensor_name=in_base), dtype=work)
    if w.shape != b.shape:
        raise CheckpointError(f"{plan.tensor_name}: model {w.shape} and base {b.shape} tensors differ in shape")
    w = np.array(w, dtype=work, copy=True) if not w.flags.writeable else w
    np.subtract(w, b, out=w)
    return w if w.dtype == np.dtype(dtype) else w.astype(dtype)


# ---------------------------------------------------------------- summaries


def delta_rows(layers: pd.DataFrame) -> pd.DataFrame:
    """The rows of updates ΔW (delta_kind in DELTA_KINDS: base_delta, lora_update)."""
    return layers[delta_kinds(layers).isin(DELTA_KINDS)]


def _col(rows: pd.DataFrame, name: str) -> np.ndarray:
    a = pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan) \
        if name in rows else np.array([])
    return a[np.isfinite(a)]


def delta_summary(layers: pd.DataFrame) -> dict:
    """DELTA_SUMMARY_KEYS of a per-layer table: the metrics of its update rows (delta_rows), the same
    numbers as the catalog's family_deltas view (catalogs/sql/61_family_deltas.sql) that the family
    leaderboard ranks on: n_delta_layers (update rows), n_delta_fitted (with status success), delta_alpha
    and delta_stable_rank (medians over the fitted rows), delta_alpha_weighted, delta_log_norm,
    delta_log_spectral_norm (means); NaN without a fitted update row. base_ref: the base the deltas were
    taken against ('' for an adapter analysed without its base and for a model without deltas)."""
    rows = delta_rows(layers)
    ok = rows[rows["status"] == "success"] if "status" in rows else rows.iloc[:0]

    def agg(name: str, how) -> float:
        a = _col(ok, name)
        return float(how(a)) if a.size else math.nan

    refs = sorted({r for r in layers.get("base_ref", pd.Series([], dtype=str)).fillna("").astype(str) if r})
    return {"n_delta_layers": int(len(rows)), "n_delta_fitted": int(len(ok)),
            "delta_alpha": agg("alpha", np.median), "delta_alpha_weighted": agg("alpha_weighted", np.mean),
            "delta_log_norm": agg("log_norm", np.mean), "delta_log_spectral_norm": agg("log_spectral_norm", np.mean),
            "delta_stable_rank": agg("stable_rank", np.median), "base_ref": refs[-1] if refs else ""}
