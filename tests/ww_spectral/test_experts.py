"""Mixture-of-experts stacks: split per expert in the orientation the model computes with (checked against
transformers' own Mixtral experts forward and GPT-OSS's fused interleaved layout), one expert read from a
file at a time, summaries that 128 experts cannot drown."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

from ww_spectral.experts import (  # noqa: E402
    ExpertLayout,
    expert_balanced_mean,
    expert_byte_range,
    expert_layout,
    expert_matrix,
    is_expert_stack,
    iter_expert_matrices,
    plan_experts,
)
from ww_spectral.quant import RawSafetensors  # noqa: E402
from ww_spectral.records import TensorInfo  # noqa: E402
from ww_spectral.spectrum import eigenvalues  # noqa: E402


def info(name, shape, dtype="F32"):
    return TensorInfo(name=name, shape=tuple(shape), dtype=dtype, file=None, nbytes=0)


def test_mixtral_experts_forward_matches_our_split():
    mixtral = pytest.importorskip("transformers.models.mixtral.modeling_mixtral")
    from transformers import MixtralConfig

    cfg = MixtralConfig(hidden_size=16, intermediate_size=24, num_local_experts=4, num_experts_per_tok=1)
    torch.manual_seed(0)
    experts = mixtral.MixtralExperts(cfg)
    with torch.no_grad():
        experts.gate_up_proj.normal_()
        experts.down_proj.normal_()
    gate_up = info("model.layers.0.mlp.experts.gate_up_proj", experts.gate_up_proj.shape)
    down = info("model.layers.0.mlp.experts.down_proj", experts.down_proj.shape)
    config = {"model_type": "mixtral", "hidden_size": 16}
    lay_gu, lay_d = expert_layout(gate_up, config), expert_layout(down, config)
    assert lay_gu == ExpertLayout("out_in", "halves") and lay_d == ExpertLayout("out_in", "")
    plans = plan_experts(gate_up, lay_gu)
    assert [(p.expert, p.part, p.role, p.shape) for p in plans[:2]] == [
        (0, "gate", "mlp_gate", (24, 16)), (0, "up", "mlp_up", (24, 16))]
    x = torch.randn(5, 16)
    gu, dn = experts.gate_up_proj.detach().numpy(), experts.down_proj.detach().numpy()
    for e in range(4):
        with torch.no_grad():
            ref = experts(x, torch.full((5, 1), e), torch.ones(5, 1)).numpy()
        g = x.numpy() @ expert_matrix(gu[e], lay_gu, "gate").T
        u = x.numpy() @ expert_matrix(gu[e], lay_gu, "up").T
        h = (g / (1 + np.exp(-g))) * u
        ours = h @ expert_matrix(dn[e], lay_d).T
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_gpt_oss_layout_is_in_out_interleaved():
    """transformers/models/gpt_oss/modeling_gpt_oss.py: gate_up = x @ W[e] + b; gate, up = [..., ::2], [..., 1::2]."""
    rng = np.random.default_rng(1)
    stack = rng.standard_normal((3, 16, 2 * 12)).astype(np.float32)  # [E, hidden, 2 * inter]
    meta = info("model.layers.0.mlp.experts.gate_up_proj", stack.shape)
    layout = expert_layout(meta, {"model_type": "gpt_oss", "hidden_size": 16})
    assert layout == ExpertLayout("in_out", "interleaved")
    x = rng.standard_normal((4, 16)).astype(np.float32)
    for e in range(3):
        gate_up = x @ stack[e]
        np.testing.assert_allclose(x @ expert_matrix(stack[e], layout, "gate").T, gate_up[..., ::2], rtol=1e-6)
        np.testing.assert_allclose(x @ expert_matrix(stack[e], layout, "up").T, gate_up[..., 1::2], rtol=1e-6)


def test_orientation_from_hidden_size_and_gguf_names():
    assert expert_layout(info("m.layers.1.mlp.experts.down_proj", (8, 24, 16)), {"hidden_size": 16}).orientation \
        == "in_out"
    assert expert_layout(info("m.layers.1.mlp.experts.down_proj", (8, 16, 24)), {"hidden_size": 16}).orientation \
        == "out_in"
    gguf_down = info("blk.1.ffn_down_exps.weight", (8, 16, 24))
    assert is_expert_stack(gguf_down) and expert_layout(gguf_down) == ExpertLayout("out_in", "")
    assert not is_expert_stack(info("model.layers.0.mlp.up_proj.weight", (16, 24)))
    with pytest.raises(ValueError):
        ExpertLayout("sideways")


def test_per_expert_spectra_and_one_expert_read_from_file(tmp_path):
    rng = np.random.default_rng(2)
    stack = torch.from_numpy(rng.standard_normal((6, 40, 24)).astype(np.float32)).to(torch.bfloat16)
    name = "model.layers.3.mlp.experts.down_proj"
    save_file({name: stack}, str(tmp_path / "m.safetensors"))
    raw = RawSafetensors(tmp_path / "m.safetensors")
    (meta,) = raw.tensors()
    layout = expert_layout(meta)
    full = raw.raw(name)
    data_start, _ = raw.data_span(name)
    for plan, matrix in iter_expert_matrices(full, meta, layout):
        begin, end = expert_byte_range(meta.shape, 2, plan.expert)
        slab = np.fromfile(tmp_path / "m.safetensors", dtype=np.uint16, count=(end - begin) // 2,
                           offset=data_start + begin).view(full.dtype).reshape(40, 24)
        np.testing.assert_array_equal(expert_matrix(slab, layout), matrix)
        dense = np.linalg.svd(stack[plan.expert].float().numpy().astype(np.float64), compute_uv=False) ** 2
        np.testing.assert_allclose(eigenvalues(matrix.astype(np.float32), precision="float64"), np.sort(dense),
                                   rtol=1e-9)
    raw.close()
    with pytest.raises(IndexError):
        expert_byte_range((6, 40, 24), 2, 6)


def test_balanced_mean_keeps_128_experts_from_drowning_the_rest():
    rows = [{"alpha": 2.0, "block": 0, "role": "attn_q", "expert": None},
            {"alpha": 2.0, "block": 0, "role": "attn_o", "expert": math.nan},
            {"alpha": float("nan"), "block": 0, "role": "attn_v", "expert": None}]
    rows += [{"alpha": 6.0, "block": 0, "role": "mlp_down", "expert": e} for e in range(128)]
    out = expert_balanced_mean(rows, "alpha")
    assert out["expert_mean"] == 6.0
    assert out["block_mean"] == pytest.approx((2 + 2 + 6) / 3)
    assert out["mean"] == pytest.approx((4 + 6 * 128) / 130)
