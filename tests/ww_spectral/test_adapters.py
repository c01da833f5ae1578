"""LoRA adapters saved by `peft` itself from a tiny torch model: the update's r eigenvalues equal a dense
computation of peft's own delta weight, the merged weight equals peft's merge, patterns and rsLoRA scale
as peft does, DoRA and other PEFT types are skipped with a reason."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
from safetensors.numpy import load_file  # noqa: E402

from ww_spectral.adapters import (  # noqa: E402
    delta_eigenvalues,
    delta_weight,
    find_lora_layers,
    merged_weight,
    parse_adapter_config,
)
from ww_spectral.errors import CheckpointError  # noqa: E402
from ww_spectral.records import TensorInfo  # noqa: E402


class Block(torch.nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.q_proj = torch.nn.Linear(d, d, bias=False)
        self.v_proj = torch.nn.Linear(d, d // 2, bias=False)
        self.up_proj = torch.nn.Linear(d, h, bias=False)


class Tiny(torch.nn.Module):
    def __init__(self, d: int = 48, h: int = 96, blocks: int = 12) -> None:
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(64, d)
        self.layers = torch.nn.ModuleList(Block(d, h) for _ in range(blocks))


def save_adapter(tmp_path, **lora_kw):
    """(adapter folder, the peft model) of a LoRA with random B (peft initialises B to zero)."""
    torch.manual_seed(0)
    base = Tiny()
    base_state = {k: v.detach().clone() for k, v in base.state_dict().items()}
    cfg = peft.LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "up_proj"]} | lora_kw)
    model = peft.get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)
    model.save_pretrained(str(tmp_path))
    return tmp_path, model, base_state


def infos_of(tensors: dict) -> list[TensorInfo]:
    return [TensorInfo(name=k, shape=tuple(v.shape), dtype="F32", file=None, nbytes=v.nbytes) for k, v in tensors.items()]


def load(folder):
    config = parse_adapter_config(json.loads((folder / "adapter_config.json").read_text()))
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    return config, tensors


def peft_delta(model, module: str) -> np.ndarray:
    layer = model.get_submodule(f"base_model.model.{module}")
    return layer.get_delta_weight("default").detach().numpy()


@pytest.mark.parametrize("lora_kw", [{}, {"use_rslora": True}, {"rank_pattern": {"up_proj": 8},
                                                                 "alpha_pattern": {"layers.3.q_proj": 2}}])
def test_update_spectrum_equals_dense_peft_delta(tmp_path, lora_kw):
    folder, model, _ = save_adapter(tmp_path, **lora_kw)
    config, tensors = load(folder)
    layers = find_lora_layers(infos_of(tensors), config)
    assert len(layers) == 36 and not any(la.skip_reason for la in layers)
    # natural order: block 2 before block 10
    blocks = [int(la.module.split(".")[1]) for la in layers]
    assert blocks == sorted(blocks)
    for la in layers:
        dense = peft_delta(model, la.module)
        assert la.shape == dense.shape
        ours = delta_weight(tensors[la.a_name], tensors[la.b_name], la.scaling)
        np.testing.assert_allclose(ours, dense, rtol=1e-5, atol=1e-6)
        ev = delta_eigenvalues(tensors[la.a_name], tensors[la.b_name], la.scaling)
        assert ev.shape == (la.r,)
        full = np.linalg.eigvalsh(dense.astype(np.float64).T @ dense.astype(np.float64))[-la.r:]
        np.testing.assert_allclose(ev, full, rtol=1e-6, atol=1e-9 * full.max())
    up3 = next(la for la in layers if la.module == "layers.3.up_proj")
    q3 = next(la for la in layers if la.module == "layers.3.q_proj")
    if "rank_pattern" in lora_kw:
        assert (up3.r, up3.scaling, q3.scaling) == (8, 1.0, 0.5)
    elif lora_kw.get("use_rslora"):
        assert q3.scaling == pytest.approx(8 / 2)


def test_merged_equals_peft_merge(tmp_path):
    folder, model, base_state = save_adapter(tmp_path)
    config, tensors = load(folder)
    merged_model = model.merge_and_unload()
    for la in find_lora_layers(infos_of(tensors), config):
        ours = merged_weight(base_state[la.base_tensor].numpy(), tensors[la.a_name], tensors[la.b_name], la.scaling)
        theirs = merged_model.get_submodule(la.module).weight.detach().numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointError, match="different base"):
        merged_weight(np.zeros((3, 3)), tensors[la.a_name], tensors[la.b_name], la.scaling)


def test_embedding_adapter(tmp_path):
    folder, model, base_state = save_adapter(tmp_path, target_modules=["embed_tokens"])
    config, tensors = load(folder)
    (la,) = find_lora_layers(infos_of(tensors), config)
    dense = peft_delta(model, "embed_tokens")
    assert la.shape == dense.shape == (64, 48)
    np.testing.assert_allclose(delta_weight(tensors[la.a_name], tensors[la.b_name], la.scaling, embedding=True),
                               dense, rtol=1e-5, atol=1e-6)
    from safetensors.torch import save_file

    from ww_spectral.analysis import analyze_model

    base = tmp_path / "base.safetensors"
    save_file({k: v.contiguous() for k, v in base_state.items()}, str(base))
    rows = analyze_model(str(folder), base_model=str(base), min_evals=4).layers.set_index("delta_kind")
    ev = np.linalg.eigvalsh(dense.astype(np.float64).T @ dense.astype(np.float64))
    assert rows.loc["lora_update", "lambda_max"] == pytest.approx(ev[-1], rel=1e-5)
    merged = base_state["embed_tokens.weight"].numpy().astype(np.float64) + dense
    assert rows.loc["lora_merged", "norm"] == pytest.approx(np.sum(merged**2), rel=1e-5)


def test_dora_and_other_types_are_skipped_with_a_reason(tmp_path):
    folder, _, _ = save_adapter(tmp_path, use_dora=True)
    config, tensors = load(folder)
    layers = find_lora_layers(infos_of(tensors), config)
    assert layers and all("DoRA" in la.skip_reason for la in layers)
    ia3 = parse_adapter_config({"peft_type": "IA3", "target_modules": ["q_proj"]})
    assert "IA3" in ia3.skip_reason
    for bad in ({"peft_type": "LORA", "r": 0}, {"peft_type": "LORA", "r": 4, "lora_alpha": float("nan")},
                {"peft_type": "LORA", "r": 4, "rank_pattern": {"x" * 500: 2}}, []):
        with pytest.raises(CheckpointError):
            parse_adapter_config(bad)


def test_low_rank_spectrum_is_cheaper_than_dense():
    """ΔW of a 4096 x 4096 layer at r = 16: the QR route never forms the 16M-entry product."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((16, 4096)), rng.standard_normal((4096, 16))
    ev = delta_eigenvalues(a, b, 2.0)
    assert ev.shape == (16,) and np.all(ev > 0)
    # cross-check against the r x r product of the Gram matrices (the textbook form)
    small = np.sort(np.linalg.eigvals(4.0 * (b.T @ b) @ (a @ a.T)).real)
    np.testing.assert_allclose(ev, small, rtol=1e-8)


