"""Depth order and roles of every model's rows (ww_spectral/model.py depth_order, roles.py), and any
nn.Module accepted in Python (readers/mapping.py is_torch_module).

The checkpoint has 12 blocks: a header in alphabetical order stores layers.10 and layers.11 before
layers.2, which used to number (and plot, and profile) them in that order.
"""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file
from support.catalog_data import prov

from catalogs import catalog
from catalogs.store import ResultStore
from ww_spectral import analysis, plots
from ww_spectral.compat import WeightWatcher
from ww_spectral.readers.mapping import is_torch_module
from ww_spectral.roles import depth_key

BLOCKS = 12


def _tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {"model.embed_tokens.weight": rng.standard_normal((40, 16)).astype(np.float32),
           "lm_head.weight": rng.standard_normal((40, 16)).astype(np.float32),
           "model.norm.weight": np.ones(16, np.float32)}
    for b in range(BLOCKS):
        out[f"model.layers.{b}.self_attn.q_proj.weight"] = rng.standard_normal((16, 16)).astype(np.float32)
        out[f"model.layers.{b}.mlp.down_proj.weight"] = rng.standard_normal((16, 32)).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def twelve_blocks(tmp_path_factory):
    path = tmp_path_factory.mktemp("depth") / "model.safetensors"
    save_file(_tensors(), str(path))
    return path, analysis.analyze_model(str(path), threads=1)


def _blocks_in_row_order(frame) -> list[int]:
    seen: list[int] = []
    for name in frame["tensor_name"]:
        if ".layers." in name:
            b = int(name.split(".layers.")[1].split(".")[0])
            if b not in seen:
                seen.append(b)
    return seen


def test_rows_are_numbered_in_depth_order_with_roles(twelve_blocks):
    path, result = twelve_blocks
    layers = result.layers
    from ww_spectral.checkpoint import open_checkpoint

    with open_checkpoint(str(path)) as ck:
        stored = [t.name for t in ck.tensors()]
    # the file itself is in alphabetical order: block 10 before block 2 (what the old numbering followed)
    assert stored.index("model.layers.10.mlp.down_proj.weight") < stored.index("model.layers.2.mlp.down_proj.weight")
    assert layers["layer_id"].tolist() == list(range(len(layers)))
    assert _blocks_in_row_order(layers) == list(range(BLOCKS))
    names = layers["tensor_name"].tolist()
    assert names[0] == "model.embed_tokens.weight" and names[-1] == "lm_head.weight"
    rows = layers.set_index("tensor_name")
    q = rows.loc["model.layers.10.self_attn.q_proj.weight"]
    assert (q["block"], q["role"], q["role_group"], q["stack"]) == (10, "attn_q", "attention", "")
    d = rows.loc["model.layers.2.mlp.down_proj.weight"]
    assert (d["block"], d["role"], d["role_group"]) == (2, "mlp_down", "mlp")
    assert rows.loc["lm_head.weight", "role"] == "lm_head" and pd_isna(rows.loc["lm_head.weight", "block"])
    assert rows.loc["model.norm.weight", "role"] == "norm"  # skipped rows carry their placement too


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def test_depth_profile_view_and_plot_data_follow_the_blocks(twelve_blocks, tmp_path):
    path, result = twelve_blocks
    store = ResultStore(tmp_path / "store")
    store.write_model(model=result.model_record(source_kind="local"), layers=result.layers,
                      provenance=prov("org/twelve"))
    con = catalog.connect(tmp_path / "store")
    try:
        _, rows = catalog.query(con, "SELECT tensor_name, block, role, depth_index FROM alpha_depth_profile "
                                     "WHERE repo_id = 'org/twelve' ORDER BY depth_index")
    finally:
        con.close()
    blocks = [r[1] for r in rows if r[1] is not None]
    assert blocks == sorted(blocks) and set(blocks) == set(range(BLOCKS))
    assert rows[0][0] == "model.embed_tokens.weight" and rows[-1][0] == "lm_head.weight"
    # the alpha-by-depth plot draws depth_table's rows, in this order; plot_model's own table likewise
    assert _blocks_in_row_order(plots.depth_table(result.layers)) == list(range(BLOCKS))
    esds = analysis.layer_esds(str(path))
    assert _blocks_in_row_order({"tensor_name": [e.plan.tensor_name for e in esds.values()]}) == list(range(BLOCKS))
    out = plots.plot_model(str(path), out_dir=tmp_path / "png", layer="model.layers.2.mlp.down_proj")
    assert out["alpha_depth"].stat().st_size > 0


