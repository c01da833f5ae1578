"""GPTQ and AWQ packed integer weights. gptqmodel / autoawq need CUDA builds, so the references are their
dequantisation code, transcribed to torch below with the file each comes from; tensors are packed with
the libraries' own packing loops. Ours must equal the reference bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402
from support.planted_models import heavy_tailed  # noqa: E402

from ww_spectral.errors import CheckpointError, UnsupportedDtypeError  # noqa: E402
from ww_spectral.fit import fit_power_law  # noqa: E402
from ww_spectral.quant import (  # noqa: E402
    RawSafetensors,
    dequantize_awq,
    dequantize_gptq,
    dequantize_layer,
    find_quantized,
)
from ww_spectral.spectrum import eigenvalues  # noqa: E402

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


# --- packers: the libraries' packing loops -----------------------------------------------------------------
def pack_rows(values: np.ndarray, bits: int) -> np.ndarray:
    """GPTQ qweight: [in, out] -> [in*bits/32, out]; GPTQModel PackableQuantLinear.pack step 9."""
    k = 32 // bits
    v = values.astype(np.uint32)
    out = np.zeros((v.shape[0] // k, v.shape[1]), dtype=np.uint32)
    for r in range(out.shape[0]):
        for j in range(k):
            out[r] |= v[r * k + j] << (bits * j)
    return out.view(np.int32)


def pack_cols(values: np.ndarray, bits: int, order=None) -> np.ndarray:
    """GPTQ qzeros (order None) / AWQ qweight, qzeros (order AWQ_ORDER): [r, c] -> [r, c*bits/32]."""
    k = 32 // bits
    order = order or list(range(k))
    v = values.astype(np.uint32)
    out = np.zeros((v.shape[0], v.shape[1] // k), dtype=np.uint32)
    for c in range(out.shape[1]):
        for i in range(k):
            out[:, c] |= v[:, c * k + order[i]] << (i * bits)
    return out.view(np.int32)


# --- references: the libraries' dequantisation code --------------------------------------------------------
def ref_gptq(qweight, qzeros, scales, g_idx, bits, v1):
    """ModelCloud/GPTQModel gptqmodel/nn_modules/qlinear/__init__.py PackableQuantLinear.dequantize_weight,
    with AutoGPTQ's v1 zero offset (auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py: zeros + 1, & maxq)."""
    qweight, qzeros, g_idx = (torch.from_numpy(a) for a in (qweight, qzeros, g_idx))
    scales = torch.from_numpy(scales)
    wf = torch.tensor(list(range(0, 32, bits)), dtype=torch.int32).unsqueeze(0)
    small = torch.int16 if bits == 8 else torch.int8
    zeros = torch.bitwise_right_shift(torch.unsqueeze(qzeros, 2).expand(-1, -1, 32 // bits), wf.unsqueeze(0)).to(small)
    if v1:
        zeros = zeros + 1
    zeros = torch.bitwise_and(zeros, (2 ** bits) - 1).reshape(scales.shape)
    weight = torch.bitwise_right_shift(torch.unsqueeze(qweight, 1).expand(-1, 32 // bits, -1), wf.unsqueeze(-1))
    weight = torch.bitwise_and(weight.to(small), (2 ** bits) - 1).reshape(-1, scales.shape[1])
    return scales[g_idx.long()] * (weight - zeros[g_idx.long()])


def ref_awq(qweight, qzeros, scales, group_size, bits=4):
    """casper-hansen/AutoAWQ awq/utils/packing_utils.py unpack_awq + reverse_awq_order + dequantize_gemm."""
    qweight, qzeros, scales = (torch.from_numpy(a) for a in (qweight, qzeros, scales))
    shifts = torch.arange(0, 32, bits)
    iweights = torch.bitwise_right_shift(qweight[:, :, None], shifts[None, None, :]).to(torch.int8)
    iweights = iweights.view(iweights.shape[0], -1)
    izeros = torch.bitwise_right_shift(qzeros[:, :, None], shifts[None, None, :]).to(torch.int8)
    izeros = izeros.view(izeros.shape[0], -1)
    order = torch.arange(izeros.shape[-1], dtype=torch.int32).view(-1, 32 // bits)[:, AWQ_REVERSE_ORDER].view(-1)
    izeros, iweights = izeros[:, order], iweights[:, order]
    iweights = torch.bitwise_and(iweights, (2 ** bits) - 1)
    izeros = torch.bitwise_and(izeros, (2 ** bits) - 1)
    scales = scales.repeat_interleave(group_size, dim=0)
    izeros = izeros.repeat_interleave(group_size, dim=0)
    return (iweights - izeros) * scales


# --- quantisers (round to nearest, asymmetric, per group) --------------------------------------------------
def rtn(w: np.ndarray, bits: int, group: int, g_idx: np.ndarray | None = None):
    """(q [in, out], zeros [groups, out], scales fp16 [groups, out], g_idx) of W^T (w is [out, in])."""
    wt = w.T.astype(np.float32)
    in_f = wt.shape[0]
    g = np.arange(in_f) // group if g_idx is None else g_idx
    groups = int(g.max()) + 1
    maxq = (1 << bits) - 1
    lo = np.stack([np.minimum(wt[g == i].min(0), 0) for i in range(groups)])
    hi = np.stack([np.maximum(wt[g == i].max(0), 0) for i in range(groups)])
    scales = np.maximum((hi - lo) / maxq, 1e-8).astype(np.float16)
    zeros = np.clip(np.round(-lo / scales.astype(np.float32)), 0, maxq).astype(np.int64)
    q = np.clip(np.round(wt / scales[g].astype(np.float32)) + zeros[g], 0, maxq).astype(np.int64)
    return q, zeros, scales, g.astype(np.int32)


def gptq_tensors(w, bits=4, group=32, act_order=False, v1=True, seed=0):
    g_idx = None
    if act_order:
        g_idx = (np.random.default_rng(seed).permutation(w.shape[1]) // group).astype(np.int32)
    q, zeros, scales, g = rtn(w, bits, group, g_idx)
    stored = (zeros - 1) & ((1 << bits) - 1) if v1 else zeros
    return pack_rows(q, bits), pack_cols(stored, bits), scales, g


@pytest.mark.parametrize(("bits", "act_order", "v1"), [
    (4, False, True), (4, True, True), (4, False, False), (8, False, True), (2, True, True)])
def test_gptq_equals_reference(bits, act_order, v1):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 128)).astype(np.float32)
    qweight, qzeros, scales, g_idx = gptq_tensors(w, bits, 32, act_order, v1)
    ref = ref_gptq(qweight, qzeros, scales, g_idx, bits, v1)
    assert ref.dtype == torch.float16
    ours = dequantize_gptq(qweight, qzeros, scales, g_idx, bits=bits, checkpoint_format="gptq" if v1 else "gptq_v2")
    np.testing.assert_array_equal(ours, ref.float().numpy().T)
    if bits >= 4:
        assert float(np.abs(ours - w).max()) < (0.6 if bits == 4 else 0.05)


def test_gptq_zero_wraps_like_autogptq():
    """v1 stores z - 1; a stored 15 (z = 0 packed by a wrapping packer) reads back as 0, like AutoGPTQ."""
    rng = np.random.default_rng(1)
    q = rng.integers(0, 16, size=(64, 16))
    zeros = np.zeros((2, 16), dtype=np.int64)
    qweight, qzeros = pack_rows(q, 4), pack_cols((zeros - 1) & 15, 4)
    scales = np.ones((2, 16), dtype=np.float16)
    g_idx = (np.arange(64) // 32).astype(np.int32)
    ours = dequantize_gptq(qweight, qzeros, scales, g_idx)
    np.testing.assert_array_equal(ours, ref_gptq(qweight, qzeros, scales, g_idx, 4, True).float().numpy().T)
    np.testing.assert_array_equal(ours, q.T.astype(np.float32))


def test_awq_equals_reference():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    q, zeros, scales, _ = rtn(w, 4, 64)
    qweight, qzeros = pack_cols(q, 4, AWQ_ORDER), pack_cols(zeros, 4, AWQ_ORDER)
    ref = ref_awq(qweight, qzeros, scales, 64)
    ours = dequantize_awq(qweight, qzeros, scales)
    np.testing.assert_array_equal(ours, ref.float().numpy().T)
    assert float(np.abs(ours - w).max()) < 0.6


def test_files_are_detected_and_told_apart(tmp_path):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 128)).astype(np.float32)
    qweight, qzeros, scales, g_idx = gptq_tensors(w, act_order=True)
    gptq = {"model.layers.0.mlp.down_proj.qweight": qweight, "model.layers.0.mlp.down_proj.qzeros": qzeros,
            "model.layers.0.mlp.down_proj.scales": scales, "model.layers.0.mlp.down_proj.g_idx": g_idx,
            "model.layers.0.mlp.down_proj.bias": np.zeros(64, np.float16)}
    q, zeros, s, _ = rtn(w, 4, 32)
    awq = {"model.layers.1.mlp.down_proj.qweight": pack_cols(q, 4, AWQ_ORDER),
           "model.layers.1.mlp.down_proj.qzeros": pack_cols(zeros, 4, AWQ_ORDER),
           "model.layers.1.mlp.down_proj.scales": s}
    for name, tensors in (("gptq", gptq), ("awq", awq)):
        save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()},
                  str(tmp_path / f"{name}.safetensors"))
        raw = RawSafetensors(tmp_path / f"{name}.safetensors")
        (layer,) = find_quantized(raw.tensors())  # no config: the header's shapes decide
        assert layer.format.name == name and layer.shape == (64, 128)
        assert not any(n.endswith(".bias") for n in layer.stored)
        ours = dequantize_layer(layer, raw.raw)
        assert float(np.abs(ours - w).max()) < 0.6
        raw.close()


def test_inconsistent_or_unsupported_layers_are_typed_errors():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((64, 128)).astype(np.float32)
    qweight, qzeros, scales, g_idx = gptq_tensors(w)
    with pytest.raises(CheckpointError, match="g_idx"):
        dequantize_gptq(qweight, qzeros, scales, g_idx + 100)
    with pytest.raises(CheckpointError, match="qzeros"):
        dequantize_gptq(qweight, qzeros[:, :3], scales, g_idx)
    with pytest.raises(UnsupportedDtypeError, match="gptq"):
        dequantize_gptq(qweight, qzeros, scales, g_idx, bits=3)
    with pytest.raises(UnsupportedDtypeError, match="awq"):
        dequantize_awq(qweight, qzeros, scales, version="gemv")


def alpha(w) -> float:
    return fit_power_law(eigenvalues(np.asarray(w, dtype=np.float32))).alpha


@pytest.mark.parametrize("fmt", ["gptq", "awq"])
def test_quantised_heavy_tailed_model_keeps_alpha(fmt):
    rng = np.random.default_rng(3)
    deltas = []
    for a in (2.5, 3.5, 4.5):
        w = heavy_tailed(rng, 512, 256, alpha=a)
        if fmt == "gptq":
            qweight, qzeros, scales, g_idx = gptq_tensors(w, 4, 128)
            deq = dequantize_gptq(qweight, qzeros, scales, g_idx)
        else:
            q, zeros, scales, _ = rtn(w, 4, 128)
            deq = dequantize_awq(pack_cols(q, 4, AWQ_ORDER), pack_cols(zeros, 4, AWQ_ORDER), scales)
        deltas.append(alpha(deq) - alpha(w))
    print(f"{fmt} 4-bit group 128 (round to nearest): delta alpha {np.round(deltas, 4)}")
    assert max(abs(d) for d in deltas) < 0.35


def test_plain_float_checkpoints_hold_no_quantised_layer():
    from ww_spectral.records import TensorInfo

    dense = [TensorInfo(name=f"model.layers.{i}.mlp.{p}.weight", shape=(64, 32), dtype=d, file=None, nbytes=0)
             for i in range(3) for p, d in (("up_proj", "BF16"), ("down_proj", "F32"))]
    dense.append(TensorInfo(name="model.layers.0.mlp.up_proj.bias", shape=(64,), dtype="F16", file=None, nbytes=0))
    assert find_quantized(dense) == ()
    assert find_quantized(dense, {"quantization_config": {"quant_method": "gptq"}}) == ()
