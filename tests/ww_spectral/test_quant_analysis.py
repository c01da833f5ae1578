"""Quantised checkpoints and GGUF files through the whole analysis (plan step, "dequant" read, rows).

Every quantised copy is written with the format's own library where it runs on CPU (gguf's writer and
quantisers, compressed-tensors' compressors, bitsandbytes' CPU quantisers, transformers-style fp8) or the
libraries' packing loops (GPTQ/AWQ: tests/ww_spectral/test_quant_gptq_awq.py). The tests check that:
- each quantised layer is ONE analysed row (quant_format, logical shape), its parts skipped "quant_part";
- the matrix the analysis reads equals the library's own dequantisation (float32 round-off: exactly);
- the quantised copy's alphas stay close to the original's: median |delta alpha| per format (printed with
  `pytest -s`, bounded here; the README figures come from this test);
- `ww-spectral analyze model.gguf` works, and a hub repo holding GGUF files is read through the loopback hub.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
F = pytest.importorskip("bitsandbytes.functional")
fp8_hf = pytest.importorskip("transformers.integrations.finegrained_fp8")
pytest.importorskip("compressed_tensors")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from support.hub_server import HubServer  # noqa: E402
from support.planted_models import heavy_tailed  # noqa: E402
from test_gguf_reader import HOSTILE, write_gguf  # noqa: E402
from test_quant_bnb import state_dict_4bit  # noqa: E402
from test_quant_compressed import QArgs, compress, compress_fp4  # noqa: E402
from test_quant_fp8 import quantise as fp8_quantise  # noqa: E402
from test_quant_gptq_awq import AWQ_ORDER, gptq_tensors, pack_cols, ref_awq, ref_gptq, rtn  # noqa: E402

from pipelines.cli import main  # noqa: E402
from ww_spectral import hub_source  # noqa: E402
from ww_spectral.analysis import analyze_model  # noqa: E402
from ww_spectral.checkpoint import open_checkpoint  # noqa: E402
from ww_spectral.errors import CheckpointError, OptionError  # noqa: E402
from ww_spectral.layer_read import read_layer  # noqa: E402
from ww_spectral.layout import select_weight_files  # noqa: E402
from ww_spectral.model import plan_model  # noqa: E402
from ww_spectral.readers import gguf as gguf_reader  # noqa: E402

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

HIDDEN, INTER, BLOCKS = 256, 512, 4
MODULES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "mlp.up_proj": (INTER, HIDDEN), "mlp.down_proj": (HIDDEN, INTER)}
GGUF_NAMES = {"self_attn.q_proj": "attn_q", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN,
          "intermediate_size": INTER}
ALPHAS = (2.5, 3.0, 3.5, 4.0, 4.5, 5.0)


def original_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """prefix -> float32 (out, in): 4 blocks of q/up/down with planted tail exponents 2.5 .. 5."""
    rng = np.random.default_rng(seed)
    out, k = {}, 0
    for b in range(BLOCKS):
        for mod, (o, i) in MODULES.items():
            out[f"model.layers.{b}.{mod}"] = heavy_tailed(rng, o, i, alpha=ALPHAS[k % len(ALPHAS)]) * 0.05
            k += 1
    return out


WEIGHTS = original_weights()


# --- one writer per format: (stored tensors, library dequantisation per stored primary, quantization_config)
def _fp8(dtype, block):
    def write(prefix, w):
        q, scale = fp8_quantise(torch.from_numpy(w), dtype, block, per_channel=block is None)
        key = "weight_scale_inv" if block else "weight_scale"
        ref = fp8_hf._dequantize_fp8_weight(q, scale, list(block) if block else None, torch.float32)
        stored = {f"{prefix}.weight": q, f"{prefix}.{key}": scale.float(), f"{prefix}.input_scale": torch.ones(1)}
        return stored, f"{prefix}.weight", ref.numpy()  # input_scale: an activation scale, a part of the layer
    return write


def _gptq(prefix, w):
    qweight, qzeros, scales, g_idx = gptq_tensors(w, 4, 64, act_order=True)
    ref = ref_gptq(qweight, qzeros, scales, g_idx, 4, True).float().numpy().T
    parts = {"qweight": qweight, "qzeros": qzeros, "scales": scales, "g_idx": g_idx}
    return {f"{prefix}.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in parts.items()}, \
        f"{prefix}.qweight", ref


def _awq(prefix, w):
    q, zeros, scales, _ = rtn(w, 4, 64)
    qweight, qzeros = pack_cols(q, 4, AWQ_ORDER), pack_cols(zeros, 4, AWQ_ORDER)
    ref = ref_awq(qweight, qzeros, scales, 64).float().numpy().T
    parts = {"qweight": qweight, "qzeros": qzeros, "scales": scales}
    return {f"{prefix}.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in parts.items()}, \
        f"{prefix}.qweight", ref


def _bnb_int8(prefix, w):
    cb, scb, _ = F.int8_vectorwise_quant(torch.from_numpy(w).half())
    return {f"{prefix}.weight": cb, f"{prefix}.SCB": scb, f"{prefix}.weight_format": torch.tensor(0, dtype=torch.uint8)}, \
        f"{prefix}.weight", F.int8_vectorwise_dequant(cb, scb).numpy()


def _bnb4(kind):
    def write(prefix, w):
        sd, ref = state_dict_4bit(prefix, torch.from_numpy(w), quant_type=kind, nested=True)
        return sd, f"{prefix}.weight", ref.float().numpy()
    return write


def _ct(fmt, args):
    def write(prefix, w):
        packed, ref = compress(fmt, QArgs(**args), torch.from_numpy(w).bfloat16())
        primary = "weight_packed" if "weight_packed" in packed else "weight"
        return {f"{prefix}.{k}": v for k, v in packed.items()}, f"{prefix}.{primary}", ref.float().numpy()
    return write


def _ct_fp4(fmt):
    def write(prefix, w):
        packed, ref, _ = compress_fp4(torch.from_numpy(w).bfloat16(), fmt)
        return {f"{prefix}.{k}": v for k, v in packed.items()}, f"{prefix}.weight_packed", ref.float().numpy()
    return write


def _ct_config(fmt, args):
    return {"quant_method": "compressed-tensors", "format": fmt,
            "config_groups": {"group_0": {"targets": ["Linear"], "format": fmt, "weights": args}}}


CT_PACK = dict(num_bits=4, type="int", strategy="group", group_size=32, symmetric=False)
CT_FP8 = dict(num_bits=8, type="float", strategy="channel", symmetric=True)

# format -> (writer, quantization_config, bound on the median |delta alpha| over the 12 layers)
SAFETENSORS_FORMATS = {
    "fp8_e4m3": (_fp8(torch.float8_e4m3fn, (128, 128)), {"quant_method": "fp8", "weight_block_size": [128, 128]}, 0.1),
    "fp8_e5m2": (_fp8(torch.float8_e5m2, None), {}, 0.2),
    "gptq_int4": (_gptq, {"quant_method": "gptq", "bits": 4, "group_size": 64, "desc_act": True}, 0.3),
    "awq_int4": (_awq, {"quant_method": "awq", "bits": 4, "group_size": 64, "version": "gemm"}, 0.25),
    "bnb_int8": (_bnb_int8, {"quant_method": "bitsandbytes", "load_in_8bit": True}, 0.03),
    "bnb_nf4": (_bnb4("nf4"), {"quant_method": "bitsandbytes", "load_in_4bit": True}, 0.25),
    "bnb_fp4": (_bnb4("fp4"), {"quant_method": "bitsandbytes", "load_in_4bit": True}, 0.25),
    "ct_pack_quantized": (_ct("pack-quantized", CT_PACK), _ct_config("pack-quantized", CT_PACK), 0.2),
    "ct_float_quantized": (_ct("float-quantized", CT_FP8), _ct_config("float-quantized", CT_FP8), 0.1),
    **{f"ct_{fmt.replace('-', '_')}": (_ct_fp4(fmt), {"quant_method": "compressed-tensors", "format": fmt}, 0.3)
       for fmt in ("nvfp4-pack-quantized", "mxfp4-pack-quantized")},
}
GGUF_FORMATS = {"gguf_q8_0": (Q.Q8_0, 0.02), "gguf_q5_1": (Q.Q5_1, 0.15), "gguf_q4_0": (Q.Q4_0, 0.25)}


def write_original(folder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"{p}.weight": torch.from_numpy(w) for p, w in WEIGHTS.items()}
    tensors["model.norm.weight"] = torch.ones(HIDDEN)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(CONFIG))


def write_quantised(folder, fmt: str) -> dict[str, np.ndarray]:
    """A quantised copy of the original in `folder`; returns primary tensor name -> library dequantisation."""
    writer, qc, _ = SAFETENSORS_FORMATS[fmt]
    folder.mkdir(parents=True, exist_ok=True)
    tensors, refs = {"model.norm.weight": torch.ones(HIDDEN)}, {}
    for prefix, w in WEIGHTS.items():
        sd, primary, ref = writer(prefix, w)
        tensors.update(sd)
        refs[primary] = ref
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(dict(CONFIG, quantization_config=qc) if qc else CONFIG))
    return refs


def gguf_name(prefix: str) -> str:
    parts = prefix.split(".")  # model.layers.B.<mod>
    return f"blk.{parts[2]}.{GGUF_NAMES['.'.join(parts[3:])]}.weight"


def write_gguf_copy(path, qtype) -> None:
    tensors = {gguf_name(p): (w, qtype) for p, w in WEIGHTS.items()}
    tensors["output_norm.weight"] = (np.ones(HIDDEN, np.float32), Q.F32)
    write_gguf(path, tensors)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    folder = tmp_path_factory.mktemp("original")
    write_original(folder)
    rows = analyze_model(str(folder), workers=1).layers
    return folder, rows[rows.status == "success"].set_index("longname")


def _median_delta(rows: pd.DataFrame, base: pd.DataFrame) -> float:
    ok = rows[rows.status == "success"].set_index("longname")
    assert sorted(ok.index) == sorted(base.index)  # every layer of the original, once
    return float(np.median(np.abs(ok.loc[base.index, "alpha"].to_numpy() - base["alpha"].to_numpy())))


@pytest.mark.parametrize("fmt", list(SAFETENSORS_FORMATS))
def test_quantised_safetensors_analysed_like_the_library_dequantises(tmp_path, original, fmt):
    refs = write_quantised(tmp_path / fmt, fmt)
    with open_checkpoint(str(tmp_path / fmt)) as ckpt:
        plan = plan_model(ckpt)
        deq = [p for p in plan.layers if p.read_kind == "dequant"]
        assert sorted(p.tensor_name for p in deq) == sorted(refs)
        for p in deq:
            assert p.analysed and p.quant_format == fmt and p.layer_type == "dense"
            assert p.shape == WEIGHTS[p.longname].shape and p.companions
            got = read_layer(ckpt, p, dtype=np.float32)
            np.testing.assert_array_equal(got, refs[p.tensor_name])  # the library's own numbers, bit for bit
        parts = [p for p in plan.layers if p.skip_code == "quant_part"]
        assert {c for p in deq for c in p.companions} == {p.tensor_name for p in parts}
        assert all(p.quant_format == fmt and "part of quantised layer" in p.skip_reason for p in parts)
    rows = analyze_model(str(tmp_path / fmt), workers=1).layers
    assert set(rows.loc[rows.status == "success", "quant_format"]) == {fmt}
    assert (rows.loc[rows.fit_status == "quant_part", "status"] == "skipped").all()
    delta = _median_delta(rows, original[1])
    print(f"\n{fmt}: median |delta alpha| = {delta:.4f} over {len(original[1])} layers")
    assert delta < SAFETENSORS_FORMATS[fmt][2]


@pytest.mark.parametrize("fmt", list(GGUF_FORMATS))
def test_gguf_copy_analysed_with_hf_names_and_close_alphas(tmp_path, original, fmt):
    qtype, bound = GGUF_FORMATS[fmt]
    path = tmp_path / "model.gguf"
    write_gguf_copy(path, qtype)
    reader = gguf.GGUFReader(str(path))
    with open_checkpoint(str(path)) as ckpt:
        assert ckpt.ref.kind == "gguf"
        plans = {p.tensor_name: p for p in plan_model(ckpt).layers}
        for t in reader.tensors:
            p = plans[t.name]
            if len(t.shape) == 1:
                assert not p.analysed
                continue
            assert p.read_kind == "dequant" and p.quant_format == fmt and p.longname in WEIGHTS
            expected = gguf.quants.dequantize(t.data, t.tensor_type).reshape(p.shape)
            np.testing.assert_array_equal(read_layer(ckpt, p), expected.astype(np.float32))
    rows = analyze_model(str(path), workers=1).layers
    ok = rows[rows.status == "success"]
    assert set(ok.quant_format) == {fmt} and ok.tensor_name.str.startswith("blk.").all()
    delta = _median_delta(rows, original[1])
    print(f"\n{fmt}: median |delta alpha| = {delta:.4f} over {len(original[1])} layers")
    assert delta < bound


def test_unsupported_and_inconsistent_quantised_layers_are_rows_with_reasons(tmp_path):
    w = WEIGHTS["model.layers.0.mlp.up_proj"]
    sd, _, _ = _awq("model.layers.0.mlp.up_proj", w)
    bad, _, _ = _gptq("model.layers.1.mlp.up_proj", w)
    bad["model.layers.1.mlp.up_proj.qzeros"] = bad["model.layers.1.mlp.up_proj.qzeros"][:, :3].contiguous()
    folder = tmp_path / "m"
    folder.mkdir()
    save_file({**sd, **bad, "model.layers.2.mlp.up_proj.weight": torch.from_numpy(w)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "awq", "version": "gemv"}}))
    rows = analyze_model(str(folder), workers=1).layers.set_index("tensor_name")
    gemv = rows.loc["model.layers.0.mlp.up_proj.qweight"]
    assert gemv.status == "skipped" and gemv.fit_status == "unsupported_quant" and "awq" in gemv.skip_reason
    assert "gemv" in gemv.skip_reason and "\n" not in gemv.skip_reason
    broken = rows.loc["model.layers.1.mlp.up_proj.qweight"]  # quant_method awq + g_idx: told apart by shape
    assert broken.status in ("failed", "skipped") and broken.skip_reason and "\n" not in broken.skip_reason
    assert rows.loc["model.layers.2.mlp.up_proj.weight", "status"] == "success"


def test_gguf_repo_picks_one_file_and_the_user_can_pick_another():
    names = ["m-Q4_K_M.gguf", "m-Q8_0.gguf", "mmproj-f16.gguf", "README.md", "x-00002-of-00002.gguf",
             "x-00001-of-00002.gguf"]
    assert select_weight_files(names).files == ("m-Q8_0.gguf",)
    assert select_weight_files(names, weight_file="m-Q4_K_M.gguf").files == ("m-Q4_K_M.gguf",)
    assert select_weight_files(names, weight_file="x-00002-of-00002.gguf").files == \
        ("x-00001-of-00002.gguf", "x-00002-of-00002.gguf")
    assert select_weight_files(["m.safetensors", "m-Q8_0.gguf"]).kind == "safetensors"
    with pytest.raises(OptionError, match="m-Q2_K.gguf"):
        select_weight_files(names, weight_file="m-Q2_K.gguf")


def test_cli_analyze_gguf(tmp_path):
    path = tmp_path / "tiny-Q8_0.gguf"
    write_gguf_copy(path, Q.Q8_0)
    out = tmp_path / "rows.csv"
    assert main(["analyze", str(path), "--out", str(out), "--no-progress"]) == 0
    rows = pd.read_csv(out, keep_default_na=False)
    ok = rows[rows.status == "success"]
    assert len(ok) == len(WEIGHTS) and set(ok.quant_format) == {"gguf_q8_0"}


def test_hub_repo_holding_gguf_files(tmp_path):
    folder = tmp_path / "repo"
    folder.mkdir()
    write_gguf_copy(folder / "tiny-Q4_0.gguf", Q.Q4_0)
    write_gguf_copy(folder / "tiny-Q8_0.gguf", Q.Q8_0)
    server = HubServer().start()
    try:
        server.add_repo("org/tiny-GGUF", folder)
        cache = str(tmp_path / "cache")
        rows = analyze_model("org/tiny-GGUF", endpoint=server.endpoint, cache_dir=cache, workers=1).layers
        assert set(rows.loc[rows.status == "success", "quant_format"]) == {"gguf_q8_0"}  # the higher precision
        with open_checkpoint("org/tiny-GGUF", endpoint=server.endpoint, cache_dir=cache,
                             weight_file="tiny-Q4_0.gguf") as ckpt:
            assert [os.path.basename(f) for f in ckpt.ref.files] == ["tiny-Q4_0.gguf"]
            assert {p.quant_format for p in plan_model(ckpt).analysed} == {"gguf_q4_0"}
    finally:
        server.stop()


def test_quantised_repo_read_by_http_range_equals_the_local_read(tmp_path):
    refs = write_quantised(tmp_path / "gptq", "gptq_int4")
    server = HubServer().start()
    try:
        server.add_repo("org/tiny-GPTQ", tmp_path / "gptq")
        with hub_source.open_remote_checkpoint("org/tiny-GPTQ", endpoint=server.endpoint) as remote:
            deq = [p for p in plan_model(remote).layers if p.read_kind == "dequant"]
            assert len(deq) == len(refs) and all(p.quant_format == "gptq_int4" for p in deq)
            before = len(server.requests)
            np.testing.assert_array_equal(read_layer(remote, deq[0]), refs[deq[0].tensor_name])
            assert len(server.requests) - before == 1 + len(deq[0].companions)  # one Range read per stored part
    finally:
        server.stop()


def test_expert_slabs_are_read_alone(tmp_path):
    rng = np.random.default_rng(5)
    stack = rng.standard_normal((4, 64, 128)).astype(np.float32)
    write_gguf(tmp_path / "moe.gguf", {"blk.0.ffn_up_exps.weight": (stack, Q.Q8_0)})
    save_file({"model.layers.0.mlp.experts.up_proj": torch.from_numpy(stack).bfloat16()},
              str(tmp_path / "moe.safetensors"))
    for path, name in ((tmp_path / "moe.gguf", "blk.0.ffn_up_exps.weight"),
                       (tmp_path / "moe.safetensors", "model.layers.0.mlp.experts.up_proj")):
        with open_checkpoint(str(path)) as ckpt:
            whole = ckpt.read(name)
            np.testing.assert_array_equal(ckpt.read_rows(name, 1, 3), whole[1:3])
            assert ckpt.read_rows(name, 2, 3, dtype=np.float64).shape == (1, 64, 128)
            with pytest.raises(IndexError):
                ckpt.read_rows(name, 3, 5)


def test_quantised_expert_stack_not_dequantised_is_one_row_naming_the_format(tmp_path):
    q = torch.zeros(4, 64, 128, dtype=torch.float8_e4m3fn)
    save_file({"model.layers.0.mlp.experts.up_proj.weight": q,
               "model.layers.0.mlp.experts.up_proj.weight_scale": torch.ones(4, 64, 1),
               "model.layers.0.self_attn.q_proj.weight": torch.from_numpy(WEIGHTS["model.layers.0.self_attn.q_proj"])},
              str(tmp_path / "model.safetensors"))
    rows = analyze_model(str(tmp_path / "model.safetensors"), workers=1).layers
    stack = rows[rows.tensor_name == "model.layers.0.mlp.experts.up_proj.weight"]
    assert len(stack) == 1 and stack.iloc[0].fit_status == "unsupported_quant"
    assert "fp8" in stack.iloc[0].skip_reason and stack.iloc[0].quant_format == "fp8_e4m3"


def test_damaged_gguf_is_one_typed_line(tmp_path, capsys):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (2 ** 40).to_bytes(8, "little") + b"\0" * 64)
    with pytest.raises(CheckpointError, match="broken.gguf"):
        analyze_model(str(path))
    assert main(["analyze", str(path), "--no-progress"]) != 0
    err = capsys.readouterr().err.strip()
    assert "broken.gguf" in err and len(err.splitlines()) == 1


HOSTILE_CONFIGS = [
    {"quant_method": "gptq", "bits": "four", "group_size": [64]},
    {"quant_method": "gptq", "bits": True, "checkpoint_format": "evil\nformat"},
    {"quant_method": "gptq", "bits": 10 ** 30, "group_size": -(10 ** 30)},
    {"quant_method": "awq", "version": ["gemm"], "w_bit": {"a": 1}},
    {"quant_method": "compressed-tensors", "format": "x" * 100_000,
     "config_groups": {"g": {"format": ["pack-quantized"], "weights": {"num_bits": "4", "block_structure": [0, -1]}}}},
    {"quant_method": "fp8", "weight_block_size": ["a", None]},
    ["not", "an", "object"],
]


@pytest.mark.parametrize("qc", HOSTILE_CONFIGS, ids=range(len(HOSTILE_CONFIGS)))
def test_hostile_quantization_config_never_crashes_the_plan(tmp_path, qc):
    sd, _, _ = _gptq("model.layers.0.mlp.up_proj", WEIGHTS["model.layers.0.mlp.up_proj"])
    q, scale = fp8_quantise(torch.from_numpy(WEIGHTS["model.layers.0.self_attn.q_proj"]), torch.float8_e4m3fn,
                            (128, 128))
    sd.update({"model.layers.0.self_attn.q_proj.weight": q, "model.layers.0.self_attn.q_proj.weight_scale_inv": scale})
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": qc}))
    rows = analyze_model(str(tmp_path), workers=1).layers
    assert len(rows) == len(sd)
    for _, row in rows.iterrows():
        assert "\n" not in row.skip_reason and len(row.skip_reason) < 1000 and len(row.quant_format) <= 70


def test_hub_gguf_repo_read_by_http_range(tmp_path):
    folder = tmp_path / "repo"
    folder.mkdir()
    write_gguf_copy(folder / "tiny-Q5_1.gguf", Q.Q5_1)
    server = HubServer().start()
    try:
        server.add_repo("org/tiny-GGUF", folder)
        local = open_checkpoint(str(folder / "tiny-Q5_1.gguf"))
        with hub_source.open_remote_checkpoint("org/tiny-GGUF", endpoint=server.endpoint) as remote, local:
            assert remote.ref.kind == "gguf"
            plans = plan_model(remote).analysed
            assert [p.tensor_name for p in plans] == [p.tensor_name for p in plan_model(local).analysed]
            before = len(server.requests)
            np.testing.assert_array_equal(read_layer(remote, plans[0]), read_layer(local, plans[0]))
            assert len(server.requests) - before == 1  # exactly that tensor's bytes
    finally:
        server.stop()


def _bytes_fetch(data: bytes, calls: list):
    def fetch(start: int, end: int) -> tuple[bytes, int]:
        calls.append((start, end))
        return data[start:end], len(data)
    return fetch


def test_gguf_range_reader_grows_its_header_read_and_refuses_damage(tmp_path, monkeypatch):
    path = tmp_path / "m.gguf"
    write_gguf_copy(path, Q.Q8_0)
    data = path.read_bytes()
    monkeypatch.setattr(gguf_reader, "REMOTE_HEADER_FIRST", 64)  # the header needs several growing reads
    calls: list = []
    remote = gguf_reader.GGUFRangeReader("m.gguf", _bytes_fetch(data, calls))
    local = gguf_reader.GGUFReader(path)
    assert 1 < len(calls) <= 6 and remote.tensors() == [dataclasses.replace(i, file="m.gguf") for i in local.tensors()]
    name = remote.tensors()[0].name
    np.testing.assert_array_equal(remote.read(name), local.read(name))
    local.close()
    for label, blob in HOSTILE.items():
        calls = []
        with pytest.raises(CheckpointError):
            gguf_reader.GGUFRangeReader(label, _bytes_fetch(blob, calls))
        assert len(calls) <= 6, label


def test_gguf_quantised_expert_stack_gives_one_dequantised_row_per_expert(tmp_path):
    """A Q8_0 stack [E, out, in] is planned per expert (quant_format kept) and each row equals the analysis of
    that expert's dequantised matrix on its own."""
    rng = np.random.default_rng(7)
    stack = (rng.standard_t(3, size=(3, 64, 128))).astype(np.float32)
    path = tmp_path / "moe-Q8_0.gguf"
    write_gguf(path, {"blk.0.ffn_up_exps.weight": (stack, Q.Q8_0)})
    with open_checkpoint(str(path)) as ckpt:
        deq = ckpt.read("blk.0.ffn_up_exps.weight")  # the gguf package's dequantisation of the whole stack
    rows = analyze_model(str(path), workers=1).layers
    experts = rows[rows.status == "success"]
    assert experts["expert"].tolist() == [0, 1, 2] and set(experts.quant_format) == {"gguf_q8_0"}
    for e in range(3):
        alone = analyze_model({"w": deq[e]}, workers=1).layers.iloc[0]
        got = experts[experts.expert == e].iloc[0]
        assert got["alpha"] == pytest.approx(alone["alpha"], rel=1e-9)
        assert got["lambda_max"] == pytest.approx(alone["lambda_max"], rel=1e-9)


def test_cli_weight_file_picks_the_gguf_to_read(tmp_path):
    write_gguf_copy(tmp_path / "tiny-Q4_0.gguf", Q.Q4_0)
    write_gguf_copy(tmp_path / "tiny-Q8_0.gguf", Q.Q8_0)
    for flag, fmt in (([], "gguf_q8_0"), (["--weight-file", "tiny-Q4_0.gguf"], "gguf_q4_0")):
        out = tmp_path / f"rows{len(flag)}.csv"
        assert main(["analyze", str(tmp_path), "--out", str(out), "--no-progress", *flag]) == 0
        rows = pd.read_csv(out, keep_default_na=False)
        assert set(rows.loc[rows.status == "success", "quant_format"]) == {fmt}