def test_same_layer_ids_from_a_file_a_shuffled_mapping_and_a_module(twelve_blocks):
    torch = pytest.importorskip("torch")
    _, result = twelve_blocks
    tensors = _tensors()
    names = list(tensors)
    np.random.default_rng(5).shuffle(names)
    shuffled = analysis.analyze({n: tensors[n] for n in names}, threads=1)
    expected = result.layers[result.layers["status"] != "skipped"]
    assert shuffled["tensor_name"].tolist() == expected["tensor_name"].tolist()
    assert shuffled["layer_id"].tolist() == expected["layer_id"].tolist()
    np.testing.assert_allclose(shuffled["alpha"].to_numpy(float), expected["alpha"].to_numpy(float), rtol=1e-6)
    assert torch is not None


def test_depth_key_orders_families():
    names = ["lm_head.weight", "decoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight",
             "encoder.block.10.layer.0.SelfAttention.q.weight", "encoder.block.2.layer.0.SelfAttention.q.weight",
             "fc.weight", "layer2.0.conv1.weight", "layer1.1.conv1.weight", "conv1.weight",
             "classifier.0.weight", "features.10.weight", "features.2.weight"]
    assert sorted(names, key=depth_key) == [
        "shared.weight", "encoder.block.2.layer.0.SelfAttention.q.weight",
        "encoder.block.10.layer.0.SelfAttention.q.weight", "conv1.weight", "features.2.weight",
        "features.10.weight", "layer1.1.conv1.weight", "layer2.0.conv1.weight",
        "decoder.block.0.layer.0.SelfAttention.q.weight", "classifier.0.weight", "fc.weight", "lm_head.weight"]


# ---------------------------------------------------------------- any nn.Module


def _user_model(torch):
    class TinyNet(torch.nn.Module):  # the user's own class, defined outside torch
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.embed = torch.nn.Embedding(40, 16)
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(16, 16) for _ in range(BLOCKS))
            self.head = torch.nn.Linear(16, 40, bias=False)

        def forward(self, x):
            h = self.embed(x)
            for b in self.blocks:
                h = torch.relu(b(h))
            return self.head(h)

    return TinyNet()


def test_a_module_of_the_users_own_class_is_analysed_from_its_state_dict():
    torch = pytest.importorskip("torch")
    model = _user_model(torch)
    assert type(model).__module__ == __name__ and is_torch_module(model)
    assert not is_torch_module({"a": 1}) and not is_torch_module(torch.zeros(2))
    result = analysis.analyze_model(model, threads=1)
    layers = result.layers[result.layers["status"] == "success"]
    assert _blocks_in_row_order_generic(layers, "blocks.") == list(range(BLOCKS))
    direct = analysis.analyze({k: v.detach().numpy() for k, v in model.state_dict().items()}, threads=1)
    np.testing.assert_allclose(layers["alpha"].to_numpy(float), direct["alpha"].to_numpy(float), rtol=1e-6)
    assert result.ref.kind == "module" and result.ref.repo_id == "TinyNet"
    details = WeightWatcher(model=model).analyze()
    # WeightWatcher numbers a module's layers by named_modules() position: embed 1, blocks 3..14, head 15
    assert details["layer_id"].tolist() == [1, *range(3, 3 + BLOCKS), 3 + BLOCKS]


def _blocks_in_row_order_generic(frame, marker: str) -> list[int]:
    seen: list[int] = []
    for name in frame["tensor_name"]:
        if name.startswith(marker):
            b = int(name[len(marker):].split(".")[0])
            if b not in seen:
                seen.append(b)
    return seen


def test_a_transformers_model_object_is_analysed():
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=11,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(config)  # built from a config: nothing downloaded
    assert type(model).__module__.startswith("transformers.")
    layers = analysis.analyze(model, threads=1)
    assert _blocks_in_row_order(layers) == list(range(11))
    assert set(layers["role"]) >= {"attn_q", "attn_k", "attn_v", "attn_o", "mlp_up", "mlp_gate", "mlp_down",
                                   "embedding", "lm_head"}
    details = WeightWatcher(model).analyze()
    assert len(details) == len(layers) and details["layer_id"].is_monotonic_increasing


def test_hostile_names_are_ordered_without_crashing():
    """A name is untrusted text: a digit run too long for int() (5000 digits) or a non-ASCII digit ('²')
    neither crashes the plan nor counts as a block index."""
    rng = np.random.default_rng(3)
    huge = "layers." + "7" * 5000 + ".q_proj.weight"
    tensors = {huge: rng.standard_normal((16, 16)), "layers.².q_proj.weight": rng.standard_normal((16, 16)),
               "layers.3.q_proj.weight": rng.standard_normal((16, 16))}
    layers = analysis.analyze(tensors, threads=1)
    assert layers["tensor_name"].tolist() == ["layers.3.q_proj.weight", huge, "layers.².q_proj.weight"]
    assert layers["block"].tolist()[0] == 3 and pd_isna(layers["block"].tolist()[1])
    assert pd_isna(layers["block"].tolist()[2])
