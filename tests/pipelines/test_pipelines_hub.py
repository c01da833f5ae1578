"""The hub path end to end: the real huggingface_hub client talks to a hub-compatible server on 127.0.0.1
(listing with pagination, model info, resolve with Range and ETag, 401 for a gated repo, 429/500 on demand);
the nightly scan analyses on a real local Ray under a real Prefect API."""

from __future__ import annotations

import os
import tempfile

import pytest
from pipelines_zoo import model_tensors
from support.checkpoints import write_hf_model_folder
from support.hub_server import HubServer

from catalogs.store import ResultStore
from pipelines.flows import analyze_models, nightly_scan
from ww_spectral.analysis import analyze_model

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
REPOS = ["org/a", "org/b", "org/c", "org/flaky", "org/gated", "org/slow"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubsrc")
    server = HubServer(page_size=2).start()
    folders, shas = {}, {}
    for i, repo in enumerate(REPOS):
        folders[repo] = write_hf_model_folder(root / repo.replace("/", "_"), model_tensors(i),
                                              n_shards=2 if repo in ("org/b", "org/flaky") else 1,
                                              dtype="BF16" if repo == "org/c" else None)
        shas[repo] = server.add_repo(repo, folders[repo], downloads=1000 - 10 * i, likes=i,
                                     gated="manual" if repo == "org/gated" else False,
                                     base_model="org/a" if repo == "org/b" else None)
    yield server, folders, shas
    server.stop()


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    """No token; one attempt per hub call (so a 429/500 reaches Prefect's retry); quick back-off;
    shards downloaded under tmp_path/tmp (to check they are deleted)."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    monkeypatch.setenv("WW_HUB_MAX_ATTEMPTS", "1")
    # One attempt per call, and the failures rows are counted exactly: a loopback answer slowed past the
    # default 5 s read timeout by a busy machine (the server shares this process) must not add a lost attempt.
    monkeypatch.setenv("WW_HUB_TIMEOUT_S", "60")
    monkeypatch.setenv("WW_SCAN_RETRY_DELAY_S", "0.2")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path / "tmp"


@pytest.mark.slow
def test_nightly_scan_against_local_hub(ray_local, prefect_api, hub, hub_env, tmp_path, monkeypatch):
    """One model task per model (batching off): remote headers planned by Range reads, shards streamed.
    The batched path against the same kind of server: tests/pipelines/test_pipelines_rehearsal.py."""
    monkeypatch.setenv("WW_SCAN_BATCH_MAX_PARAMS", "0")
    server, folders, shas = hub
    data = str(tmp_path / "data")
    server.clear_faults()
    server.inject("/api/models/org/flaky", status=500, times=1)  # model info fails once: retried, succeeds
    server.inject("/org/slow/resolve/", status=429, times=1)       # first file read rate-limited once
    n_list = len(server.requests_to("/api/models", method="GET"))
    gated_before = len(server.requests_to("/api/models/org/gated"))

    summary = nightly_scan(data_root=data, author="org", sort="downloads", limit=50, workers=2,
                           endpoint=server.endpoint)

    assert (summary["requested"], summary["done"], summary["skipped"], summary["failed"]) == (6, 5, 0, 1)
    # One listing, paginated: 6 models in pages of 2 = 3 page requests (plus the per-model info calls).
    pages = [r for r in server.requests_to("/api/models", method="GET")[n_list:] if r.path == "/api/models"]
    assert len(pages) == 3 and all("sha" in r.query["expand"] for r in pages)
    store = ResultStore(data)
    models = {r["repo_id"]: r for r in store.read("models").to_pylist()}
    assert sorted(models) == ["org/a", "org/b", "org/c", "org/flaky", "org/slow"]
    for repo, row in models.items():
        assert row["revision"] == shas[repo] and row["source_kind"] == "hub"
        assert row["downloads"] == 1000 - 10 * REPOS.index(repo)
    assert models["org/b"]["base_model"] == "org/a" and models["org/c"]["dtype"] == "BF16"
    # Planted truth: analysing through the hub gives the numbers of the same folder analysed locally.
    for repo in ("org/a", "org/b"):
        assert models[repo]["alpha"] == pytest.approx(analyze_model(str(folders[repo])).summary["alpha"], rel=1e-12)
    layers = store.read("layers").to_pylist()
    b_layers = [r for r in layers if r["repo_id"] == "org/b" and r["delta_kind"] == ""]
    assert sorted(r["layer_id"] for r in b_layers) == list(range(4))  # ids continue across the 2 shards
    # org/b names org/a as its base: its delta rows (W - W_a per tensor) follow its own (pipelines/bases.py).
    b_deltas = [r for r in layers if r["repo_id"] == "org/b" and r["delta_kind"] == "base_delta"]
    assert {r["base_ref"] for r in b_deltas} == {f"org/a@{shas['org/a']}"} and len(b_deltas) == 3

    # Gated without a token: a failures row, attempt 1, not retried (one model-info request only).
    rows = store.read("failures").to_pylist()
    (fail,) = [r for r in rows if r["repo_id"] == "org/gated"]
    assert (fail["repo_id"], fail["revision"], fail["error_type"], fail["attempt"]) == (
        "org/gated", shas["org/gated"], "GatedRepoError", 1)
    assert fail["stage"] in ("read", "download") and "HF_TOKEN" in fail["message"]
    # (and one model-info call with files metadata before it: the weights' sha256s, pipelines/duplicates.py)
    gated = server.requests_to("/api/models/org/gated")[gated_before:]
    assert sorted("blobs" in r.query for r in gated) == [False, True]
    # The 500 was retried by Prefect (a second task attempt) and its lost attempt is a row of its own
    # (attempt 1; the model is stored, so the failures view marks it resolved). The 429 lands on whichever
    # file request of org/slow comes first: a download is retried by the hub client itself (Retry-After, no
    # attempt lost), a Range read (one attempt, WW_HUB_MAX_ATTEMPTS=1) by Prefect, with a row like flaky's.
    assert len(server.requests_to("/api/models/org/flaky")) >= 2
    retried = sorted((r["repo_id"], r["attempt"], r["error_type"]) for r in rows if r["repo_id"] != "org/gated")
    assert retried in ([("org/flaky", 1, "TransientHubError")],
                       [("org/flaky", 1, "TransientHubError"), ("org/slow", 1, "TransientHubError")])
    # Headers were read by HTTP Range before any download; shards were deleted after analysis.
    ranged = [r for r in server.requests_to("/org/a/resolve/") if r.range]
    assert ranged and all(r.range.startswith("bytes=") for r in ranged)
    # (a base of a fine-tune stays in the node's cache of bases, pipelines/bases.py: org/a, base of org/b)
    kept = [p for p in hub_env.rglob("*.safetensors") if p.is_file()]
    assert all("ww-spectral-bases" in p.parts and "models--org--a" in p.parts for p in kept)
    assert store.read("scans").to_pylist()[0]["source"] == "hub"

    # Second night: everything stored is skipped from the listing alone (no file is fetched again).
    resolves = len(server.requests_to("/org/a/resolve/"))
    again = nightly_scan(data_root=data, author="org", limit=50, workers=2, endpoint=server.endpoint)
    assert (again["done"], again["skipped"], again["failed"]) == (0, 5, 1)
    assert len(server.requests_to("/org/a/resolve/")) == resolves
    assert store.read("models").num_rows == 5


@pytest.mark.slow
def test_analyze_models_with_token_and_revisions(ray_local, prefect_api, hub, hub_env, tmp_path, monkeypatch):
    server, folders, shas = hub
    server.clear_faults()
    monkeypatch.delenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")  # HF_TOKEN is honoured: the gated repo now works
    data = str(tmp_path / "data")
    ids = ["org/gated", f"org/c@{shas['org/c']}", "org/a@main", "org/missing"]
    summary = analyze_models(model_ids=ids, data_root=data, workers=2, endpoint=server.endpoint)
    assert (summary["done"], summary["failed"]) == (3, 1)
    rows = {r["repo_id"]: r["revision"] for r in ResultStore(data).read("models").to_pylist()}
    assert rows == {"org/gated": shas["org/gated"], "org/c": shas["org/c"], "org/a": shas["org/a"]}
    (fail,) = ResultStore(data).read("failures").to_pylist()
    assert (fail["repo_id"], fail["stage"], fail["error_type"]) == ("org/missing", "list", "GatedRepoError") or (
        fail["repo_id"], fail["stage"], fail["error_type"]) == ("org/missing", "list", "SourceNotFoundError")


def test_chunk_fetches_its_shard_when_the_flow_download_is_not_on_its_node(hub, hub_env, tmp_path):
    """On a multi-node cluster the flow's downloaded shard is not on the worker's disk: the chunk fetches the
    same commit's file itself (here: called directly, the way a Ray worker on another node calls it)."""
    from pipelines.work import RemoteFile, analyze_chunk, plan_chunks
    from ww_spectral.analysis import plan_layers
    from ww_spectral.checkpoint import open_checkpoint
    from ww_spectral.hub import HubSettings
    from ww_spectral.records import AnalysisOptions

    server, folders, shas = hub
    server.clear_faults()
    with open_checkpoint(str(folders["org/a"])) as ckpt:
        plans = plan_layers(ckpt, AnalysisOptions())
    (chunk,) = plan_chunks(str(tmp_path / "elsewhere" / "model.safetensors"), plans, chunk_bytes=2**30,
                           fetch=RemoteFile("org/a", shas["org/a"], "model.safetensors", server.endpoint, HubSettings()))
    out = analyze_chunk(chunk, AnalysisOptions())
    direct = analyze_model(str(folders["org/a"])).layers
    assert [r["tensor_name"] for r in out["rows"]] == direct["tensor_name"].tolist()
    assert [r["alpha"] for r in out["rows"]] == pytest.approx(direct["alpha"].tolist(), rel=1e-12, nan_ok=True)
    assert list(hub_env.rglob("model.safetensors"))  # fetched into this node's temp folder


def _bin_repo(folder, shards: list[dict]) -> None:
    """An HF folder with only .bin weights: pytorch_model-0000k-of-0000n.bin shards + their index."""
    import json

    from support.checkpoints import write_torch_bin

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    weight_map = {}
    for k, tensors in enumerate(shards, 1):
        name = f"pytorch_model-{k:05d}-of-{len(shards):05d}.bin"
        write_torch_bin(folder / name, tensors)
        weight_map.update(dict.fromkeys(tensors, name))
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.slow
def test_bin_repos_are_planned_shard_by_shard_and_assembled_once(ray_local, prefect_api, hub, hub_env, tmp_path):
    """No safetensors header to range-read: each .bin shard is planned once downloaded, layer ids continue
    across shards (the second shard holds no analysable layer of its own), the model is judged as a whole."""
    import numpy as np

    server, _, _ = hub
    server.clear_faults()
    tensors = model_tensors(7)
    names = list(tensors)  # 3 matrices, then the norm vector
    _bin_repo(tmp_path / "two", [{n: tensors[n] for n in names[:3]}, {names[3]: tensors[names[3]]}])
    sha = server.add_repo("binorg/two", tmp_path / "two")
    _bin_repo(tmp_path / "none", [{"a.bias": np.ones(8, np.float32)}, {"b.bias": np.ones(4, np.float32)}])
    server.add_repo("binorg/none", tmp_path / "none")
    data = str(tmp_path / "data")

    summary = analyze_models(model_ids=["binorg/two", "binorg/none"], data_root=data, workers=2,
                             endpoint=server.endpoint)

    assert (summary["done"], summary["failed"]) == (1, 1), summary["failures"]
    store = ResultStore(data)
    (model,) = store.read("models").to_pylist()
    assert (model["repo_id"], model["revision"], model["architecture"]) == ("binorg/two", sha, "GPT2LMHeadModel")
    assert (model["n_layers_analysed"], model["n_layers_skipped"]) == (3, 1)
    direct = analyze_model(write_hf_model_folder(tmp_path / "st", tensors)).layers
    rows = {r["tensor_name"]: r for r in store.read("layers").to_pylist()}
    assert sorted(r["layer_id"] for r in rows.values()) == [0, 1, 2, 3]
    for ref in direct.to_dict("records"):
        assert rows[ref["tensor_name"]]["layer_id"] == ref["layer_id"]
        assert (rows[ref["tensor_name"]]["alpha"] or np.nan) == pytest.approx(ref["alpha"], rel=1e-12, nan_ok=True)
    (fail,) = store.read("failures").to_pylist()
    assert (fail["repo_id"], fail["stage"], fail["error_type"]) == ("binorg/none", "read", "NoAnalysableLayerError")
    assert not any(p.is_file() for p in hub_env.rglob("*.bin"))  # shards deleted after analysis
