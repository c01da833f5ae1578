"""PEFT LoRA adapters: the update each adapted layer makes, its spectrum without the dense product, and
the merged weight when the base is at hand.

A PEFT repo holds `adapter_config.json` and `adapter_model.safetensors` with, per adapted module M,
``base_model.model.M.lora_A.weight`` (r, in) and ``base_model.model.M.lora_B.weight`` (out, r). The update is
ΔW = scaling · B · A with scaling = lora_alpha / r (lora_alpha / sqrt(r) with `use_rslora`; per-module r and
alpha from `rank_pattern` / `alpha_pattern`), the rule of peft/tuners/lora/layer.py (`update_layer`,
`get_delta_weight`). The base tensor it adds to is ``M.weight`` of the base checkpoint (transposed for
`fan_in_fan_out` layers such as GPT-2's Conv1D).

Spectrum: ΔW has at most r non-zero singular values. With thin QR factors B = Q_B R_B (out x r) and
Aᵀ = Q_A R_A (in x r), ΔW = scaling · Q_B (R_B R_Aᵀ) Q_Aᵀ, so the non-zero eigenvalues of ΔWᵀΔW are the
squared singular values of the r x r matrix scaling · R_B R_Aᵀ - the same numbers as the eigenvalues of
scaling² (BᵀB)(AAᵀ), computed from orthogonal factors (stable even when B or A is near rank-deficient)
in O((out + in) r²) instead of the O(out · in · min(out, in)) of the dense product.

WeightWatcher's `peft=True` analyses B·A WITHOUT the scaling: its eigenvalues are ours / scaling²; alpha
(scale-free) agrees, the norm columns differ by that factor.

DoRA (`use_dora`, `lora_magnitude_vector` tensors) rescales the columns of the merged weight by a learned
magnitude over the BASE weight's column norms, so its update is not B·A; it and the other PEFT types
(IA3, LoHa, LoKr, AdaLoRA, prompt / prefix tuning, ...) get a skip reason naming them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .columns import PLACEMENT_COLUMNS
from .errors import CheckpointError
from .layers import plan_layer
from .records import FLOAT_DTYPES, AnalysisOptions, LayerPlan, TensorInfo
from .roles import natural_key

PEFT_PREFIX = "base_model.model."
MAX_PATTERNS = 1000
MAX_PATTERN_CHARS = 200
ADAPTER_CONFIG_FILE = "adapter_config.json"
# Where a CheckpointRef's config carries the parsed adapter_config.json of an adapter folder or repo
# (ww_spectral/sources.py puts it there; config.json's own keys stay as they are).
ADAPTER_CONFIG_KEY = "adapter_config"
_LORA_MARKERS = (".lora_A.", ".lora_B.", ".lora_embedding_A", ".lora_embedding_B", ".lora_magnitude_vector")


@dataclass(frozen=True)
class AdapterConfig:
    """The parts of adapter_config.json the analysis uses (validated).

    peft_type: "LORA", "IA3", ...; r / lora_alpha: default rank and alpha; rank_pattern / alpha_pattern:
    (module pattern, value) overrides; base_model: `base_model_name_or_path` or None.
    """

    peft_type: str
    r: int
    lora_alpha: float
    use_rslora: bool = False
    use_dora: bool = False
    fan_in_fan_out: bool = False
    rank_pattern: tuple[tuple[str, int], ...] = ()
    alpha_pattern: tuple[tuple[str, float], ...] = ()
    base_model: str | None = None

    @property
    def skip_reason(self) -> str:
        """"" for a plain LoRA adapter, else why its layers are not analysed (naming the PEFT type)."""
        if self.peft_type != "LORA":
            return f"PEFT type {self.peft_type} is not analysed (only LoRA updates B·A are)"
        if self.use_dora:
            return ("DoRA adapter: the update rescales the base weight's columns by a learned magnitude, it is not "
                    "a low-rank B·A; not analysed")
        return ""

    def rank_and_alpha(self, module: str) -> tuple[int, float]:
        """(r, lora_alpha) of one module, after rank_pattern / alpha_pattern (PEFT's `get_pattern_key`)."""
        r = _pattern_value(self.rank_pattern, module, self.r)
        alpha = _pattern_value(self.alpha_pattern, module, self.lora_alpha)
        return int(r), float(alpha)

    def scaling(self, module: str) -> float:
        """lora_alpha / r (or / sqrt(r) with rsLoRA) for `module`."""
        r, alpha = self.rank_and_alpha(module)
        return alpha / (math.sqrt(r) if self.use_rslora else r)


def _pattern_value(patterns: tuple[tuple[str, object], ...], module: str, default):
    for key, value in patterns:
        if module == key or module.endswith("." + key):
            return value
        try:  # PEFT treats keys as regexes: re.match(rf"(.*\.)?({key})$", module); bounded length above
            if re.match(rf"(.*\.)?({key})$", module):
                return value
        except re.error:
            continue
    return default


def _number(value, what: str, *, integer: bool = False):
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise CheckpointError(f"adapter_config.json: {what}={value!r} is not a positive "
                              f"{'integer' if integer else 'number'}; fix or re-save the adapter")
    return value


def _patterns(obj, what: str, *, integer: bool) -> tuple:
    if obj in (None, {}):
        return ()
    if not isinstance(obj, Mapping) or len(obj) > MAX_PATTERNS:
        raise CheckpointError(f"adapter_config.json: {what} is not an object of at most {MAX_PATTERNS} entries")
    out = []
    for key, value in obj.items():
        if not isinstance(key, str) or len(key) > MAX_PATTERN_CHARS:
            raise CheckpointError(f"adapter_config.json: {what} key {str(key)[:40]!r} is not a short string")
        out.append((key, _number(value, f"{what}[{key!r}]", integer=integer)))
    return tuple(out)


def parse_adapter_config(data: Mapping) -> AdapterConfig:
    """Validate a parsed adapter_config.json (read it with a size/depth bound first)."""
    if not isinstance(data, Mapping):
        raise CheckpointError("adapter_config.json is not a JSON object; re-save the adapter")
    peft_type = str(data.get("peft_type", "")).upper() or "UNKNOWN"
    if peft_type != "LORA":
        return AdapterConfig(peft_type=peft_type, r=1, lora_alpha=1.0)
    base = data.get("base_model_name_or_path")
    return AdapterConfig(
        peft_type=peft_type,
        r=_number(data.get("r", 8), "r", integer=True),
        lora_alpha=float(_number(data.get("lora_alpha", 8), "lora_alpha")),
        use_rslora=bool(data.get("use_rslora", False)),
        use_dora=bool(data.get("use_dora", False)),
        fan_in_fan_out=bool(data.get("fan_in_fan_out", False)),
        rank_pattern=_patterns(data.get("rank_pattern"), "rank_pattern", integer=True),
        alpha_pattern=_patterns(data.get("alpha_pattern"), "alpha_pattern", integer=False),
        base_model=base if isinstance(base, str) and base else None,
    )


@dataclass(frozen=True)
class LoraLayer:
    """One adapted module as the adapter's header shows it.

    module: the module path in the base model ("model.layers.0.self_attn.q_proj"); base_tensor: the base
    checkpoint key the update adds to (module + ".weight"); a_name / b_name: adapter tensor keys;
    shape: (out, in) of ΔW; r: rank; scaling: lora_alpha / r (or rsLoRA's); skip_reason: "" or why not.
    """

    module: str
    a_name: str
    b_name: str
    shape: tuple[int, int]
    r: int
    scaling: float
    skip_reason: str = ""

    @property
    def base_tensor(self) -> str:
        return f"{self.module}.weight"


def _module_of(name: str, marker: str) -> str:
    module = name.split(marker, 1)[0]
    return module.removeprefix(PEFT_PREFIX)


def find_lora_layers(infos: Iterable[TensorInfo], config: AdapterConfig) -> tuple[LoraLayer, ...]:
    """Every lora_A / lora_B pair among an adapter's tensors, in natural module order.

    Linear (lora_A (r, in), lora_B (out, r)) and embedding (lora_embedding_A (r, num), lora_embedding_B
    (dim, r): ΔW = (B A)ᵀ, (num, dim)) layers; conv adapters, unpaired or mis-shaped tensors get a skip reason.
    """
    parts: dict[str, dict[str, TensorInfo]] = {}
    dora = set()
    for info in infos:
        for marker, key in ((".lora_A.", "A"), (".lora_B.", "B"), (".lora_embedding_A", "EA"),
                            (".lora_embedding_B", "EB"), (".lora_magnitude_vector", "M")):
            if marker in info.name:
                module = _module_of(info.name, marker)
                if key == "M":
                    dora.add(module)
                else:
                    parts.setdefault(module, {})[key] = info
    layers = []
    for module in sorted(parts, key=natural_key):
        p = parts[module]
        a, b = p.get("A") or p.get("EA"), p.get("B") or p.get("EB")
        r, _ = config.rank_and_alpha(module)
        skip = config.skip_reason or ("DoRA adapter (lora_magnitude_vector): not a low-rank B·A; not analysed"
                                      if module in dora else "")
        if a is None or b is None:
            layers.append(LoraLayer(module, (a or b).name, (a or b).name, (0, 0), r, 0.0,
                                    skip or "lora_A / lora_B pair incomplete in the adapter"))
            continue
        if len(a.shape) != 2 or len(b.shape) != 2:
            skip = skip or f"{len(a.shape)}-D LoRA factors (conv adapter): not analysed"
            shape = (0, 0)
        elif a.shape[0] != b.shape[1]:
            skip = skip or f"lora_A {a.shape} and lora_B {b.shape} disagree on the rank"
            shape = (b.shape[0], a.shape[1])
        else:
            r = a.shape[0]
            shape = (b.shape[0], a.shape[1]) if "A" in p else (a.shape[1], b.shape[0])
        layers.append(LoraLayer(module, a.name, b.name, shape, r, config.scaling(module), skip))
    return tuple(layers)


def update_core(A: np.ndarray, B: np.ndarray, scaling: float) -> np.ndarray:
    """scaling · R_B R_Aᵀ (float64, min(out, r) x min(in, r)): a small matrix whose singular values are the
    non-zero singular values of ΔW = scaling · B · A (module docstring), from thin QR factors of B and Aᵀ.

    A: (r, in), B: (out, r). Costs O((out + in) r²); never forms ΔW.
    """
    a = np.asarray(A, dtype=np.float64)
    b = np.asarray(B, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
        raise ValueError(f"lora_A {a.shape} and lora_B {b.shape} are not (r, in) and (out, r)")
    r_b = np.linalg.qr(b, mode="r")          # (min(out, r), r)
    r_a = np.linalg.qr(a.T, mode="r")        # (min(in, r), r)
    return scaling * (r_b @ r_a.T)


def delta_eigenvalues(A: np.ndarray, B: np.ndarray, scaling: float) -> np.ndarray:
    """The min(r, out, in) eigenvalues of ΔWᵀΔW that can be non-zero, ΔW = scaling · B · A; ascending
    float64, >= 0. A: (r, in), B: (out, r). From `update_core` (module docstring), never forming ΔW."""
    sv = np.linalg.svd(update_core(A, B, scaling), compute_uv=False)
    return np.sort(sv.astype(np.float64) ** 2)


def delta_weight(A: np.ndarray, B: np.ndarray, scaling: float, *, embedding: bool = False,
                 dtype: np.dtype = np.float32) -> np.ndarray:
    """Dense ΔW = scaling · B · A in `dtype` (default float32), (out, in); (B A)ᵀ for embedding adapters."""
    d = (np.asarray(B, dtype=dtype) @ np.asarray(A, dtype=dtype)) * np.asarray(scaling, dtype=dtype)
    return d.T.copy() if embedding else d


def merged_weight(base: np.ndarray, A: np.ndarray, B: np.ndarray, scaling: float, *,
                  fan_in_fan_out: bool = False, embedding: bool = False,
                  dtype: np.dtype = np.float32) -> np.ndarray:
    """W + ΔW in the base tensor's stored orientation, in `dtype` (default float32; peft's merge:
    `base += delta`)."""
    w = np.asarray(base, dtype=dtype)
    d = delta_weight(A, B, scaling, embedding=embedding, dtype=dtype)
    if fan_in_fan_out:
        d = d.T
    if d.shape != w.shape:
        raise CheckpointError(f"adapter update of shape {d.shape} does not fit the base weight {w.shape}; "
                              "the adapter was trained on a different base model")
    return w + d


# ---------------------------------------------------------------- adapters in the analysis
#
# An adapter checkpoint's lora_A / lora_B tensors are never rows of their own: the plan step
# `plan_adapter_layers` (ww_spectral/model.py PLAN_STEPS) replaces each pair by ONE plan of the update,
# read_kind "lora_update": tensor_name is the base tensor the update adds to (module + ".weight"),
# companions (lora_A key, lora_B key). Its shape is update_core's (what `read_lora_update` returns), its
# N and M are ΔW's (out x in), num_evals = min(r, out, in): the ESD holds the update's non-zero eigenvalues
# only (WeightWatcher's peft=True keeps r singular values too). With a base checkpoint,
# ww_spectral/deltas.py adds a "lora_merged" plan per update (`merged_plan`, read by `read_lora_merged`).


def with_adapter_config(config: Mapping | None, adapter: Mapping | None) -> dict:
    """A ref's config (parsed config.json, {} without one) carrying a parsed adapter_config.json under
    ADAPTER_CONFIG_KEY: THE rule every source of refs (local folders: ww_spectral/sources.py; hub
    downloads) applies. An empty or missing adapter config leaves the config as it is."""
    out = dict(config or {})
    if adapter:
        out[ADAPTER_CONFIG_KEY] = dict(adapter)
    return out


def adapter_config_of(config: Mapping | None) -> AdapterConfig | None:
    """The validated adapter config a CheckpointRef's config carries under ADAPTER_CONFIG_KEY, else None.
    Raises CheckpointError for an invalid one (parse_adapter_config)."""
    if not isinstance(config, Mapping) or not isinstance(config.get(ADAPTER_CONFIG_KEY), Mapping):
        return None
    return parse_adapter_config(config[ADAPTER_CONFIG_KEY])


def is_lora_tensor(name: str) -> bool:
    """True for PEFT LoRA / DoRA factor tensors (lora_A, lora_B, lora_embedding_A/B, lora_magnitude_vector)."""
    return any(m in name for m in _LORA_MARKERS)


def _factor_marker(name: str) -> str:
    return ".lora_embedding_A" if ".lora_embedding_A" in name else ".lora_A."


def module_of(a_name: str) -> str:
    """The base-model module path of a lora_A (or lora_embedding_A) key."""
    return _module_of(a_name, _factor_marker(a_name))


def _core_shape(a: TensorInfo, b: TensorInfo) -> tuple[int, int]:
    r = int(a.shape[0])
    return min(int(b.shape[0]), r), min(int(a.shape[1]), r)


def _update_plan(layer: LoraLayer, first: LayerPlan, infos: Mapping[str, TensorInfo],
                 options: AnalysisOptions, no_config: str) -> LayerPlan:
    """The one plan of an adapted module (see the section comment)."""
    a = infos[layer.a_name]
    out_in = layer.shape if layer.shape != (0, 0) else tuple(int(s) for s in a.shape[-2:])
    logical = TensorInfo(name=f"{layer.module}.weight", shape=out_in, dtype=a.dtype, file=a.file, nbytes=0)
    p = plan_layer(logical, first.layer_id, options)  # selection by module name, size filters on ΔW
    placement = {c: getattr(first, c) for c in PLACEMENT_COLUMNS}
    placement.update(delta_kind="lora_update", base_ref="")
    p = dataclasses.replace(p, **placement, read_kind="lora_update", companions=(layer.a_name, layer.b_name))
    reason = layer.skip_reason or no_config
    if reason:
        return dataclasses.replace(p, skip_code="unsupported_adapter", skip_reason=reason)
    if p.skip_code is not None:
        return p
    b = infos[layer.b_name]
    core = _core_shape(a, b)
    k = min(core)
    est = 8 * (int(a.shape[0]) * (int(a.shape[1]) + int(b.shape[0])) + 2 * core[0] * core[1])
    p = dataclasses.replace(p, shape=core, num_evals=k, est_bytes=est)
    if k < options.min_evals:
        return dataclasses.replace(p, skip_code="size_filter",
                                   skip_reason=f"the update has rank r={k} < min_evals={options.min_evals}: too "
                                               "few non-zero eigenvalues to fit")
    return p


def plan_adapter_layers(plans: list[LayerPlan], *, infos: list[TensorInfo], config: Mapping | None,
                        options: AnalysisOptions) -> list[LayerPlan]:
    """THE adapter plan step (ww_spectral/model.py PLAN_STEPS): every lora_A / lora_B pair of a PEFT
    checkpoint becomes one "lora_update" plan at the place of its first tensor (section comment above);
    DoRA, other PEFT types, conv adapters, unpaired factors, and factors without an adapter_config.json
    (the scale lora_alpha / r is unknown) become one skipped plan with the reason. Checkpoints without
    LoRA tensors are returned as they are. Headers and config only."""
    lora = {i.name for i in infos if is_lora_tensor(i.name)}
    if not lora:
        return plans
    cfg = adapter_config_of(config)
    no_config = "" if cfg is not None else (f"LoRA factor without {ADAPTER_CONFIG_FILE}: the update's scale "
                                            "lora_alpha / r is unknown; keep the adapter's config beside its weights")
    cfg = cfg or AdapterConfig(peft_type="LORA", r=1, lora_alpha=1.0)
    by_name = {i.name: i for i in infos}
    layers = find_lora_layers((by_name[n] for n in lora), cfg)
    owner = {}
    for la in layers:
        for name in (la.a_name, la.b_name):
            owner[name] = la
    out: list[LayerPlan] = []
    done: set[str] = set()
    for p in plans:
        la = owner.get(p.tensor_name)
        if la is None:
            if ".lora_magnitude_vector" in p.tensor_name:  # DoRA magnitudes: part of the module's skipped plan
                continue
            out.append(p)
            continue
        if la.module not in done:
            done.add(la.module)
            out.append(_update_plan(la, p, by_name, options, no_config))
    return out


def _factors(checkpoint: Any, plan: LayerPlan, dtype) -> tuple[np.ndarray, np.ndarray, AdapterConfig]:
    a_name, b_name = plan.companions
    cfg = adapter_config_of(getattr(checkpoint.ref, "config", None))
    if cfg is None:
        raise CheckpointError(f"{plan.tensor_name}: the checkpoint carries no {ADAPTER_CONFIG_FILE}; the update's "
                              "scale is unknown")
    return checkpoint.read(a_name, dtype=dtype), checkpoint.read(b_name, dtype=dtype), cfg


def read_lora_update(checkpoint: Any, plan: LayerPlan, *, dtype: np.dtype = np.float32) -> np.ndarray:
    """read_kind "lora_update": update_core of the module's factors in `dtype`, shaped plan.shape (its
    singular values are ΔW's non-zero ones; computed in float64)."""
    A, B, cfg = _factors(checkpoint, plan, np.float64)
    core = update_core(A, B, cfg.scaling(module_of(plan.companions[0])))
    if tuple(core.shape) != tuple(plan.shape):
        raise CheckpointError(f"{plan.tensor_name}: LoRA factors give a {core.shape} core, the plan has {plan.shape}")
    return core.astype(dtype)


def read_lora_merged(checkpoint: Any, plan: LayerPlan, *, dtype: np.dtype = np.float32) -> np.ndarray:
    """read_kind "lora_merged": W_base + ΔW in the base tensor's orientation, in `dtype`. checkpoint: a
    ww_spectral/deltas.py BaseDeltaCheckpoint (adapter + base: `.read_base(name, dtype=)`)."""
    A, B, cfg = _factors(checkpoint, plan, dtype)
    a_name = plan.companions[0]
    base = checkpoint.read_base(plan.tensor_name, dtype=dtype)
    return merged_weight(base, A, B, cfg.scaling(module_of(a_name)), fan_in_fan_out=cfg.fan_in_fan_out,
                         embedding=".lora_embedding_A" in a_name, dtype=dtype)


def merged_plan(update: LayerPlan, base_info: TensorInfo | None, *, infos: Mapping[str, TensorInfo],
                config: Mapping | None, base_label: str, options: AnalysisOptions) -> LayerPlan:
    """The "lora_merged" plan of one analysed "lora_update" plan against the base tensor `base_info`
    (None: the base lacks it): analysed when the base tensor is a float matrix of the update's shape (its
    transpose for fan_in_fan_out adapters), else skipped ("base_missing", "base_shape", "base_dtype")."""
    a, b = infos[update.companions[0]], infos[update.companions[1]]
    embedding = ".lora_embedding_A" in a.name
    out_in = (int(a.shape[1]), int(b.shape[0])) if embedding else (int(b.shape[0]), int(a.shape[1]))
    cfg = adapter_config_of(config)
    if cfg is not None and cfg.fan_in_fan_out:
        out_in = out_in[::-1]
    info = base_info or TensorInfo(name=update.tensor_name, shape=out_in, dtype=a.dtype, file=None, nbytes=0)
    p = plan_layer(info, update.layer_id, options)
    placement = {c: getattr(update, c) for c in PLACEMENT_COLUMNS}
    placement.update(delta_kind="lora_merged", base_ref=base_label)
    p = dataclasses.replace(p, **placement, read_kind="lora_merged", companions=update.companions)
    if base_info is None:
        return dataclasses.replace(p, skip_code="base_missing",
                                   skip_reason=f"the base {base_label} has no tensor {update.tensor_name!r}")
    if tuple(base_info.shape) != out_in:
        return dataclasses.replace(p, skip_code="base_shape",
                                   skip_reason=f"the base tensor is {base_info.shape}, the update {out_in}: the "
                                               "adapter was trained on a different base")
    if base_info.dtype not in FLOAT_DTYPES:
        return dataclasses.replace(p, skip_code="base_dtype",
                                   skip_reason=f"the base tensor is stored as {base_info.dtype}, not a float")
    return p
