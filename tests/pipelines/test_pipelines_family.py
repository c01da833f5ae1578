"""A hub family scanned end to end: a base, three fine-tunes, two PEFT adapters, an fp8 and a GGUF copy of a
fine-tune, and a byte-identical re-upload, served by the loopback hub (tests/support/hub_server.py) to the
real huggingface_hub client, analysed by the nightly scan on a real local Ray under a real Prefect API.

What it shows: every repo analysed or linked; the fine-tunes and adapters ranked within the base's family by
their update against the base (catalogs/family.py); the base's weights downloaded once on this (one-node)
cluster although four models read it; the re-upload not downloaded at all, stored as a link."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading

import ml_dtypes
import numpy as np
import pytest
from support.checkpoints import write_hf_model_folder, write_safetensors
from support.hub_server import HubServer
from support.planted_models import heavy_tailed

from catalogs import catalog
from catalogs.family import family_leaderboard
from catalogs.store import ResultStore
from pipelines import bases, duplicates
from pipelines.batch import make_batches
from pipelines.flows import nightly_scan
from pipelines.listing import WorkItem
from pipelines.settings import ScanSettings

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
BASE = "fam/base"
WIDTH = 64  # GGUF Q8_0 blocks are 32 wide
SHAPES = {f"model.layers.{j}.mlp.up_proj.weight": (WIDTH * (1 + j % 2), WIDTH) for j in range(3)}
FT_SCALE = {"fam/ft-1": 0.02, "fam/ft-2": 0.2, "fam/ft-3": 1.0}  # how strong each fine-tune's update is
MOE = "other/tiny-moe"


def _base() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {name: heavy_tailed(rng, *shape, alpha=3.0) for name, shape in SHAPES.items()}
    out["model.norm.weight"] = np.ones(WIDTH, np.float32)
    return out


def _fine_tune(base: dict, scale: float, seed: int) -> dict[str, np.ndarray]:
    """The base plus a planted update: a low-rank, heavy-tailed change whose size is `scale`."""
    rng = np.random.default_rng(seed)
    out = dict(base)
    for name, shape in SHAPES.items():
        update = heavy_tailed(rng, *shape, alpha=2.5)
        out[name] = (base[name] + scale * update / np.abs(update).max()).astype(np.float32)
    return out


def _adapter(folder, r: int, seed: int) -> None:
    """A PEFT LoRA adapter of the base's up_proj layers, as peft saves one."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, (out_dim, in_dim) in SHAPES.items():
        module = "base_model.model." + name.removesuffix(".weight")
        tensors[f"{module}.lora_A.weight"] = rng.normal(size=(r, in_dim)).astype(np.float32)
        tensors[f"{module}.lora_B.weight"] = (0.05 * rng.normal(size=(out_dim, r))).astype(np.float32)
    folder.mkdir(parents=True)
    write_safetensors(folder / "adapter_model.safetensors", tensors)
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": ["up_proj"],
        "base_model_name_or_path": BASE, "task_type": "CAUSAL_LM"}))


def _fp8(folder, weights: dict) -> None:
    """An fp8 (e4m3) copy with one scale per tensor (weight_scale_inv, one 128x128 block)."""
    tensors = {}
    for name, w in weights.items():
        if name in SHAPES:
            scale = np.float32(np.abs(w).max() / 448.0)
            tensors[name] = (w / scale).astype(ml_dtypes.float8_e4m3fn)
            tensors[name.removesuffix("weight") + "weight_scale_inv"] = np.full((1, 1), scale, np.float32)
        else:
            tensors[name] = w
    write_hf_model_folder(folder, tensors, config={
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}})