# ---------------------------------------------------------------- adapters in the analysis (issue 11)


def _dense_evals(d: np.ndarray) -> np.ndarray:
    d = d.astype(np.float64)
    return np.linalg.eigvalsh(d.T @ d if d.shape[0] >= d.shape[1] else d @ d.T)


def test_adapter_folder_is_analysed_as_its_updates(tmp_path):
    from ww_spectral.analysis import analyze_model, layer_esds

    folder, model, _ = save_adapter(tmp_path, r=8, lora_alpha=16, rank_pattern={"up_proj": 12})
    result = analyze_model(str(folder))
    rows = result.layers
    assert not rows["tensor_name"].str.contains("lora_").any()  # never a rank-r row of a factor
    assert set(rows["delta_kind"]) == {"lora_update"} and (rows["status"] == "success").all()
    assert len(rows) == 36 and rows["base_ref"].eq("").all()
    assert list(rows["block"].iloc[:3]) == [0, 0, 0] and rows["block"].is_monotonic_increasing
    esds = layer_esds(str(folder))
    for _, row in rows.iterrows():
        module = row["tensor_name"].removesuffix(".weight")
        dense = peft_delta(model, module)  # peft's own (lora_alpha / r) B A
        r = 12 if module.endswith("up_proj") else 8
        ev = _dense_evals(dense)[-r:]
        assert (row["N"], row["M"], row["num_evals"]) == (max(dense.shape), min(dense.shape), r)
        assert row["lambda_max"] == pytest.approx(ev[-1], rel=1e-5)
        assert row["norm"] == pytest.approx(ev.sum(), rel=1e-5)
        np.testing.assert_allclose(esds[row["longname"]].evals, ev, rtol=1e-4, atol=1e-6 * ev[-1])
    # the summary is of the model's own weights: an adapter alone has none; its updates are delta rows
    from ww_spectral.deltas import delta_summary

    assert result.summary["n_layers_analysed"] == 0
    assert delta_summary(rows)["n_delta_fitted"] == 36 and delta_summary(rows)["base_ref"] == ""


