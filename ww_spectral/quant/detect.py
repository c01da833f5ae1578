"""Which stored tensors form a quantised layer, and in which format: decided from the header (names,
dtypes, shapes) and config.json's `quantization_config`, no data read.

`find_quantized(infos, config)` groups a checkpoint's tensors by module and returns one `QuantizedLayer`
per quantised Linear: its format, the stored tensors it consumes (so scales, zeros and g_idx never become
rows of their own), the dequantised matrix shape, and - for a recognised but unsupported format - a skip
reason naming the format. `dequantize_layer(layer, read_raw)` returns its float32 (out, in) matrix.

Signatures (per module prefix P):
    P.qweight I32 + P.qzeros + P.scales [+ P.g_idx]           gptq (or awq: quant_method / shapes decide)
    P.weight F8_* [+ P.weight_scale | P.weight_scale_inv]      fp8 (compressed-tensors float-quantized too)
    P.weight I8 + P.SCB                                        bitsandbytes int8
    P.weight U8 + P.weight.absmax + P.weight.quant_state.*     bitsandbytes 4-bit (nf4 / fp4)
    P.weight_packed I32 + P.weight_scale + P.weight_shape      compressed-tensors pack-quantized
    P.weight I8 + P.weight_scale                               compressed-tensors int-quantized
    P.weight_packed U8 + P.weight_scale [+ P.weight_global_scale]  compressed-tensors nvfp4 [mxfp4]
    P.weight U8 + P.weight_scale F8_E4M3 + P.weight_scale_2    NVIDIA ModelOpt nvfp4
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedDtypeError
from ..records import TensorInfo
from ..roles import natural_key
from .awq import dequantize_awq
from .bnb import dequantize_bnb_4bit, dequantize_bnb_int8, parse_bnb_state
from .compressed import FP4_FORMATS, MXFP4, NVFP4, dequantize_compressed
from .compressed import SUPPORTED as CT_SUPPORTED
from .fp8 import FP8_DTYPES, dequantize_fp8
from .gptq import dequantize_gptq
from .modelopt import dequantize_modelopt_nvfp4

ReadRaw = Callable[[str], np.ndarray]

# Tail names a module's quantisation tensors use; "weight.<x>" tails are bitsandbytes 4-bit state.
_TAILS = ("qweight", "qzeros", "scales", "g_idx", "SCB", "weight_format", "weight", "weight_scale",
          "weight_scale_inv", "weight_zero_point", "weight_packed", "weight_shape", "weight_g_idx",
          "weight_global_scale", "weight_scale_2", "input_scale", "input_global_scale", "bias")
_BNB4_TAILS = ("absmax", "quant_map", "nested_absmax", "nested_quant_map")
# Activation quantisation scales stored beside a quantised weight: not weights, part of the layer's rows.
_ACTIVATION_TAILS = ("input_scale", "input_global_scale")


@dataclass(frozen=True)
class QuantFormat:
    """A quantisation format and its per-layer parameters.

    name: "gptq", "awq", "fp8", "bnb_int8", "bnb_nf4" / "bnb_fp4" / "bnb_4bit" (before the state is read),
        "compressed-tensors:<format>" (pack-quantized, int-quantized, float-quantized, nvfp4-pack-quantized...).
    params: sorted (key, value) pairs: bits, group_size, checkpoint_format, version, block (bh, bw).
    """

    name: str
    params: tuple[tuple[str, object], ...] = ()

    def param(self, key: str, default=None):
        return dict(self.params).get(key, default)


@dataclass(frozen=True)
class QuantizedLayer:
    """One quantised Linear layer as the header shows it.

    prefix: module path ("model.layers.0.self_attn.q_proj"); tensor_name: the stored tensor a row names
    (qweight / weight / weight_packed); parts: (parameter, stored tensor name) pairs the layer consumes;
    shape: (out, in) of the dequantised matrix - None for bitsandbytes 4-bit (its shape is in the state
    tensor: `resolve_shape` reads it), an upper bound within 32/bits columns for pack-quantized;
    skip_reason: "" when dequantisable, else why not (always naming the format).
    """

    prefix: str
    tensor_name: str
    format: QuantFormat
    parts: tuple[tuple[str, str], ...]
    shape: tuple[int, int] | None
    skip_reason: str = ""

    @property
    def stored(self) -> tuple[str, ...]:
        """Every stored tensor name this layer consumes (its rows replace theirs)."""
        return tuple(name for _, name in self.parts)

    def part(self, key: str) -> str | None:
        return dict(self.parts).get(key)


def quantization_config(config: Mapping | None) -> dict:
    """config.json's `quantization_config` (or `compression_config`), {} when absent or malformed."""
    if not isinstance(config, Mapping):
        return {}
    qc = config.get("quantization_config") or config.get("compression_config") or {}
    return dict(qc) if isinstance(qc, Mapping) else {}


