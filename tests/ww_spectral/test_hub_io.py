"""ww_spectral.hub against the hub-compatible test server, with the REAL huggingface_hub client."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from support.checkpoints import (
    random_tensors,
    stored_values,
    tiny_model_tensors,
    write_hf_model_folder,
    write_torch_bin,
)
from support.hub_server import HubServer

from ww_spectral import hub, hub_source
from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.errors import NoWeightsError

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

TENSORS = tiny_model_tensors(seed=0)
N_PARAMS = sum(int(np.prod(a.shape)) for a in TENSORS.values())


@pytest.fixture(scope="module")
def hub_repos(tmp_path_factory):
    """A server with 5 repos (page size 2) and their source folders."""
    root = tmp_path_factory.mktemp("hubrepos")
    folders = {
        "org/sharded": write_hf_model_folder(root / "sharded", TENSORS, n_shards=3, dtype="BF16",
                                             model_card={"license": "mit"}),
        "org/single": write_hf_model_folder(root / "single", TENSORS, dtype="F16"),
        "other/big": write_hf_model_folder(root / "big", random_tensors({"w": (256, 128)}, seed=1)),
        "other/bin": write_torch_bin(root / "bin" / "pytorch_model.bin", TENSORS).parent,
        "org/noweights": root / "noweights",
    }
    folders["org/noweights"].mkdir()
    (folders["org/noweights"] / "README.md").write_text("# nothing here")
    server = HubServer(page_size=2).start()
    meta = {
        "org/sharded": dict(downloads=500, likes=3, base_model="org/base", pipeline_tag="text-generation"),
        "org/single": dict(downloads=400, likes=9, library_name="transformers", tags=["llama"]),
        "other/big": dict(downloads=300, likes=1, pipeline_tag="feature-extraction",
                          library_name="sentence-transformers"),
        "other/bin": dict(downloads=200, likes=0),
        "org/noweights": dict(downloads=100, likes=5),
    }
    shas = {}
    for i, (repo_id, folder) in enumerate(folders.items()):
        shas[repo_id] = server.add_repo(repo_id, folder, last_modified=datetime(2025, 1, 1 + i, tzinfo=UTC),
                                        **meta[repo_id])
    yield server, folders, shas
    server.stop()


def test_listing_paginates_in_one_call_with_expand(hub_repos):
    server, _, shas = hub_repos
    before = len(server.requests_to("/api/models"))
    models = hub.list_models(endpoint=server.endpoint, limit=None)
    listing = [r for r in server.requests_to("/api/models") if r.path == "/api/models"][-3:]
    assert len(server.requests_to("/api/models")) - before == 3  # 5 models, pages of 2: 3 page requests
    assert all(set(hub.LIST_EXPAND) <= set(r.query["expand"]) for r in listing)
    assert [m.repo_id for m in models] == ["org/sharded", "org/single", "other/big", "other/bin", "org/noweights"]
    sharded = models[0]
    assert sharded.sha == shas["org/sharded"]
    assert sharded.parameter_count == N_PARAMS
    assert sharded.base_model == "org/base"
    assert sharded.library == "transformers" and sharded.pipeline_tag == "text-generation"
    assert sharded.downloads == 500 and sharded.likes == 3 and sharded.gated is False
    assert sharded.last_modified == datetime(2025, 1, 1, tzinfo=UTC)
    assert models[3].parameter_count is None  # .bin only: the hub has no safetensors metadata


def test_listing_filters_sort_and_limit(hub_repos):
    server, _, _ = hub_repos
    ep = server.endpoint
    assert [m.repo_id for m in hub.list_models(endpoint=ep, author="other", limit=10)] == ["other/big", "other/bin"]
    assert [m.repo_id for m in hub.list_models(endpoint=ep, sort="likes", limit=2)] == ["org/single", "org/noweights"]
    assert [m.repo_id for m in hub.list_models(endpoint=ep, sort="last_modified", limit=1)] == ["org/noweights"]
    assert [m.repo_id for m in hub.list_models(endpoint=ep, min_downloads=300, limit=None)] == [
        "org/sharded", "org/single", "other/big"]
    assert [m.repo_id for m in hub.list_models(endpoint=ep, pipeline_tag="feature-extraction")] == ["other/big"]
    assert [m.repo_id for m in hub.list_models(endpoint=ep, library="sentence-transformers")] == ["other/big"]
    small = hub.list_models(endpoint=ep, max_params=20_000, limit=None)  # tiny models: 16672 parameters
    assert [m.repo_id for m in small] == ["org/sharded", "org/single"]  # other/big has 32768
    big = hub.list_models(endpoint=ep, min_params=30_000, limit=None)
    assert [m.repo_id for m in big] == ["other/big"]


def test_model_info_lists_weight_files(hub_repos):
    server, _, shas = hub_repos
    info = hub.model_info("org/sharded", endpoint=server.endpoint)
    assert info.sha == shas["org/sharded"]
    assert info.files == tuple(f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3))
    assert hub.model_info("other/bin", endpoint=server.endpoint).files == ("pytorch_model.bin",)
    assert hub.model_info("org/noweights", endpoint=server.endpoint).files == ()


def test_remote_tensor_infos_use_range_reads_only(hub_repos):
    server, folders, shas = hub_repos
    start = len(server.requests)
    infos = hub_source.remote_tensor_infos("org/sharded", endpoint=server.endpoint)
    with open_checkpoint(folders["org/sharded"]) as local:
        want = {(t.name, t.shape, t.dtype, t.nbytes) for t in local.tensors()}
    assert {(t.name, t.shape, t.dtype, t.nbytes) for t in infos} == want
    assert {t.file for t in infos} == {f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)}
    gets = [r for r in server.requests[start:] if "/resolve/" in r.path and r.method == "GET"]
    assert len(gets) == 4  # the index (its shard list is the file list), then one per shard header
    assert gets[0].path.endswith("/model.safetensors.index.json")
    assert all(r.range is not None and r.range.startswith("bytes=0-") for r in gets)
    assert all(shas["org/sharded"] in r.path for r in gets)  # pinned to the resolved commit
    with pytest.raises(NoWeightsError, match="download it instead"):
        hub_source.remote_tensor_infos("other/bin", endpoint=server.endpoint)


def test_range_requests_served_as_206(hub_repos):
    import httpx2

    server, folders, _ = hub_repos
    data = (folders["other/big"] / "model.safetensors").read_bytes()
    url = server.url("other/big", "model.safetensors")
    r = httpx2.get(url, headers={"Range": "bytes=8-27"})
    assert r.status_code == 206 and r.content == data[8:28]
    assert r.headers["Content-Range"] == f"bytes 8-27/{len(data)}"
    assert r.headers["X-Repo-Commit"] and r.headers["ETag"].startswith('"')
    assert httpx2.get(url, headers={"Range": "bytes=-4"}).content == data[-4:]
    assert httpx2.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416


def test_download_weights_and_open_by_hub_id(hub_repos, tmp_path):
    server, folders, shas = hub_repos
    cache = tmp_path / "cache"
    with open_checkpoint("org/sharded", endpoint=server.endpoint, cache_dir=str(cache)) as ckpt:
        assert ckpt.ref.repo_id == "org/sharded" and ckpt.ref.revision == shas["org/sharded"]
        assert ckpt.ref.config["model_type"] == "llama"
        assert len(ckpt.ref.files) == 3
        for name, want in stored_values(TENSORS, "BF16").items():
            np.testing.assert_array_equal(ckpt.read(name, dtype=np.float64), want)
    snap = cache / "models--org--sharded" / "snapshots" / shas["org/sharded"]
    assert sorted(p.name for p in snap.iterdir()) == sorted(
        [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)] + ["config.json", "model.safetensors.index.json"]
    )  # weights + config + index only: no README
    n = len(server.requests_to("/org/sharded/resolve/", "GET"))
    with open_checkpoint(f"org/sharded@{shas['org/sharded']}", endpoint=server.endpoint, cache_dir=str(cache)):
        pass
    assert len(server.requests_to("/org/sharded/resolve/", "GET")) == n  # cached: no second download
    with open_checkpoint("other/bin", endpoint=server.endpoint, cache_dir=str(cache)) as ckpt:
        assert ckpt.ref.kind == "torch"
        np.testing.assert_array_equal(ckpt.read("lm_head.bias"), TENSORS["lm_head.bias"])


def test_revisions_are_pinned(tmp_path):
    v1 = write_hf_model_folder(tmp_path / "v1", {"w": np.ones((4, 4), np.float32)})
    v2 = write_hf_model_folder(tmp_path / "v2", {"w": np.full((4, 4), 2.0, np.float32)})
    with HubServer() as server:
        s1 = server.add_repo("org/evolving", v1)
        s2 = server.add_repo("org/evolving", v2)
        server.add_repo("org/evolving", v1, branch="stable", commit=s1)
        ep, cache = server.endpoint, str(tmp_path / "c")
        assert hub.parse_model_id(f"org/evolving@{s1}") == ("org/evolving", s1)
        assert hub.parse_model_id("org/evolving") == ("org/evolving", None)
        for source, kwargs, sha, value in [("org/evolving", {}, s2, 2.0), (f"org/evolving@{s1}", {}, s1, 1.0),
                                           ("org/evolving", {"revision": "stable"}, s1, 1.0)]:
            with open_checkpoint(source, endpoint=ep, cache_dir=cache, **kwargs) as ckpt:
                assert ckpt.ref.revision == sha
                assert ckpt.read("w")[0, 0] == value


def test_iter_weight_shards_keeps_one_shard_on_disk(hub_repos, tmp_path):
    server, _, shas = hub_repos
    dest = tmp_path / "work"
    seen = []
    for shard in hub_source.iter_weight_shards("org/sharded", endpoint=server.endpoint, dest=dest):
        on_disk = sorted(p.name for p in dest.iterdir() if p.suffix == ".safetensors")
        assert on_disk == [shard.filename]  # exactly one shard at a time
        assert shard.revision == shas["org/sharded"] and shard.count == 3
        assert shard.config["model_type"] == "llama"
        with open_checkpoint(shard.path) as ckpt:
            seen += [t.name for t in ckpt.tensors()]
    assert sorted(seen) == sorted(TENSORS)
    assert not [p for p in dest.rglob("*.safetensors")]
    # A consumer that stops early still leaves no shard behind.
    gen = hub_source.iter_weight_shards("org/sharded", endpoint=server.endpoint, dest=tmp_path / "early")
    first = next(gen)
    assert Path(first.path).exists()
    gen.close()
    assert not Path(first.path).exists()


def test_no_weights_repo(hub_repos, tmp_path):
    server, _, _ = hub_repos
    with pytest.raises(NoWeightsError, match="no supported weight files .* found README.md"):
        hub_source.download_weights("org/noweights", endpoint=server.endpoint, cache_dir=str(tmp_path))


def test_min_downloads_stops_paging_early(hub_repos):
    server, _, _ = hub_repos
    before = len([r for r in server.requests if r.path == "/api/models"])
    models = hub.list_models(endpoint=server.endpoint, min_downloads=450, limit=None)
    assert [m.repo_id for m in models] == ["org/sharded"]
    pages = len([r for r in server.requests if r.path == "/api/models"]) - before
    assert pages == 1  # sorted by downloads: the first model below 450 ends the listing


def test_open_remote_checkpoint_reads_each_tensor_by_one_range(hub_repos):
    server, folders, shas = hub_repos
    start = len(server.requests)
    with hub_source.open_remote_checkpoint("org/sharded", endpoint=server.endpoint) as ckpt:
        assert ckpt.ref.revision == shas["org/sharded"] and ckpt.ref.config["model_type"] == "llama"
        opened = len(server.requests)
        want = stored_values(TENSORS, "BF16")
        infos = {t.name: t for t in ckpt.tensors()}
        assert sorted(infos) == sorted(want)
        for name in ("model.layers.1.mlp.up_proj.weight", "model.conv.weight"):
            before = len(server.requests)
            np.testing.assert_array_equal(ckpt.read(name, dtype=np.float64), want[name])
            new = server.requests[before:]
            assert len(new) == 1 and new[0].method == "GET"  # exactly one request per tensor ...
            a, b = (int(x) for x in new[0].range.removeprefix("bytes=").split("-"))
            assert b - a + 1 == infos[name].nbytes  # ... for exactly its bytes
    gets = [r for r in server.requests[start:opened] if "/resolve/" in r.path]
    assert all(r.range is not None for r in gets)  # nothing downloaded whole
    with pytest.raises(NoWeightsError, match="download it instead"):
        hub_source.open_remote_checkpoint("other/bin", endpoint=server.endpoint)


def test_remote_truncated_file_is_caught_at_open(tmp_path):
    from ww_spectral.errors import CheckpointError

    folder = write_hf_model_folder(tmp_path / "m", TENSORS)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-10])
    with HubServer() as server:
        server.add_repo("org/broken", folder)
        with pytest.raises(CheckpointError, match="truncated file: tensor .* needs bytes"):
            hub_source.open_remote_checkpoint("org/broken", endpoint=server.endpoint)