def test_adapter_with_its_base_adds_merged_rows(tmp_path):
    from safetensors.torch import save_file

    from ww_spectral.analysis import analyze_model

    folder, model, base_state = save_adapter(tmp_path / "adapter", r=8, lora_alpha=16)
    base = tmp_path / "base.safetensors"
    save_file({k: v.contiguous() for k, v in base_state.items()}, str(base))
    merged = model.merge_and_unload()
    rows = analyze_model(str(folder), base_model=str(base)).layers
    upd, mrg = rows[rows["delta_kind"] == "lora_update"], rows[rows["delta_kind"] == "lora_merged"]
    assert len(upd) == len(mrg) == 36 and (mrg["status"] == "success").all()
    assert mrg["base_ref"].str.startswith("base@local-").all() and upd["base_ref"].eq("").all()
    for _, row in mrg.iterrows():
        w = merged.get_submodule(row["longname"]).weight.detach().numpy()
        ev = _dense_evals(w)
        assert row["shape"] == "x".join(map(str, w.shape)) and row["num_evals"] == min(w.shape)
        assert row["lambda_max"] == pytest.approx(ev[-1], rel=1e-5)
        assert row["norm"] == pytest.approx(ev.sum(), rel=1e-5)


def test_adapter_skips_say_why(tmp_path):
    import shutil

    from ww_spectral.analysis import analyze_model
    from ww_spectral.errors import NoAnalysableLayerError

    folder, _, _ = save_adapter(tmp_path / "dora", r=8, use_dora=True)
    with pytest.raises(NoAnalysableLayerError, match="unsupported_adapter"):
        analyze_model(str(folder))
    small, _, _ = save_adapter(tmp_path / "r4", r=4)
    with pytest.raises(NoAnalysableLayerError, match="size_filter"):
        analyze_model(str(small))  # 4 eigenvalues < min_evals
    rows = analyze_model(str(small), min_evals=4).layers
    assert (rows["num_evals"] == 4).all() and (rows["status"] == "success").all()
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(small / "adapter_model.safetensors", bare / "adapter_model.safetensors")
    with pytest.raises(NoAnalysableLayerError, match="unsupported_adapter"):
        analyze_model(str(bare), min_evals=4)  # no adapter_config.json: the scale is unknown


@pytest.mark.parity
@pytest.mark.slow
def test_updates_are_weightwatcher_peft_times_scale_squared(tmp_path):
    """WeightWatcher 0.7.7's analyze(peft=True) analyses B·A without lora_alpha / r: its eigenvalues are ours
    / scaling², so alpha (scale-free) agrees and lambda_max, norm differ by exactly scaling²."""
    from support.ww_oracle_options import frame, run_calls

    from ww_spectral.analysis import analyze_model

    folder, _, _ = save_adapter(tmp_path, r=8, lora_alpha=24)  # scaling 3: eigenvalues x 9
    (res,) = run_calls([{"model": {"safetensors": str(folder / "adapter_model.safetensors")},
                         "calls": [["analyze", {"peft": True}]]}])
    ww = frame(res[0])
    ww = ww[ww["peft"].astype(bool)].set_index("name")
    ours = analyze_model(str(folder)).layers.set_index("longname")
    assert len(ww) == len(ours) == 36
    worst = {"alpha": 0.0, "lambda_max": 0.0, "norm": 0.0}
    for name, w in ww.iterrows():
        o = ours.loc[name.removeprefix("base_model.model.").removesuffix(".lora_BA")]
        assert int(o["num_evals"]) == int(w["num_evals"]) == 8
        for c, factor in (("alpha", 1.0), ("lambda_max", 9.0), ("norm", 9.0)):
            rel = abs(o[c] - factor * w[c]) / abs(factor * w[c])
            worst[c] = max(worst[c], rel)
            assert rel <= 1e-5, (name, c, o[c], w[c])
    print(f"peft=True x scaling^2 parity ({len(ww)} layers): worst relative differences {worst}")


def test_hub_adapter_repo_is_analysed_as_its_updates_downloaded_or_by_range(tmp_path):
    """An adapter repo on the (loopback) hub reads like the folder: adapter_config.json travels with the ref,
    whether the weights are downloaded or read by HTTP Range."""
    from support.hub_server import HubServer

    from ww_spectral.analysis import analyze_model
    from ww_spectral.hub_source import open_remote_checkpoint
    from ww_spectral.model import plan_model

    folder, _, _ = save_adapter(tmp_path / "adapter", r=8, lora_alpha=16)
    local = analyze_model(str(folder)).layers
    server = HubServer().start()
    try:
        server.add_repo("org/tiny-lora", folder)
        hub_rows = analyze_model("org/tiny-lora", endpoint=server.endpoint, cache_dir=str(tmp_path / "cache")).layers
        with open_remote_checkpoint("org/tiny-lora", endpoint=server.endpoint) as remote:
            kinds = {p.read_kind for p in plan_model(remote).analysed}
    finally:
        server.stop()
    assert set(hub_rows["delta_kind"]) == {"lora_update"} and len(hub_rows) == len(local) == 36
    np.testing.assert_allclose(hub_rows["alpha"], local["alpha"], rtol=1e-12)
    assert kinds == {"lora_update"}