def _gguf(folder, weights: dict) -> None:
    """A GGUF copy (Q8_0 matrices, F32 norm) under llama.cpp's tensor names."""
    import gguf
    from gguf.quants import quantize

    folder.mkdir(parents=True)
    w = gguf.GGUFWriter(str(folder / "model-Q8_0.gguf"), "llama")
    w.add_block_count(3)
    for j in range(3):
        m = weights[f"model.layers.{j}.mlp.up_proj.weight"]
        w.add_tensor(f"blk.{j}.ffn_up.weight", quantize(m, gguf.GGMLQuantizationType.Q8_0),
                     raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("output_norm.weight", weights["model.norm.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """The family on a loopback hub: repo -> (served folder, commit)."""
    root = tmp_path_factory.mktemp("family")
    server = HubServer().start()
    base = _base()
    served = {}

    def add(repo, folder, **kw):
        served[repo] = (folder, server.add_repo(repo, folder, **kw))

    add(BASE, write_hf_model_folder(root / "base", base))
    for i, (repo, scale) in enumerate(FT_SCALE.items()):
        add(repo, write_hf_model_folder(root / repo.split("/")[1], _fine_tune(base, scale, seed=10 + i)),
            base_model=BASE)
    for i, r in enumerate((8, 16)):
        _adapter(root / f"lora-{r}", r, seed=20 + i)
        add(f"fam/lora-{r}", root / f"lora-{r}", base_model=BASE, base_relation="adapter", library_name="peft")
    ft1 = _fine_tune(base, FT_SCALE["fam/ft-1"], seed=10)
    _fp8(root / "ft-1-fp8", ft1)
    add("fam/ft-1-FP8", root / "ft-1-fp8", base_model=BASE, base_relation="quantized")
    _gguf(root / "ft-1-gguf", ft1)
    add("fam/ft-1-GGUF", root / "ft-1-gguf", base_model=BASE, base_relation="quantized", library_name="gguf")
    # A re-upload of ft-2 by someone else: the same files, byte for byte, another repo and commit.
    add("zz-mirror/ft-2", root / "ft-2", base_model=BASE)
    # An unrelated mixture-of-experts model, its experts stored as one 3-D stack (analysed per expert).
    rng = np.random.default_rng(3)
    add(MOE, write_hf_model_folder(root / "moe", {
        "model.layers.0.self_attn.q_proj.weight": heavy_tailed(rng, WIDTH, WIDTH, alpha=3.0),
        "model.layers.0.mlp.experts.down_proj": np.stack([heavy_tailed(rng, WIDTH, 2 * WIDTH, alpha=3.0)
                                                          for _ in range(4)])}))
    yield server, served
    server.stop()


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # this test's own node cache of bases


def _downloads(server, repo: str, filename: str) -> int:
    """Whole-file GETs of one file (HEADs and Range reads of headers are not downloads)."""
    return sum(1 for r in server.requests_to(f"/{repo}/resolve/", method="GET")
               if r.path.endswith("/" + filename) and not r.range)


@pytest.mark.slow
def test_family_scan(ray_local, prefect_api, family, hub_env, tmp_path):
    server, served = family
    data = str(tmp_path / "data")

    start = len(server.requests)
    summary = nightly_scan(data_root=data, limit=50, workers=2, endpoint=server.endpoint)
    log = server.requests[start:]
    print(f"\nscan: {summary['seconds']:.1f} s, {len(log)} requests: "
          f"{sum(r.path.startswith('/api/models/') and 'blobs' in r.query for r in log)} model info with files "
          f"metadata, {sum(r.path == '/api/models' for r in log)} listing pages; whole-file GETs per repo: "
          + ", ".join(f"{repo} {sum(1 for r in log if r.method == 'GET' and r.path.startswith(f'/{repo}/resolve/') and not r.range)}"
                      for repo in sorted(served)))

    assert summary["requested"] == len(served) and summary["failed"] == 0, [(f["repo_id"], f["message"]) for f in summary["failures"]]
    assert (summary["done"], summary["skipped"]) == (len(served) - 1, 1)  # the link counts as skipped
    store = ResultStore(data)
    models = {r["repo_id"]: r for r in store.read("models").to_pylist()}
    links = {r["repo_id"]: r for r in store.read_links().to_pylist()}
    # Every repo analysed or linked; the re-upload linked to the revision it copies, never downloaded.
    assert set(models) | set(links) == set(served) and not set(models) & set(links)
    assert set(links) == {"zz-mirror/ft-2"}
    link = links["zz-mirror/ft-2"]
    assert (link["linked_repo_id"], link["linked_revision"], link["linked_stored"]) == (
        "fam/ft-2", served["fam/ft-2"][1], True)
    assert not server.requests_to("/zz-mirror/ft-2/resolve/")
    assert store.has_model("zz-mirror/ft-2", served["zz-mirror/ft-2"][1], summary_options(store))
    # The base's weights: one download on this one-node cluster, though the base and 3 fine-tunes and 2
    # adapters read them (its own analysis, then 5 delta analyses from the node cache).
    assert _downloads(server, BASE, "model.safetensors") == 1
    layers = store.read("layers").to_pylist()
    kinds = {}
    for row in layers:
        kinds.setdefault(row["repo_id"], set()).add(row["delta_kind"])
    for repo in FT_SCALE:
        assert kinds[repo] == {"", "base_delta"}
        assert models[repo]["base_model"] == BASE
    for repo in ("fam/lora-8", "fam/lora-16"):
        assert {"lora_update", "lora_merged"} <= kinds[repo]
    assert {r["base_ref"] for r in layers if r["delta_kind"] == "base_delta"} == {f"{BASE}@{served[BASE][1]}"}
    moe = sorted((r["expert"], r["status"]) for r in layers if r["repo_id"] == MOE and r["expert"] is not None)
    assert moe == [(e, "success") for e in range(4)]  # the stack planned per expert on the scan's path too

    # The family leaderboard: the fine-tunes ranked by their updates (the smallest update the most
    # heavy-tailed here? no: by delta_log_norm, the size of the change, which the test planted).
    con = catalog.connect(data)
    try:
        cols, rows = family_leaderboard(con, BASE, metric="delta_log_norm", options_hash=summary_options(store))
    finally:
        con.close()
    got = [dict(zip(cols, r)) for r in rows]
    print("\n" + "\n".join(f"{g['rank']!s:>4} {g['repo_id']:<16} {g['kind']:<10} {g['quant_format']:<10} "
                           f"dlog_norm={g['delta_log_norm']} dalpha={g['delta_alpha']}" for g in got))
    ranked_ft = [g["repo_id"] for g in got if g["kind"] == "fine-tune"]
    assert ranked_ft == ["fam/ft-1", "fam/ft-2", "fam/ft-3"]  # planted: update sizes 0.02 < 0.2 < 1
    assert {g["repo_id"] for g in got if g["kind"] == "adapter"} == {"fam/lora-8", "fam/lora-16"}
    assert [g["repo_id"] for g in got if g["kind"] == "base"] == [BASE]
    assert [(g["repo_id"], g["linked_to"]) for g in got if g["kind"] == "link"] == [
        ("zz-mirror/ft-2", f"fam/ft-2@{served['fam/ft-2'][1]}")]
    quantised = {g["repo_id"]: g["quant_format"] for g in got if g["kind"] == "quantised"}
    # dequantised rows, kept apart from the fine-tunes (no deltas: other names, or quantised layers)
    assert quantised == {"fam/ft-1-FP8": "fp8_e4m3", "fam/ft-1-GGUF": "gguf_q8_0"}

    # The next night: nothing is fetched again (the link's marker makes the re-upload "stored").
    before = len(server.requests_to("/", method="GET"))
    again = nightly_scan(data_root=data, limit=50, workers=2, endpoint=server.endpoint)
    assert (again["done"], again["skipped"], again["failed"]) == (0, len(served), 0)
    assert not [r for r in server.requests_to("/", method="GET")[before:] if "/resolve/" in r.path]


def summary_options(store: ResultStore) -> str:
    """The options hash the scan stored its rows under (the default analysis)."""
    return store.read("models").column("options_hash").to_pylist()[0]


def _item(repo, base=None, params=1000):
    return WorkItem(repo, "0" * 40, "hub", repo, facts={"base_model": base}, params_hint=params)


def test_fine_tunes_are_batched_with_their_base():
    items = [_item("a/x"), _item("b/ft-1", BASE), _item("c/y"), _item(BASE), _item("d/ft-2", BASE),
             _item("e/z"), _item("f/ft-3", BASE), _item("g/w")]
    batches = make_batches(items, ScanSettings(), slots=2)  # ~4 batches per slot: 1 model each otherwise
    family = [b for b in batches if BASE in [it.repo_id for it in b]]
    assert [[it.repo_id for it in b] for b in family] == [[BASE, "b/ft-1", "d/ft-2", "f/ft-3"]]
    assert sorted(it.repo_id for b in batches for it in b) == sorted(it.repo_id for it in items)
    assert all(len(b) == 1 for b in batches if b not in family)  # models without a family: as before
    # a family larger than batch_models goes on in the next batch, base first
    big = [_item(BASE)] + [_item(f"x/ft-{i}", BASE) for i in range(5)]
    split = make_batches(big, ScanSettings(batch_models=4), slots=1)
    assert [len(b) for b in split] == [4, 2] and split[0][0].repo_id == BASE
    assert bases.base_of(_item("a/b", "a/b")) is None and bases.base_of(_item("a/b", "not an id")) is None


def test_duplicates_are_found_from_the_hub_listing_alone(family, hub_env, tmp_path):
    server, served = family
    settings = ScanSettings(endpoint=server.endpoint, data_root=str(tmp_path / "data"))
    store = ResultStore(settings.data_root)
    folder, sha = served["fam/ft-2"]
    files_before = len(server.requests_to("/fam/ft-2/resolve/")) + len(server.requests_to("/zz-mirror/"))
    sums = duplicates.weight_sha256s("fam/ft-2", sha, settings)
    assert sums == {"model.safetensors": hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()}
    claim = duplicates.check(_item("fam/ft-2"), sha, settings, store)
    assert isinstance(claim, duplicates.Claim)
    link = duplicates.check(_item("zz-mirror/ft-2"), served["zz-mirror/ft-2"][1], settings, store)
    assert isinstance(link, duplicates.Link) and (link.linked_repo_id, link.linked_revision) == ("fam/ft-2", sha)
    link.write(store)  # the original is not stored yet: a link without the marker
    assert not store.has_model("zz-mirror/ft-2", link.revision, settings.fingerprint)
    claim.stored(store, "fam/ft-2", sha)
    link.write(store)  # re-written once it is: now the re-upload counts as stored
    assert store.has_model("zz-mirror/ft-2", link.revision, settings.fingerprint)
    assert store.read_links().num_rows == 1
    other = duplicates.check(_item("fam/ft-3"), served["fam/ft-3"][1], settings, store)
    assert isinstance(other, duplicates.Claim)  # other bytes: its own
    # hub metadata only: no file of either repo was read
    assert len(server.requests_to("/fam/ft-2/resolve/")) + len(server.requests_to("/zz-mirror/")) == files_before


def test_a_base_is_downloaded_once_per_node(family, hub_env):
    server, served = family
    ref = bases.BaseRef(BASE, served[BASE][1], server.endpoint, ScanSettings().hub)
    before = _downloads(server, BASE, "model.safetensors")
    folders = []
    threads = [threading.Thread(target=lambda: folders.append(bases.node_folder(ref))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(folders)) == 1 and os.path.isfile(os.path.join(folders[0], "model.safetensors"))
    assert _downloads(server, BASE, "model.safetensors") - before == 1
    assert folders[0].startswith(bases.cache_root())
