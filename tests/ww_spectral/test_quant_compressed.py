"""compressed-tensors: our dequantisation equals the library's own decompress, bit for bit; files the
library writes are recognised from their header; a quantised heavy-tailed model keeps its alphas."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")
ct_quant = pytest.importorskip("compressed_tensors.quantization")
from compressed_tensors.compressors import BaseCompressor  # noqa: E402
from compressed_tensors.quantization.utils import calculate_qparams  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from support.planted_models import heavy_tailed  # noqa: E402

from ww_spectral.fit import fit_power_law  # noqa: E402
from ww_spectral.quant import RawSafetensors, dequantize_compressed, dequantize_layer, find_quantized  # noqa: E402
from ww_spectral.spectrum import eigenvalues  # noqa: E402

QArgs, QScheme = ct_quant.QuantizationArgs, ct_quant.QuantizationScheme


def to_numpy(t):
    """A torch tensor as numpy in its own dtype (bf16 / fp8 through ml_dtypes views)."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    if t.dtype == torch.float8_e4m3fn:
        return t.view(torch.uint8).numpy().view(ml_dtypes.float8_e4m3fn)
    return t.numpy()


def qparams(w, args):
    out_f, in_f = w.shape
    if args.strategy == "tensor":
        lo, hi = w.amin().reshape(1), w.amax().reshape(1)
    elif args.strategy == "channel":
        lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    elif args.strategy == "group":
        g = w.reshape(out_f, in_f // args.group_size, args.group_size)
        lo, hi = g.amin(-1), g.amax(-1)
    else:
        bh, bw = args.block_structure
        b = w.reshape(out_f // bh, bh, in_f // bw, bw)
        lo, hi = b.amin((1, 3)), b.amax((1, 3))
    return calculate_qparams(lo, hi, args)


def compress(fmt, args, w, scale_dtype=torch.bfloat16):
    """(compressed state dict, the library's decompressed weight)."""
    scheme = QScheme(targets=["Linear"], weights=args)
    scale, zp = qparams(w.float(), args)
    sd = {"weight": w, "weight_scale": scale.to(scale_dtype)}
    if not args.symmetric:
        sd["weight_zero_point"] = zp
    comp = BaseCompressor.load_from_registry(fmt)
    packed = comp.compress(sd, scheme)
    return packed, comp.decompress(dict(packed), scheme)["weight"]


CASES = [
    ("pack-quantized", dict(num_bits=4, type="int", strategy="group", group_size=32, symmetric=True)),
    ("pack-quantized", dict(num_bits=4, type="int", strategy="group", group_size=32, symmetric=False)),
    ("pack-quantized", dict(num_bits=4, type="int", strategy="channel", symmetric=False)),
    ("pack-quantized", dict(num_bits=8, type="int", strategy="channel", symmetric=True)),
    ("pack-quantized", dict(num_bits=2, type="int", strategy="group", group_size=64, symmetric=True)),
    ("int-quantized", dict(num_bits=8, type="int", strategy="channel", symmetric=True)),
    ("int-quantized", dict(num_bits=8, type="int", strategy="tensor", symmetric=False)),
    ("float-quantized", dict(num_bits=8, type="float", strategy="channel", symmetric=True)),
    ("float-quantized", dict(num_bits=8, type="float", strategy="tensor", symmetric=True)),
    ("float-quantized", dict(num_bits=8, type="float", strategy="block", block_structure=[32, 64], symmetric=True)),
]


@pytest.mark.parametrize("scale_dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize(("fmt", "kw"), CASES)
def test_equals_library_decompress(fmt, kw, scale_dtype):
    torch.manual_seed(0)
    w = torch.randn(64, 256, dtype=torch.bfloat16)
    args = QArgs(**kw)
    packed, ref = compress(fmt, args, w, getattr(torch, scale_dtype))
    block = tuple(args.block_structure) if args.block_structure else None
    ours = dequantize_compressed(fmt, {k: to_numpy(v) for k, v in packed.items()}, block=block)
    assert ours.dtype == np.float32 and ours.shape == (64, 256)
    np.testing.assert_array_equal(ours, ref.float().numpy())


def test_file_written_by_library_is_detected(tmp_path):
    torch.manual_seed(1)
    args = QArgs(num_bits=4, type="int", strategy="group", group_size=32, symmetric=False)
    tensors, refs = {}, {}
    for i in range(2):
        w = torch.randn(48, 128, dtype=torch.bfloat16)
        packed, ref = compress("pack-quantized", args, w)
        prefix = f"model.layers.{i}.mlp.up_proj"
        tensors.update({f"{prefix}.{k}": v.contiguous() for k, v in packed.items()})
        refs[prefix] = ref.float().numpy()
    tensors["model.norm.weight"] = torch.ones(48)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    config = {"quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized",
                                      "config_groups": {"group_0": {"format": "pack-quantized",
                                                                    "weights": {"num_bits": 4}}}}}
    raw = RawSafetensors(tmp_path / "model.safetensors")
    layers = find_quantized(raw.tensors(), config)
    assert [q.prefix for q in layers] == list(refs)
    for q in layers:
        assert q.format.name == "compressed-tensors:pack-quantized" and q.shape == (48, 128) and not q.skip_reason
        assert set(q.stored) >= {f"{q.prefix}.weight_packed", f"{q.prefix}.weight_scale",
                                 f"{q.prefix}.weight_zero_point", f"{q.prefix}.weight_shape"}
        np.testing.assert_array_equal(dequantize_layer(q, raw.raw), refs[q.prefix])
    raw.close()


def alpha(w: np.ndarray) -> float:
    return fit_power_law(eigenvalues(np.asarray(w, dtype=np.float32))).alpha


@pytest.mark.parametrize(("fmt", "kw", "tol"), [
    ("pack-quantized", dict(num_bits=4, type="int", strategy="group", group_size=128, symmetric=True), 0.35),
    ("int-quantized", dict(num_bits=8, type="int", strategy="channel", symmetric=True), 0.05),
    ("float-quantized", dict(num_bits=8, type="float", strategy="channel", symmetric=True), 0.1),
])
def test_quantised_heavy_tailed_model_keeps_alpha(fmt, kw, tol):
    rng = np.random.default_rng(3)
    deltas = []
    for a in (2.5, 3.5, 4.5):
        w = heavy_tailed(rng, 512, 256, alpha=a)
        packed, _ = compress(fmt, QArgs(**kw), torch.from_numpy(w).to(torch.bfloat16), torch.float32)
        deq = dequantize_compressed(fmt, {k: to_numpy(v) for k, v in packed.items()})
        deltas.append(alpha(deq) - alpha(torch.from_numpy(w).to(torch.bfloat16).float().numpy()))
    print(f"compressed-tensors {fmt} {kw['num_bits']}-bit {kw['strategy']}: delta alpha {np.round(deltas, 4)}")
    assert max(abs(d) for d in deltas) < tol


FP4_PRESETS = {"nvfp4-pack-quantized": "NVFP4A16", "mxfp4-pack-quantized": "MXFP4A16"}


def compress_fp4(w, fmt="nvfp4-pack-quantized"):
    """(compressed state dict, the library's decompressed weight, its decompress) for the library's FP4 presets:
    FP4 e2m1 codes with fp8 scales per 16 inputs and a float32 global scale from generate_gparam (NVFP4), or
    E8M0 exponents per 32 inputs (MXFP4), as llm-compressor computes them."""
    from compressed_tensors.quantization import preset_name_to_scheme
    from compressed_tensors.quantization.utils import generate_gparam

    scheme = preset_name_to_scheme(FP4_PRESETS[fmt], ["Linear"])
    wf = w.float()
    sd = {"weight": w}
    if fmt == "nvfp4-pack-quantized":
        sd["weight_global_scale"] = generate_gparam(wf.amin(), wf.amax())
    groups = wf.reshape(wf.shape[0], -1, scheme.weights.group_size)
    sd["weight_scale"], _ = calculate_qparams(groups.amin(-1), groups.amax(-1), scheme.weights,
                                              global_scale=sd.get("weight_global_scale"))
    comp = BaseCompressor.load_from_registry(fmt)
    packed = comp.compress(sd, scheme)

    def decompress(state):
        return comp.decompress(dict(state), scheme)["weight"]

    return packed, decompress(packed), decompress


def compress_nvfp4(w):
    packed, ref, _ = compress_fp4(w)
    return packed, ref


@pytest.mark.parametrize("fmt", list(FP4_PRESETS))
@pytest.mark.parametrize("spread", [0.02, 30.0])
def test_fp4_formats_equal_library_decompress(fmt, spread):
    torch.manual_seed(2)
    w = (torch.randn(64, 256) * spread).to(torch.bfloat16)
    w[1, :32] = 0  # an all-zero group: scale 0 (nvfp4), the smallest exponent (mxfp4)
    packed, ref, decompress = compress_fp4(w, fmt)
    assert packed["weight_packed"].dtype == torch.uint8
    assert packed["weight_scale"].dtype == (torch.float8_e4m3fn if fmt.startswith("nv") else torch.uint8)
    cases = [(packed, ref)]
    if fmt.startswith("mx"):  # every E8M0 exponent, 0 and 255 (inf; NaN for a zero code) included
        exps = packed["weight_scale"].clone()
        exps.view(-1)[:256] = torch.arange(256, dtype=torch.uint8)
        cases.append((dict(packed, weight_scale=exps), decompress(dict(packed, weight_scale=exps))))
    for state, want in cases:
        ours = dequantize_compressed(fmt, {k: to_numpy(v) for k, v in state.items()})
        assert ours.dtype == np.float32 and ours.shape == (64, 256)
        ref_values = want.float().numpy()
        nan = np.isnan(ref_values)  # NaN where the library has NaN (its payload bits are its own)
        np.testing.assert_array_equal(np.isnan(ours), nan)
        np.testing.assert_array_equal(ours[~nan].view(np.uint32), ref_values[~nan].view(np.uint32))
    assert not fmt.startswith("mx") or np.isnan(ours).any() and np.isinf(ours).any()


@pytest.mark.parametrize("fmt", list(FP4_PRESETS))
@pytest.mark.parametrize("with_config", [True, False])
def test_fp4_file_is_detected_and_keeps_alpha(tmp_path, fmt, with_config):
    rng = np.random.default_rng(5)
    tensors, dense = {}, {}
    for i, a in enumerate((2.5, 4.0)):
        w = torch.from_numpy(heavy_tailed(rng, 256, 512, alpha=a)).to(torch.bfloat16)
        packed, _, _ = compress_fp4(w, fmt)
        prefix = f"model.layers.{i}.mlp.up_proj"
        tensors.update({f"{prefix}.{k}": v.contiguous() for k, v in packed.items()})
        dense[prefix] = w.float().numpy()
    save_file(tensors, str(tmp_path / "model.safetensors"))
    # without config.json's quantization_config the stored tensors say which FP4 format it is
    config = {"quantization_config": {"quant_method": "compressed-tensors", "format": fmt}} if with_config else {}
    raw = RawSafetensors(tmp_path / "model.safetensors")
    layers = find_quantized(raw.tensors(), config)
    assert [q.prefix for q in layers] == list(dense)
    for q in layers:
        assert q.format.name == f"compressed-tensors:{fmt}" and q.shape == (256, 512)
        assert not q.skip_reason
        deq = dequantize_layer(q, raw.raw)
        delta = alpha(deq) - alpha(dense[q.prefix])
        print(f"{fmt} {q.prefix}: delta alpha {delta:+.4f}")
        assert abs(delta) < 0.35
    raw.close()


def test_fp4_layers_with_missing_or_wrong_parts_are_one_clear_error():
    from ww_spectral.errors import CheckpointError

    torch.manual_seed(4)
    w = torch.randn(16, 64).to(torch.bfloat16)
    nv = {k: to_numpy(v) for k, v in compress_fp4(w, "nvfp4-pack-quantized")[0].items()}
    mx = {k: to_numpy(v) for k, v in compress_fp4(w, "mxfp4-pack-quantized")[0].items()}
    cases = [
        ("nvfp4-pack-quantized", {k: v for k, v in nv.items() if k != "weight_global_scale"}, "weight_global_scale is missing"),
        ("nvfp4-pack-quantized", dict(nv, weight_packed=nv["weight_packed"].astype(np.int32)), "is not uint8"),
        ("nvfp4-pack-quantized", dict(nv, weight_scale=nv["weight_scale"][:3]), "does not tile"),
        ("mxfp4-pack-quantized", dict(mx, weight_scale=mx["weight_scale"].astype(np.float32)), "not uint8 E8M0"),
        ("mxfp4-pack-quantized", dict(mx, weight_zero_point=np.zeros(16, np.int8)), "zero points"),
    ]
    for fmt, tensors, message in cases:
        with pytest.raises(CheckpointError, match=message):
            dequantize_compressed(fmt, tensors)
