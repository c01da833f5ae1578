"""NVIDIA ModelOpt NVFP4 checkpoints (ww_spectral/quant/modelopt.py): the layers ModelOpt's own NVFP4QTensor
quantises are found from the header, dequantised equal to its own `dequantize` (float32), and analysed.

ModelOpt runs in a subprocess: importing it loads thousands of modules (torch._dynamo, its plugins for
transformers, peft, accelerate) that must not change the libraries the other tests use in this process."""

from __future__ import annotations

import json
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from support.planted_models import heavy_tailed

from ww_spectral.analysis import analyze_model
from ww_spectral.errors import CheckpointError
from ww_spectral.fit import fit_power_law
from ww_spectral.quant import RawSafetensors, dequantize_layer, dequantize_modelopt_nvfp4, find_quantized
from ww_spectral.spectrum import eigenvalues

torch = pytest.importorskip("torch")
if __import__("importlib.util").util.find_spec("modelopt") is None:
    pytest.skip("nvidia-modelopt (the test extra) is not installed", allow_module_level=True)
from safetensors.torch import load_file, save_file  # noqa: E402

CONFIG = {"model_type": "llama", "hidden_size": 256, "torch_dtype": "bfloat16",
          "quantization_config": {"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16}}
PARTS = ("weight", "weight_scale", "weight_scale_2", "input_scale")

# For each bf16 weight W of the input file: what ModelOpt's unified HF export stores for that Linear (its
# NVFP4QTensor.quantize with blocks of 16), and ModelOpt's own dequantisation of it as float32.
_MODELOPT = r"""
import sys, warnings
warnings.simplefilter("ignore")
import torch
from safetensors.torch import load_file, save_file
from modelopt.torch.quantization.qtensor import NVFP4QTensor
out = {}
for name, w in load_file(sys.argv[1]).items():
    packed, scale, scale_2 = NVFP4QTensor.quantize(w, 16)
    ref = packed.dequantize(dtype=torch.float32, scale=scale, double_scale=scale_2, block_sizes={-1: 16})
    out.update({f"{name}.weight": packed._quantized_data, f"{name}.weight_scale": scale,
                f"{name}.weight_scale_2": scale_2.reshape(()), f"{name}.input_scale": torch.tensor(0.5),
                f"{name}.reference": ref})
save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[2])
"""


def _weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    out = {}
    for spread in (0.01, 40.0):
        w = (torch.randn(64, 256) * spread).to(torch.bfloat16)
        w[3, :16] = 0  # an all-zero block: ModelOpt sets its scale to 1
        out[f"spread{spread}"] = w
    rng = np.random.default_rng(7)
    for i, a in enumerate((2.5, 4.0)):
        out[f"model.layers.{i}.mlp.up_proj"] = torch.from_numpy(heavy_tailed(rng, 256, 512, alpha=a)).to(torch.bfloat16)
    return out


@pytest.fixture(scope="module")
def modelopt(tmp_path_factory):
    """(the bf16 weights, ModelOpt's stored tensors and reference dequantisations by name)."""
    folder = tmp_path_factory.mktemp("modelopt")
    weights = _weights()
    save_file(weights, str(folder / "in.safetensors"))
    subprocess.run([sys.executable, "-c", _MODELOPT, str(folder / "in.safetensors"), str(folder / "out.safetensors")],
                   check=True, timeout=300)
    return weights, load_file(str(folder / "out.safetensors"))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.view(torch.uint8).numpy().view(ml_dtypes.float8_e4m3fn) if t.dtype == torch.float8_e4m3fn else t.numpy()


@pytest.mark.parametrize("name", ["spread0.01", "spread40.0"])
def test_equals_modelopt_dequantize(modelopt, name):
    weights, stored = modelopt
    assert stored[f"{name}.weight"].dtype == torch.uint8 and tuple(stored[f"{name}.weight"].shape) == (64, 128)
    ours = dequantize_modelopt_nvfp4(*(_np(stored[f"{name}.{k}"]) for k in PARTS[:3]))
    assert ours.dtype == np.float32 and ours.shape == (64, 256)
    # equal values (ModelOpt's table has +0 where the OCP one has -0)
    np.testing.assert_array_equal(ours, stored[f"{name}.reference"].numpy())
    w = weights[name].float().numpy()
    assert np.linalg.norm(ours - w) / np.linalg.norm(w) < 0.15  # the scales read the right way: near W


def test_parts_that_do_not_fit_are_one_clear_error(modelopt):
    codes, scale, scale_2 = (_np(modelopt[1][f"spread0.01.{k}"]) for k in PARTS[:3])
    with pytest.raises(CheckpointError, match="one scale per 16 inputs"):
        dequantize_modelopt_nvfp4(codes, scale[:, :2], scale_2)
    with pytest.raises(CheckpointError, match="not float8 e4m3"):
        dequantize_modelopt_nvfp4(codes, scale.astype(np.float32), scale_2)


def alpha(w: np.ndarray) -> float:
    return fit_power_law(eigenvalues(np.asarray(w, dtype=np.float32))).alpha


def test_a_modelopt_checkpoint_is_detected_and_analysed(tmp_path, modelopt):
    weights, stored = modelopt
    tensors, dense, refs = {"model.norm.weight": torch.ones(256)}, {}, {}
    for prefix in (f"model.layers.{i}.mlp.up_proj" for i in range(2)):
        tensors.update({f"{prefix}.{k}": stored[f"{prefix}.{k}"] for k in PARTS})
        dense[prefix], refs[prefix] = weights[prefix].float().numpy(), stored[f"{prefix}.reference"].numpy()
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    raw = RawSafetensors(tmp_path / "model.safetensors")
    layers = find_quantized(raw.tensors(), CONFIG)
    assert [q.prefix for q in layers] == list(dense)
    for q in layers:
        assert q.format.name == "modelopt_nvfp4" and q.shape == (256, 512) and not q.skip_reason
        assert set(q.stored) == {f"{q.prefix}.{k}" for k in PARTS}
        np.testing.assert_array_equal(dequantize_layer(q, raw.raw), refs[q.prefix])
    raw.close()
    rows = analyze_model(str(tmp_path), threads=1).layers
    done = rows[rows["status"] == "success"].set_index("tensor_name")
    assert sorted(done.index) == sorted(f"{p}.weight" for p in dense)
    assert (done["quant_format"] == "modelopt_nvfp4").all()
    for prefix, w in dense.items():
        delta = done.loc[f"{prefix}.weight", "alpha"] - alpha(w)
        print(f"modelopt nvfp4 {prefix}: delta alpha {delta:+.4f}")
        assert abs(delta) < 0.35
    parts = rows[rows["fit_status"] == "quant_part"]
    assert len(parts) == 3 * len(dense)  # weight_scale, weight_scale_2, input_scale of each layer