def _cfg_int(value, default: int, *, low: int = -1, high: int = 1 << 20) -> int:
    """An integer setting of config.json (untrusted): `value` when it is an int in [low, high], else `default`
    (a string, bool, float or absurd number never reaches int() or a shape computation)."""
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return int(value)
    return default


_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _cfg_name(value, default: str) -> str:
    """A name setting of config.json (format, version, checkpoint_format): `value` when it is a short plain
    name, else "unknown" (it ends up in a column and a skip reason: never megabytes or control characters);
    `default` when absent."""
    if value is None or value == "":
        return default
    return value if isinstance(value, str) and _NAME.fullmatch(value) else "unknown"


def _split(name: str) -> tuple[str, str]:
    """(module prefix, parameter tail); bitsandbytes' "P.weight.absmax" -> (P, "weight.absmax")."""
    head, _, last = name.rpartition(".")
    if last.startswith("bitsandbytes__") or last in _BNB4_TAILS:
        pre, _, mid = head.rpartition(".")
        if mid == "quant_state":
            pre, _, mid2 = pre.rpartition(".")
            return pre, f"{mid2}.quant_state.{last}"
        return pre, f"{mid}.{last}"
    return head, last


def _ct_format(qc: Mapping, prefix: str) -> str:
    """The compressed-tensors format of a module: its config group's `format`, else the global one."""
    groups = qc.get("config_groups")
    if isinstance(groups, Mapping):
        formats = {g.get("format") for g in groups.values() if isinstance(g, Mapping) and isinstance(g.get("format"), str)
                   and g.get("format")}
        if len(formats) == 1:
            return _cfg_name(formats.pop(), "")
    return _cfg_name(qc.get("format"), "")


def _ct_block(qc: Mapping) -> tuple[int, int] | None:
    groups = qc.get("config_groups")
    if isinstance(groups, Mapping):
        for g in groups.values():
            w = g.get("weights") if isinstance(g, Mapping) else None
            b = w.get("block_structure") if isinstance(w, Mapping) else None
            if isinstance(b, list) and len(b) == 2 and all(isinstance(v, int) and v > 0 for v in b):
                return int(b[0]), int(b[1])
    return None


def _layer(prefix, primary, fmt, parts, shape, skip="") -> QuantizedLayer:
    return QuantizedLayer(prefix=prefix, tensor_name=primary, format=fmt,
                          parts=tuple(sorted(parts.items())), shape=shape, skip_reason=skip)


