"""MXFP4 expert stacks (GPT-OSS's checkpoints, ww_spectral/quant/mxfp4.py): the dequantisation against
transformers' own `convert_moe_packed_tensors`, and a GPT-OSS-shaped MXFP4 checkpoint analysed per expert with
the same rows as its bf16 copy (built with that same transformers function, as GPT-OSS's bf16 repos are)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pandas as pd
import pytest
from support.checkpoints import write_hf_model_folder

from ww_spectral import analysis
from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.errors import CheckpointError
from ww_spectral.layer_read import read_layer
from ww_spectral.model import plan_model
from ww_spectral.quant import mxfp4

torch = pytest.importorskip("torch")
transformers_mxfp4 = pytest.importorskip("transformers.integrations.mxfp4")

E, H, INTER = 3, 96, 64
STACK = "model.layers.{b}.mlp.experts.{name}"
COMPARED = ("alpha", "D", "xmin", "lambda_max", "norm", "stable_rank", "num_evals", "N", "M", "matrix_rank")


def _reference(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """transformers' dequantisation ([E, in, out] bf16) as float32."""
    out = transformers_mxfp4.convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales))
    return out.to(torch.float32).numpy()


def test_dequantisation_equals_transformers_bit_for_bit_over_every_code_and_scale():
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (4, 24, 3, 16), dtype=np.uint8)
    blocks.reshape(-1)[:256] = np.arange(256, dtype=np.uint8)  # every pair of FP4 codes
    scales = rng.integers(0, 256, (4, 24, 3), dtype=np.uint8)
    scales.reshape(-1)[:256] = np.arange(256, dtype=np.uint8)  # every E8M0 exponent, 0 and 255 included
    ours = mxfp4.dequantize_mxfp4(blocks, scales)
    ref = _reference(blocks, scales).transpose(0, 2, 1)
    assert ours.shape == (4, 24, 3 * 32) and ours.dtype == np.float32
    assert np.isinf(ours).any() and np.isfinite(ours).mean() > 0.9  # byte 255 overflows some values, as there
    np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))


def test_dequantisation_refuses_arrays_that_do_not_pair():
    blocks = np.zeros((2, 4, 3, 16), np.uint8)
    with pytest.raises(CheckpointError, match="do not match"):
        mxfp4.dequantize_mxfp4(blocks, np.zeros((2, 4, 2), np.uint8))
    with pytest.raises(CheckpointError, match="do not match"):
        mxfp4.dequantize_mxfp4(blocks.astype(np.int8), np.zeros((2, 4, 3), np.uint8))


