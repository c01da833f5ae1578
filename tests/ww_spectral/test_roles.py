"""Block index, role and natural order parsed from tensor names (ww_spectral/roles.py)."""

from __future__ import annotations

import random

import pytest

from ww_spectral.roles import ROLES, natural_key, natural_order, tensor_role

CASES = [
    # Llama / Mistral / Qwen
    ("model.layers.10.self_attn.q_proj.weight", 10, "attn_q", None),
    ("model.layers.2.self_attn.k_proj.weight", 2, "attn_k", None),
    ("model.layers.2.self_attn.v_proj.weight", 2, "attn_v", None),
    ("model.layers.2.self_attn.o_proj.weight", 2, "attn_o", None),
    ("model.layers.2.mlp.gate_proj.weight", 2, "mlp_gate", None),
    ("model.layers.2.mlp.up_proj.weight", 2, "mlp_up", None),
    ("model.layers.2.mlp.down_proj.weight", 2, "mlp_down", None),
    ("model.layers.2.mlp.gate_up_proj.weight", 2, "mlp_gate_up", None),
    ("model.layers.2.self_attn.qkv_proj.weight", 2, "attn_qkv", None),
    ("model.embed_tokens.weight", None, "embedding", None),
    ("lm_head.weight", None, "lm_head", None),
    ("model.layers.2.input_layernorm.weight", 2, "norm", None),
    # GPT-2
    ("transformer.h.11.attn.c_attn.weight", 11, "attn_qkv", None),
    ("transformer.h.11.attn.c_proj.weight", 11, "attn_o", None),
    ("transformer.h.11.mlp.c_fc.weight", 11, "mlp_up", None),
    ("transformer.h.11.mlp.c_proj.weight", 11, "mlp_down", None),
    ("transformer.wte.weight", None, "embedding", None),
    ("transformer.wpe.weight", None, "position_embedding", None),
    # GPT-NeoX / Falcon
    ("gpt_neox.layers.3.attention.query_key_value.weight", 3, "attn_qkv", None),
    ("gpt_neox.layers.3.attention.dense.weight", 3, "attn_o", None),
    ("gpt_neox.layers.3.mlp.dense_h_to_4h.weight", 3, "mlp_up", None),
    ("gpt_neox.layers.3.mlp.dense_4h_to_h.weight", 3, "mlp_down", None),
    # BERT
    ("bert.encoder.layer.4.attention.self.query.weight", 4, "attn_q", None),
    ("bert.encoder.layer.4.attention.output.dense.weight", 4, "attn_o", None),
    ("bert.encoder.layer.4.intermediate.dense.weight", 4, "mlp_up", None),
    ("bert.encoder.layer.4.output.dense.weight", 4, "mlp_down", None),
    ("bert.embeddings.word_embeddings.weight", None, "embedding", None),
    # T5
    ("encoder.block.5.layer.0.SelfAttention.q.weight", 5, "attn_q", None),
    ("encoder.block.5.layer.0.SelfAttention.o.weight", 5, "attn_o", None),
    ("decoder.block.1.layer.1.EncDecAttention.k.weight", 1, "attn_k", None),
    ("encoder.block.5.layer.1.DenseReluDense.wi_0.weight", 5, "mlp_gate", None),
    ("encoder.block.5.layer.1.DenseReluDense.wo.weight", 5, "mlp_down", None),
    # Llama original / Mixtral experts / MoE router
    ("layers.7.attention.wq.weight", 7, "attn_q", None),
    ("layers.7.attention.wo.weight", 7, "attn_o", None),
    ("layers.7.feed_forward.w2.weight", 7, "mlp_down", None),
    ("model.layers.3.block_sparse_moe.experts.5.w1.weight", 3, "mlp_gate", 5),
    ("model.layers.3.block_sparse_moe.gate.weight", 3, "router", None),
    ("model.layers.3.mlp.experts.gate_up_proj", 3, "mlp_gate_up", None),
    # GGUF
    ("blk.12.attn_q.weight", 12, "attn_q", None),
    ("blk.12.attn_output.weight", 12, "attn_o", None),
    ("blk.12.ffn_down_exps.weight", 12, "mlp_down", None),
    ("blk.12.ffn_gate_inp.weight", 12, "router", None),
    ("token_embd.weight", None, "embedding", None),
    ("output.weight", None, "lm_head", None),
    ("output_norm.weight", None, "norm", None),
    # quantised / adapter companions keep the module's role
    ("model.layers.1.self_attn.q_proj.qweight", 1, "attn_q", None),
    ("base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight", 1, "attn_v", None),
    # conv nets / nn.Sequential
    ("features.3.weight", 3, "other", None),
    ("conv1.weight", None, "conv", None),
]


@pytest.mark.parametrize(("name", "block", "role", "expert"), CASES)
def test_role_and_block(name, block, role, expert):
    r = tensor_role(name)
    assert (r.block, r.role, r.expert) == (block, role, expert), name
    assert r.role in ROLES


def test_stack_and_group():
    r = tensor_role("decoder.block.1.layer.1.EncDecAttention.k.weight")
    assert r.stack == "decoder" and r.group == "attention"
    assert tensor_role("encoder.block.0.layer.0.SelfAttention.q.weight").stack == "encoder"
    assert tensor_role("model.layers.0.mlp.up_proj.weight").as_dict() == {
        "block": 0, "role": "mlp_up", "role_group": "mlp", "expert": None, "stack": ""}


def test_shape_4d_is_conv():
    assert tensor_role("features.0.weight", shape=(16, 3, 3, 3)).role == "conv"


def test_natural_order_puts_block_2_before_10():
    names = [f"model.layers.{i}.mlp.up_proj.weight" for i in range(12)] + ["lm_head.weight", "model.embed_tokens.weight"]
    shuffled = names[:]
    random.Random(0).shuffle(shuffled)
    alpha = sorted(shuffled)
    assert alpha.index("model.layers.10.mlp.up_proj.weight") < alpha.index("model.layers.2.mlp.up_proj.weight")
    ordered = natural_order(shuffled)
    blocks = [tensor_role(n).block for n in ordered if tensor_role(n).block is not None]
    assert blocks == sorted(blocks) == list(range(12))
    assert natural_key("a.2.b") < natural_key("a.10.b") < natural_key("a.10.c")
    assert natural_key("x") < natural_key("x.0")  # mixed lengths compare without a type error