def _gptq_or_awq(prefix: str, p: dict[str, TensorInfo], qc: Mapping) -> QuantizedLayer | None:
    qw, sc = p.get("qweight"), p.get("scales")
    if qw is None or sc is None or "qzeros" not in p or len(qw.shape) != 2 or len(sc.shape) != 2:
        return None
    method = str(qc.get("quant_method", "")).lower()
    parts = {k: p[k].name for k in ("qweight", "qzeros", "scales", "g_idx") if k in p}
    out_f = sc.shape[1]
    is_awq = method == "awq" or (method != "gptq" and "g_idx" not in p and qw.shape[1] * 8 == out_f)
    if is_awq:
        version = _cfg_name(qc.get("version"), "gemm").lower()
        bits = _cfg_int(qc.get("bits", qc.get("w_bit")), 4, low=1, high=32)
        fmt = QuantFormat("awq", (("bits", bits), ("version", version)))
        skip = "" if version == "gemm" else f"AWQ {version} layout is not supported (format awq: GEMM only)"
        return _layer(prefix, qw.name, fmt, parts, (out_f, qw.shape[0]), skip)
    bits = _cfg_int(qc.get("bits"), 0, low=1, high=32) or (p["qzeros"].shape[1] * 32 // out_f if out_f else 4)
    ckpt = _cfg_name(qc.get("checkpoint_format"), "gptq")
    fmt = QuantFormat("gptq", tuple(sorted({"bits": bits, "checkpoint_format": ckpt,
                                            "group_size": _cfg_int(qc.get("group_size"), -1) or -1}.items())))
    in_f = p["g_idx"].shape[0] if "g_idx" in p else qw.shape[0] * 32 // max(bits, 1)
    skip = "" if bits in (2, 4, 8) else f"{bits}-bit GPTQ is not supported (format gptq: 2/4/8 bits)"
    return _layer(prefix, qw.name, fmt, parts, (out_f, in_f), skip)


def _classify(prefix: str, p: dict[str, TensorInfo], qc: Mapping) -> QuantizedLayer | None:
    found = _gptq_or_awq(prefix, p, qc)
    if found is not None:
        return found
    method = str(qc.get("quant_method", "")).lower()
    w = p.get("weight")
    if any(k.startswith("weight.quant_state.") for k in p) and w is not None:
        parts = {k: v.name for k, v in p.items() if k.startswith("weight") and k not in ("weight_format",)}
        state = next(k for k in p if k.startswith("weight.quant_state."))
        kind = state.rsplit("__", 1)[-1]
        name = {"nf4": "bnb_nf4", "fp4": "bnb_fp4"}.get(kind, "bnb_4bit")
        skip = "" if name != "bnb_4bit" else f"bitsandbytes 4-bit quant type {kind!r} is not supported"
        return _layer(prefix, w.name, QuantFormat(name), parts, None, skip)
    if w is not None and w.dtype == "I8" and "SCB" in p and len(w.shape) == 2:
        parts = {k: p[k].name for k in ("weight", "SCB", "weight_format") if k in p}
        return _layer(prefix, w.name, QuantFormat("bnb_int8"), parts, (w.shape[0], w.shape[1]))
    ct = method == "compressed-tensors" or "weight_packed" in p or (
        w is not None and w.dtype == "I8" and "weight_scale" in p)
    if ct and ("weight_packed" in p or (w is not None and w.dtype not in ("F32", "F16", "BF16", "F64"))):
        fmt_name = _ct_format(qc, prefix) or ("pack-quantized" if "weight_packed" in p else
                                              "float-quantized" if w is not None and w.dtype in FP8_DTYPES
                                              else "int-quantized")
        keys = ("weight", "weight_packed", "weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx",
                "weight_global_scale", *_ACTIVATION_TAILS)
        parts = {k: p[k].name for k in keys if k in p}
        primary = p.get("weight_packed") or w
        if "weight_global_scale" in p or (primary.dtype == "U8" and "weight_packed" in p):
            # FP4 codes: the config's fp4 format, else what the scales say (a global scale: nvfp4; E8M0: mxfp4)
            scale = p.get("weight_scale")
            fmt_name = fmt_name if "fp4" in fmt_name else MXFP4 if (
                "weight_global_scale" not in p and scale is not None and scale.dtype == "U8") else NVFP4
        block = _ct_block(qc)
        fmt = QuantFormat(f"compressed-tensors:{fmt_name}", (("block", block),) if block else ())
        if len(primary.shape) != 2:
            return _layer(prefix, primary.name, fmt, parts, None,
                          f"{len(primary.shape)}-D compressed-tensors {fmt_name} tensor (expert stack): "
                          "not dequantised yet")
        if fmt_name == "pack-quantized":
            bits = _ct_bits(qc)
            shape = (primary.shape[0], primary.shape[1] * 32 // bits)
        elif fmt_name in FP4_FORMATS:
            shape = (primary.shape[0], primary.shape[1] * 2)  # two FP4 codes per byte
        else:
            shape = (primary.shape[0], primary.shape[1])
        skip = "" if fmt_name in CT_SUPPORTED else f"compressed-tensors format {fmt_name} is not supported"
        return _layer(prefix, primary.name, fmt, parts, shape, skip)
    scale = p.get("weight_scale")
    if (w is not None and w.dtype == "U8" and len(w.shape) == 2 and "weight_scale_2" in p and scale is not None
            and scale.dtype == "F8_E4M3"):
        parts = {k: p[k].name for k in ("weight", "weight_scale", "weight_scale_2", *_ACTIVATION_TAILS) if k in p}
        return _layer(prefix, w.name, QuantFormat("modelopt_nvfp4"), parts, (w.shape[0], 2 * w.shape[1]))
    if w is not None and w.dtype in FP8_DTYPES:
        parts = {k: p[k].name for k in ("weight", "weight_scale", "weight_scale_inv", *_ACTIVATION_TAILS) if k in p}
        block = qc.get("weight_block_size")
        sides = [_cfg_int(b, 0, low=1) for b in block] if isinstance(block, list) and len(block) == 2 else []
        params = (("block", (sides[0], sides[1])),) if sides and all(sides) else ()
        if len(w.shape) != 2:
            return _layer(prefix, w.name, QuantFormat("fp8", params), parts, None,
                          f"{len(w.shape)}-D fp8 tensor (expert stack): not dequantised yet")
        return _layer(prefix, w.name, QuantFormat("fp8", params), parts, (w.shape[0], w.shape[1]))
    return None


def _ct_bits(qc: Mapping) -> int:
    groups = qc.get("config_groups")
    if isinstance(groups, Mapping):
        for g in groups.values():
            w = g.get("weights") if isinstance(g, Mapping) else None
            if isinstance(w, Mapping) and isinstance(w.get("num_bits"), int) and 1 <= w["num_bits"] <= 8:
                return int(w["num_bits"])
    return 4


def find_quantized(infos: Iterable[TensorInfo], config: Mapping | None = None) -> tuple[QuantizedLayer, ...]:
    """Every quantised layer among `infos` (header entries), in natural name order of their prefixes."""
    qc = quantization_config(config)
    by_prefix: dict[str, dict[str, TensorInfo]] = {}
    for info in infos:
        prefix, tail = _split(info.name)
        if tail in _TAILS or tail.startswith("weight."):
            by_prefix.setdefault(prefix, {})[tail] = info
    layers = []
    for prefix in sorted(by_prefix, key=natural_key):
        found = _classify(prefix, by_prefix[prefix], qc)
        if found is not None:
            layers.append(found)
    return tuple(layers)


def resolve_shape(layer: QuantizedLayer, read_raw: ReadRaw) -> tuple[int, int]:
    """The exact (out, in) of a layer, reading the one tiny tensor that holds it when the header cannot tell."""
    if layer.format.name.startswith("bnb_"):
        state_name = next(n for k, n in layer.parts if k.startswith("weight.quant_state."))
        state = parse_bnb_state(read_raw(state_name), what=layer.prefix)
        return state.shape[0], state.shape[1]
    if layer.part("weight_shape"):
        dims = np.asarray(read_raw(layer.part("weight_shape"))).reshape(-1)
        return int(dims[0]), int(dims[1])
    assert layer.shape is not None
    return layer.shape


def dequantize_layer(layer: QuantizedLayer, read_raw: ReadRaw) -> np.ndarray:
    """float32 (out, in) matrix of one quantised layer, equal to its library's own dequantisation.

    read_raw(name) returns a stored tensor in its stored dtype (quant.raw.RawSafetensors.raw, or a dict's get).
    Raises UnsupportedDtypeError (naming the format) for a skipped layer, CheckpointError for inconsistent data.
    """
    fmt, what = layer.format, f"{layer.prefix} ({layer.format.name})"
    if layer.skip_reason:
        raise UnsupportedDtypeError(f"{layer.prefix}: {layer.skip_reason}; skip this layer")
    get = {key: read_raw(name) for key, name in layer.parts}
    if fmt.name == "gptq":
        gs = int(fmt.param("group_size", -1))
        return dequantize_gptq(get["qweight"], get["qzeros"], get["scales"], get.get("g_idx"),
                               bits=int(fmt.param("bits", 4)), checkpoint_format=str(fmt.param("checkpoint_format")),
                               group_size=gs if gs > 0 else None, what=what)
    if fmt.name == "awq":
        return dequantize_awq(get["qweight"], get["qzeros"], get["scales"], bits=int(fmt.param("bits", 4)),
                              version=str(fmt.param("version", "gemm")), what=what)
    if fmt.name == "fp8":
        scale = get.get("weight_scale", get.get("weight_scale_inv"))
        return dequantize_fp8(get["weight"], scale, block=fmt.param("block"), what=what)
    if fmt.name == "bnb_int8":
        return dequantize_bnb_int8(get["weight"], get["SCB"], what=what)
    if fmt.name == "modelopt_nvfp4":
        return dequantize_modelopt_nvfp4(get["weight"], get["weight_scale"], get["weight_scale_2"], what=what)
    if fmt.name in ("bnb_nf4", "bnb_fp4"):
        state_key = next(k for k in get if k.startswith("weight.quant_state."))
        state = parse_bnb_state(get[state_key], what=what)
        return dequantize_bnb_4bit(get["weight"], get["weight.absmax"], get["weight.quant_map"], state,
                                   nested_absmax=get.get("weight.nested_absmax"),
                                   nested_quant_map=get.get("weight.nested_quant_map"), what=what)
    if fmt.name.startswith("compressed-tensors:"):
        return dequantize_compressed(fmt.name.split(":", 1)[1], get, block=fmt.param("block"), what=what)
    raise UnsupportedDtypeError(f"{layer.prefix}: quantisation format {fmt.name} is not supported; skip this layer")