def _gpt_oss(seed: int = 0, *, blocks_count: int = 2) -> tuple[dict, dict]:
    """(MXFP4 tensors, the bf16 tensors of the same model as GPT-OSS's bf16 repos store them)."""
    rng = np.random.default_rng(seed)
    quantised, bf16 = {}, {}
    for b in range(blocks_count):
        for name, rows, inputs in (("gate_up_proj", 2 * INTER, H), ("down_proj", H, INTER)):
            stack = STACK.format(b=b, name=name)
            blocks = rng.integers(0, 256, (E, rows, inputs // 32, 16), dtype=np.uint8)
            scales = rng.integers(116, 125, (E, rows, inputs // 32), dtype=np.uint8)
            bias = rng.standard_normal((E, rows)).astype(ml_dtypes.bfloat16)
            quantised.update({f"{stack}_blocks": blocks, f"{stack}_scales": scales, f"{stack}_bias": bias})
            bf16.update({stack: _reference(blocks, scales).astype(ml_dtypes.bfloat16), f"{stack}_bias": bias})
        attn = rng.standard_t(3, (H, H)).astype(ml_dtypes.bfloat16)
        quantised[f"model.layers.{b}.self_attn.q_proj.weight"] = bf16[f"model.layers.{b}.self_attn.q_proj.weight"] = attn
    return quantised, bf16


CONFIG = {"model_type": "gpt_oss", "hidden_size": H, "intermediate_size": INTER, "num_local_experts": E}


def _rows(folder) -> list[dict]:
    """Every row of a model folder's analysis (skipped included), missing values as None."""
    frame = analysis.analyze_model(str(folder), threads=1).layers
    return [{k: (None if not isinstance(v, str) and pd.isna(v) else v) for k, v in r.items()}
            for r in frame.to_dict("records")]


def test_a_gpt_oss_mxfp4_checkpoint_gives_the_rows_of_its_bf16_copy(tmp_path):
    quantised, bf16 = _gpt_oss()
    mx = write_hf_model_folder(tmp_path / "mx", quantised,
                               config={**CONFIG, "quantization_config": {"quant_method": "mxfp4"}})
    bf = write_hf_model_folder(tmp_path / "bf", bf16, config=CONFIG)
    rows_mx, rows_bf = _rows(mx), _rows(bf)
    key = ("tensor_name", "expert", "part")
    done_mx = {tuple(r[k] for k in key): r for r in rows_mx if r["status"] == "success"}
    done_bf = {tuple(r[k] for k in key): r for r in rows_bf if r["status"] == "success"}
    # 2 blocks x (3 experts x (gate, up, down)) + 2 attention layers, named alike in both copies
    assert len(done_mx) == 2 * (3 * E + 1) and done_mx.keys() == done_bf.keys()
    for k, row in done_mx.items():
        assert row["quant_format"] == ("mxfp4" if row["expert"] is not None else "")
        assert row["longname"] == done_bf[k]["longname"] and row["role"] == done_bf[k]["role"]
        for col in COMPARED:
            assert row[col] == done_bf[k][col], (k, col)
    parts = [r for r in rows_mx if r.get("fit_status") == "quant_part"]
    assert sorted(r["tensor_name"] for r in parts) == sorted(n for n in quantised if n.endswith("_scales"))
    assert not any(r["tensor_name"].endswith("_blocks") for r in rows_mx)


class _NoRawRows:
    """A checkpoint without raw_rows (the fallback: whole raw tensors, sliced), counting raw reads."""

    def __init__(self, ckpt):
        self.ckpt, self.ref, self.raw_reads = ckpt, ckpt.ref, []

    def info(self, name):
        return self.ckpt.info(name)

    def raw(self, name):
        self.raw_reads.append(name)
        return self.ckpt.raw(name)


def test_an_expert_is_read_from_its_own_bytes_and_equals_the_reference(tmp_path):
    quantised, bf16 = _gpt_oss(seed=1, blocks_count=1)
    folder = write_hf_model_folder(tmp_path / "mx", quantised, config=CONFIG)  # no quantization_config needed
    with open_checkpoint(str(folder)) as ck:
        plans = [p for p in plan_model(ck).analysed if p.read_kind == "expert"]
        assert len(plans) == 3 * E
        stored = STACK.format(b=0, name="down_proj") + "_blocks"
        np.testing.assert_array_equal(ck.raw_rows(stored, 1, 2), ck.raw(stored)[1:2])
        fallback = _NoRawRows(ck)
        for p in plans:
            matrix = read_layer(ck, p)
            ref = bf16[p.tensor_name].astype(np.float32)[p.expert].T  # (out, in)
            if p.part:
                ref = ref[0::2] if p.part == "gate" else ref[1::2]  # GPT-OSS interleaves gate and up
            np.testing.assert_array_equal(matrix, ref)
            np.testing.assert_array_equal(read_layer(fallback, p), matrix)
        assert set(fallback.raw_reads) == {n for n in quantised if n.endswith(("_blocks", "_scales"))}


def test_blocks_and_scales_that_do_not_pair_are_skipped_rows_not_a_failure(tmp_path):
    quantised, _ = _gpt_oss(seed=2, blocks_count=1)
    stack = STACK.format(b=0, name="down_proj")
    quantised[f"{stack}_scales"] = quantised[f"{stack}_scales"][:, :, :1].copy()  # a stranger's broken file
    folder = write_hf_model_folder(tmp_path / "mx", quantised, config=CONFIG)
    rows = _rows(folder)
    by_name = {r["tensor_name"]: r for r in rows if r["tensor_name"].startswith(stack)}
    assert by_name[f"{stack}_blocks"]["status"] == "skipped" and by_name[f"{stack}_scales"]["status"] == "skipped"
    gate_up = [r for r in rows if r["tensor_name"] == STACK.format(b=0, name="gate_up_proj")]
    assert len(gate_up) == 2 * E and all(r["status"] == "success" for r in gate_up)


def test_against_a_base_the_mxfp4_experts_say_why_they_get_no_delta(tmp_path):
    quantised, bf16 = _gpt_oss(seed=3, blocks_count=1)
    mx = write_hf_model_folder(tmp_path / "mx", quantised, config=CONFIG)
    base = write_hf_model_folder(tmp_path / "base", bf16, config=CONFIG)
    layers = analysis.analyze_model(str(mx), base_model=str(base), threads=1).layers
    deltas = layers[layers["delta_kind"] == "base_delta"]
    experts = deltas[deltas["quant_format"] == "mxfp4"]
    assert len(experts) == 3 * E and (experts["fit_status"] == "base_delta_unsupported").all()
    assert experts["skip_reason"].str.contains("mxfp4 quantised").all()
    # the bf16 attention layer is the base's own: its delta is taken, and is zero
    attn = deltas[deltas["tensor_name"] == "model.layers.0.self_attn.q_proj.weight"]
    assert attn["fit_status"].tolist() == ["all_zero"]


def test_over_the_hub_an_expert_costs_two_range_requests_of_its_own_bytes(tmp_path):
    from datetime import UTC, datetime

    from support.hub_server import HubServer

    from ww_spectral import hub_source

    quantised, bf16 = _gpt_oss(seed=4, blocks_count=1)
    folder = write_hf_model_folder(tmp_path / "mx", quantised, config=CONFIG)
    server = HubServer().start()
    try:
        server.add_repo("org/gpt-oss-tiny", folder, last_modified=datetime(2025, 1, 1, tzinfo=UTC))
        with hub_source.open_remote_checkpoint("org/gpt-oss-tiny", endpoint=server.endpoint) as ckpt:
            plan = next(p for p in plan_model(ckpt).analysed if p.read_kind == "expert" and p.expert == 2)
            before = len(server.requests)
            matrix = read_layer(ckpt, plan)
            new = server.requests[before:]
            infos = {t.name: t for t in ckpt.tensors()}
    finally:
        server.stop()
    stored = mxfp4.stored_names(plan.tensor_name)
    assert [r.method for r in new] == ["GET", "GET"]
    spans = sorted(int(b) - int(a) + 1 for a, b in (r.range.removeprefix("bytes=").split("-") for r in new))
    assert spans == sorted(infos[n].nbytes // E for n in stored)  # one expert's blocks and scales, no more
    ref = bf16[plan.tensor_name].astype(np.float32)[2].T
    np.testing.assert_array_equal(matrix, ref[0::2] if plan.part == "gate" else ref[1::2] if plan.part else ref)


def test_an_expert_the_stored_stack_lacks_is_one_clear_error(tmp_path):
    import dataclasses

    quantised, _ = _gpt_oss(seed=5, blocks_count=1)
    folder = write_hf_model_folder(tmp_path / "mx", quantised, config=CONFIG)
    with open_checkpoint(str(folder)) as ck:
        plan = next(p for p in plan_model(ck).analysed if p.read_kind == "expert")
        with pytest.raises(ValueError, match=f"have no expert {E}; the checkpoint changed"):
            read_layer(ck, dataclasses.replace(plan, expert=E))
        np.testing.assert_array_equal(read_layer(ck, plan), read_layer(ck, plan))  # the checkpoint still reads
