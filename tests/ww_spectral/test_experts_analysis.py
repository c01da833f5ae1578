"""Mixture-of-experts stacks in the analysis (ww_spectral/experts.py split_expert_stacks and read_expert): one
row per expert (and gate/up part of a fused stack), tensor_name = the stack, each row equal to the same
matrix analysed on its own; summaries with the per-expert and per-block means."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from support.checkpoints import write_hf_model_folder

from ww_spectral import analysis, experts
from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.layer_read import read_layer
from ww_spectral.model import plan_model

E, H, INTER, BLOCKS = 4, 16, 24, 2
COMPARED = ("alpha", "D", "xmin", "lambda_max", "norm", "stable_rank", "num_evals", "N", "M", "matrix_rank")


def _moe_tensors(*, in_out: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {"model.embed_tokens.weight": rng.standard_normal((40, H)).astype(np.float32),
           "lm_head.weight": rng.standard_normal((40, H)).astype(np.float32)}
    for b in range(BLOCKS):
        p = f"model.layers.{b}"
        out[f"{p}.self_attn.q_proj.weight"] = rng.standard_normal((H, H)).astype(np.float32)
        out[f"{p}.mlp.gate.weight"] = rng.standard_normal((E, H)).astype(np.float32)  # router: too small
        # heavy-ish tails so the fits differ from expert to expert
        scale = rng.pareto(3.0, size=(E, 1, 1)).astype(np.float32) + 1
        gate_up = rng.standard_t(3, size=(E, 2 * INTER, H)).astype(np.float32) * scale
        down = rng.standard_t(3, size=(E, H, INTER)).astype(np.float32)
        out[f"{p}.mlp.experts.gate_up_proj"] = gate_up.transpose(0, 2, 1).copy() if in_out else gate_up
        out[f"{p}.mlp.experts.down_proj"] = down.transpose(0, 2, 1).copy() if in_out else down
    return out


def _dense_equivalent(tensors, *, interleaved: bool, in_out: bool) -> dict[str, np.ndarray]:
    """{stack.e.part: (out, in) matrix} computed here with numpy, independently of experts.py."""
    out = {}
    for name, t in tensors.items():
        if t.ndim != 3:
            continue
        for e in range(t.shape[0]):
            w = t[e].T if in_out else t[e]
            if name.endswith("gate_up_proj"):
                gate, up = (w[0::2], w[1::2]) if interleaved else (w[:INTER], w[INTER:])
                out[f"{name}.{e}.gate"], out[f"{name}.{e}.up"] = gate.copy(), up.copy()
            else:
                out[f"{name}.{e}"] = w.copy()
    return out


@pytest.mark.parametrize("model_type", ["qwen3_moe", "gpt_oss"])
def test_rows_per_expert_equal_a_dense_per_matrix_analysis(tmp_path, model_type):
    in_out = model_type == "gpt_oss"  # GPT-OSS: [E, in, out], gate/up interleaved
    tensors = _moe_tensors(in_out=in_out)
    folder = write_hf_model_folder(tmp_path / model_type, tensors, config={
        "model_type": model_type, "hidden_size": H, "architectures": ["X"]})
    result = analysis.analyze_model(str(folder), threads=1)
    layers = result.layers
    ex = layers[layers["expert"].notna()]
    assert len(ex) == BLOCKS * E * 3 and (ex["status"] == "success").all()
    assert set(ex["tensor_name"]) == {n for n, t in tensors.items() if t.ndim == 3}
    gu = ex[ex["tensor_name"].str.endswith("gate_up_proj")]
    assert gu["part"].tolist() == ["gate", "up"] * (BLOCKS * E)
    assert gu["role"].tolist() == ["mlp_gate", "mlp_up"] * (BLOCKS * E)
    down = ex[ex["tensor_name"].str.endswith("down_proj")]
    assert set(down["role"]) == {"mlp_down"} and set(down["part"]) == {""}
    assert ex.groupby("tensor_name")["expert"].apply(lambda s: sorted(set(s))).tolist() == [list(range(E))] * 4
    assert (ex["block"].astype(int) == ex["tensor_name"].str.split(".").str[2].astype(int)).all()
    assert tuple(ex["longname"].iloc[0].split(".")[-1:]) in {("0",), ("gate",)}

    dense = analysis.analyze(_dense_equivalent(tensors, interleaved=in_out, in_out=in_out), threads=1)
    dense = dense.set_index("tensor_name")
    for _, row in ex.iterrows():
        key = f"{row['tensor_name']}.{int(row['expert'])}" + (f".{row['part']}" if row["part"] else "")
        ref = dense.loc[key]
        for c in COMPARED:
            assert row[c] == pytest.approx(ref[c], rel=1e-9, abs=1e-12), (key, c)
    # the fits really differ per expert (not one stack's numbers copied E times)
    assert ex["alpha"].nunique() > E

    ok = layers[layers["status"] == "success"]
    is_ex = ok["expert"].notna()
    groups = ok[is_ex].groupby(["block", "role"])["alpha"].mean().tolist()
    summary = result.summary
    assert summary["alpha_expert_mean"] == pytest.approx(ok.loc[is_ex, "alpha"].mean())
    assert summary["alpha_block_mean"] == pytest.approx(np.mean(ok.loc[~is_ex, "alpha"].tolist() + groups))
    assert summary["alpha"] == pytest.approx(ok["alpha"].mean())


def test_a_dense_model_summary_has_no_expert_mean(tmp_path):
    tensors = {k: v for k, v in _moe_tensors(in_out=False).items() if v.ndim == 2}
    result = analysis.analyze_model(tensors, threads=1)
    assert np.isnan(result.summary["alpha_expert_mean"])
    assert result.summary["alpha_block_mean"] == pytest.approx(result.summary["alpha"])


class _Counting:
    """A checkpoint that counts whole-tensor reads (and offers read_rows when asked)."""

    def __init__(self, ckpt, *, rows: str) -> None:
        self.ckpt, self.ref, self.reads, self.row_reads = ckpt, ckpt.ref, [], []
        if rows == "slabs":
            self.read_rows = self._read_rows
        elif rows == "none":  # a reader that cannot read part of this tensor says so with None
            self.read_rows = lambda name, start, stop, *, dtype=np.float32: None

    def tensors(self):
        return self.ckpt.tensors()

    def read(self, name, *, dtype=np.float32):
        self.reads.append(name)
        return self.ckpt.read(name, dtype=dtype)

    def _read_rows(self, name, start, stop, *, dtype=np.float32):
        self.row_reads.append((name, start, stop))
        return self.ckpt.read(name, dtype=dtype)[start:stop]


@pytest.mark.parametrize("rows", ["absent", "none", "slabs"])
def test_a_stack_is_read_once_or_one_slab_per_expert(tmp_path, rows):
    folder = write_hf_model_folder(tmp_path / "m", _moe_tensors(in_out=False), config={"model_type": "mixtral"})
    with open_checkpoint(str(folder)) as ck:
        plan = plan_model(ck)
        counting = _Counting(ck, rows=rows)
        expert_plans = [p for p in plan.analysed if p.read_kind == "expert"]
        mats = [read_layer(counting, p) for p in expert_plans]
        stacks = sorted({p.tensor_name for p in expert_plans})
        if rows == "slabs":
            assert counting.reads == [] and len(counting.row_reads) == len(expert_plans)
            assert {(s, e, e + 1) for s, e, _ in ((p.tensor_name, p.expert, p.part) for p in expert_plans)} \
                == set(counting.row_reads)
        else:
            assert sorted(counting.reads) == stacks  # each stack once, not once per expert
        full = {s: ck.read(s) for s in stacks}
    for p, m in zip(expert_plans, mats):
        assert m.shape == p.shape and m.flags.owndata
        np.testing.assert_array_equal(m, experts.expert_matrix(full[p.tensor_name][p.expert],
                                                               experts.ExpertLayout("out_in", "halves" if p.part
                                                                                    else ""), p.part))


def test_odd_fused_stack_and_selection_by_stack_name(tmp_path):
    tensors = _moe_tensors(in_out=False)
    tensors["model.layers.0.mlp.experts.gate_up_proj"] = tensors["model.layers.0.mlp.experts.gate_up_proj"][:, :47]
    result = analysis.analyze_model(tensors, threads=1, include="model.layers.1.mlp.experts.down_proj")
    layers = result.layers.set_index("tensor_name", drop=False)
    odd = layers.loc["model.layers.0.mlp.experts.gate_up_proj"]
    assert odd["status"] == "skipped" and "odd output size 47" in odd["skip_reason"]
    picked = result.layers[result.layers["status"] == "success"]
    assert set(picked["tensor_name"]) == {"model.layers.1.mlp.experts.down_proj"} and len(picked) == E


def test_transformers_mixtral_3d_stacks_equal_its_saved_per_expert_files(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.MixtralConfig(vocab_size=64, hidden_size=H, intermediate_size=INTER, num_hidden_layers=2,
                                     num_attention_heads=2, num_key_value_heads=1, num_local_experts=E,
                                     num_experts_per_tok=2, max_position_embeddings=32)
    model = transformers.MixtralForCausalLM(cfg)  # built from a config: nothing downloaded
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert state["model.layers.0.mlp.experts.gate_up_proj"].ndim == 3  # fused 3-D stacks in memory
    model.save_pretrained(tmp_path / "saved")  # transformers writes them back per expert (w1, w2, w3)
    in_memory = analysis.analyze(state, threads=1)
    saved = analysis.analyze(str(tmp_path / "saved"), threads=1)
    assert any(".experts.0.w1." in n for n in saved["tensor_name"])
    role_of_w = {"w1": "mlp_gate", "w3": "mlp_up", "w2": "mlp_down"}

    def per_expert(frame):
        ex = frame[frame["expert"].notna()]
        return {(int(r.block), int(r.expert), r.role): r.alpha for r in ex.itertuples()}

    mem, disk = per_expert(in_memory), per_expert(saved)
    assert len(mem) == 2 * E * 3 and mem.keys() == disk.keys()
    assert {k[2] for k in mem} == set(role_of_w.values())
    for key, alpha in mem.items():
        assert alpha == pytest.approx(disk[key], rel=1e-9, nan_ok=True), key
    pd.testing.assert_series_equal(in_memory[in_memory["expert"].isna()]["alpha"].reset_index(drop=True),
                                   saved[saved["expert"].isna()]["alpha"].reset_index(drop=True))


def test_an_expert_stored_on_its_own_reads_as_its_tensor(tmp_path):
    import dataclasses

    tensors = {"model.layers.0.block_sparse_moe.experts.3.w2.weight": np.arange(96, dtype=np.float32).reshape(8, 12)}
    folder = write_hf_model_folder(tmp_path / "legacy", tensors, config={"model_type": "mixtral"})
    with open_checkpoint(str(folder)) as ck:
        (plan,) = plan_model(ck, {"min_evals": 1}).layers
        assert (plan.expert, plan.role, plan.read_kind) == (3, "mlp_down", "tensor")
        as_expert = read_layer(ck, dataclasses.replace(plan, read_kind="expert"))  # e.g. a base delta's inner read
    np.testing.assert_array_equal(as_expert, tensors["model.layers.0.block_sparse_moe.experts.3.w2.weight"])


def test_layer_ids_select_the_rows_they_name_after_the_split():
    tensors = _moe_tensors(in_out=False)
    full = analysis.analyze(tensors, threads=1)
    picked = full[full["part"] == "up"].iloc[[0, 5]]
    again = analysis.analyze(tensors, threads=1, layers=picked["layer_id"].tolist())
    assert again[["layer_id", "tensor_name", "expert", "part"]].values.tolist() == \
        picked[["layer_id", "tensor_name", "expert", "part"]].values.tolist()
    np.testing.assert_allclose(again["alpha"].to_numpy(float), picked["alpha"].to_numpy(float), rtol=1e-12)
    left_out = analysis.analyze_model(tensors, threads=1, layers=[-int(picked["layer_id"].iloc[0])]).layers
    row = left_out[left_out["layer_id"] == picked["layer_id"].iloc[0]].iloc[0]
    assert row["status"] == "skipped" and row["fit_status"] == "not_selected"
