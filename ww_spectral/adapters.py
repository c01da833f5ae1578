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

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .errors import CheckpointError
from .records import TensorInfo
from .roles import natural_key

PEFT_PREFIX = "base_model.model."
MAX_PATTERNS = 1000
MAX_PATTERN_CHARS = 200


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


def delta_eigenvalues(A: np.ndarray, B: np.ndarray, scaling: float) -> np.ndarray:
    """The r eigenvalues of ΔWᵀΔW that can be non-zero, ΔW = scaling · B · A; ascending float64, >= 0.

    A: (r, in), B: (out, r). Computed from thin QR factors (module docstring), never forming ΔW.
    """
    a = np.asarray(A, dtype=np.float64)
    b = np.asarray(B, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
        raise ValueError(f"lora_A {a.shape} and lora_B {b.shape} are not (r, in) and (out, r)")
    r_b = np.linalg.qr(b, mode="r")          # (min(out, r), r)
    r_a = np.linalg.qr(a.T, mode="r")        # (min(in, r), r)
    core = scaling * (r_b @ r_a.T)
    sv = np.linalg.svd(core, compute_uv=False)
    ev = np.sort(sv.astype(np.float64) ** 2)
    return ev


def delta_weight(A: np.ndarray, B: np.ndarray, scaling: float, *, embedding: bool = False) -> np.ndarray:
    """Dense ΔW = scaling · B · A as float32 (out, in); (B A)ᵀ for embedding adapters."""
    d = (np.asarray(B, dtype=np.float32) @ np.asarray(A, dtype=np.float32)) * np.float32(scaling)
    return d.T.copy() if embedding else d


def merged_weight(base: np.ndarray, A: np.ndarray, B: np.ndarray, scaling: float, *,
                  fan_in_fan_out: bool = False, embedding: bool = False) -> np.ndarray:
    """W + ΔW in the base tensor's stored orientation, float32 (peft's merge: `base += delta`)."""
    w = np.asarray(base, dtype=np.float32)
    d = delta_weight(A, B, scaling, embedding=embedding)
    if fan_in_fan_out:
        d = d.T
    if d.shape != w.shape:
        raise CheckpointError(f"adapter update of shape {d.shape} does not fit the base weight {w.shape}; "
                              "the adapter was trained on a different base model")
    return w + d
