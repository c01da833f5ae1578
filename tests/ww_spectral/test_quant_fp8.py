"""float8 weights with per-tensor, per-channel and block scales: equal to transformers' own fine-grained
FP8 dequantisation (integrations/finegrained_fp8.py), detected from a checkpoint's header, alphas kept."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
fp8_hf = pytest.importorskip("transformers.integrations.finegrained_fp8")
from safetensors.torch import save_file  # noqa: E402
from support.planted_models import heavy_tailed  # noqa: E402

from ww_spectral.errors import CheckpointError, UnsupportedDtypeError  # noqa: E402
from ww_spectral.fit import fit_power_law  # noqa: E402
from ww_spectral.quant import RawSafetensors, dequantize_fp8, dequantize_layer, find_quantized  # noqa: E402
from ww_spectral.spectrum import eigenvalues  # noqa: E402

FMAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0}


def quantise(w: torch.Tensor, dtype, block: tuple[int, int] | None, per_channel: bool = False):
    """(fp8 weight, float32 scale) the usual way: scale = amax / fmax per tensor, row or block."""
    if block is None:
        amax = w.abs().amax(dim=1, keepdim=True) if per_channel else w.abs().amax().reshape(1)
        scale = amax / FMAX[dtype]
        return (w / scale).to(dtype), scale
    bh, bw = block
    rows, cols = -(-w.shape[0] // bh), -(-w.shape[1] // bw)
    pad = torch.nn.functional.pad(w, (0, cols * bw - w.shape[1], 0, rows * bh - w.shape[0]))
    amax = pad.reshape(rows, bh, cols, bw).abs().amax((1, 3))
    scale = amax / FMAX[dtype]
    full = scale.repeat_interleave(bh, 0).repeat_interleave(bw, 1)[: w.shape[0], : w.shape[1]]
    return (w / full).to(dtype), scale


def np8(t: torch.Tensor) -> np.ndarray:
    import ml_dtypes

    view = ml_dtypes.float8_e4m3fn if t.dtype == torch.float8_e4m3fn else ml_dtypes.float8_e5m2
    return t.view(torch.uint8).numpy().view(view)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize(("shape", "block", "per_channel"), [
    ((256, 384), (128, 128), False), ((300, 200), (128, 128), False), ((96, 64), (32, 16), False),
    ((64, 80), None, False), ((64, 80), None, True)])
def test_equals_transformers_dequant(shape, block, per_channel, dtype):
    torch.manual_seed(0)
    w = torch.randn(*shape) * 0.05
    q, scale = quantise(w, dtype, block, per_channel)
    ref = fp8_hf._dequantize_fp8_weight(q, scale, list(block) if block else None, torch.float32)
    ours = dequantize_fp8(np8(q), scale.numpy(), block=block if block != (128, 128) else None)
    np.testing.assert_array_equal(ours, ref.numpy())
    assert float(np.abs(ours - w.numpy()).max()) < 0.1 * float(w.abs().max())


def test_checkpoint_detected_from_header(tmp_path):
    torch.manual_seed(1)
    tensors, refs = {}, {}
    for name in ("q_proj", "o_proj"):
        q, scale = quantise(torch.randn(256, 256) * 0.02, torch.float8_e4m3fn, (128, 128))
        prefix = f"model.layers.0.self_attn.{name}"
        tensors[f"{prefix}.weight"], tensors[f"{prefix}.weight_scale_inv"] = q, scale
        refs[prefix] = fp8_hf._dequantize_fp8_weight(q, scale, [128, 128], torch.float32).numpy()
    tensors["model.layers.0.input_layernorm.weight"] = torch.ones(256, dtype=torch.bfloat16)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    raw = RawSafetensors(tmp_path / "model.safetensors")
    layers = find_quantized(raw.tensors(), {"quantization_config": {"quant_method": "fp8",
                                                                    "weight_block_size": [128, 128]}})
    assert [q.prefix for q in layers] == ["model.layers.0.self_attn.o_proj", "model.layers.0.self_attn.q_proj"]
    for layer in layers:
        assert layer.format.name == "fp8" and layer.shape == (256, 256)
        np.testing.assert_array_equal(dequantize_layer(layer, raw.raw), refs[layer.prefix])
    raw.close()


def test_bad_inputs_are_typed_errors():
    q = np.zeros((256, 256), dtype=np8(torch.zeros(1).to(torch.float8_e4m3fn)).dtype)
    with pytest.raises(CheckpointError, match="block scale"):
        dequantize_fp8(q, np.ones((3, 2), np.float32))
    with pytest.raises(UnsupportedDtypeError, match="fp8"):
        dequantize_fp8(np.zeros((4, 4), np.int8), np.ones(1, np.float32))
    with pytest.raises(CheckpointError, match="not a matrix"):
        dequantize_fp8(q.reshape(16, 16, 256), None)


def alpha(w) -> float:
    return fit_power_law(eigenvalues(np.asarray(w, dtype=np.float32))).alpha


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float8_e4m3fn, 0.1), (torch.float8_e5m2, 0.2)])
def test_quantised_heavy_tailed_model_keeps_alpha(dtype, tol):
    rng = np.random.default_rng(3)
    deltas = []
    for a in (2.5, 3.5, 4.5):
        w = heavy_tailed(rng, 512, 256, alpha=a)
        q, scale = quantise(torch.from_numpy(w), dtype, (128, 128))
        deltas.append(alpha(dequantize_fp8(np8(q), scale.numpy())) - alpha(w))
    print(f"fp8 {str(dtype).removeprefix('torch.')} block 128x128: delta alpha {np.round(deltas, 4)}")
    assert max(abs(d) for d in deltas) < tol
