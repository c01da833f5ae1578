"""The test hub server speaks what huggingface_hub 2.4's own functions expect (no client patching)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.checkpoints import tiny_model_tensors, write_hf_model_folder
from support.hub_server import HubServer

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("compat")
    folder = write_hf_model_folder(root / "m", tiny_model_tensors(), n_shards=2, model_card={"license": "mit"},
                                   extra_files={"sub/extra.txt": "x"})
    with HubServer(page_size=1) as server:
        sha = server.add_repo("org/compat", folder, downloads=7)
        yield server, folder, sha


def test_snapshot_download_with_allow_patterns(served, tmp_path):
    from huggingface_hub import snapshot_download

    server, folder, sha = served
    path = snapshot_download("org/compat", endpoint=server.endpoint, cache_dir=str(tmp_path),
                             allow_patterns=["*.safetensors", "*.json"], token=False)
    assert path.endswith(sha)
    got = sorted(p for p in os.listdir(path))
    assert got == ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                   "model.safetensors.index.json"]
    for name in got:
        assert Path(path, name).read_bytes() == (folder / name).read_bytes()
    assert server.requests_to("/api/models/org/compat/tree/")  # the client listed the tree
    # Offline afterwards: the cached snapshot is found again without the server.
    again = snapshot_download("org/compat", cache_dir=str(tmp_path), allow_patterns=["*.safetensors", "*.json"],
                              local_files_only=True)
    assert again == path


def test_api_tree_paths_info_exists_and_safetensors_metadata(served):
    from huggingface_hub import HfApi

    server, folder, sha = served
    api = HfApi(endpoint=server.endpoint, token=False)
    tree = {f.path for f in api.list_repo_tree("org/compat", recursive=True)}
    assert {"config.json", "README.md", "sub", "sub/extra.txt"} <= tree
    top = {f.path for f in api.list_repo_tree("org/compat")}
    assert "sub/extra.txt" not in top and "sub" in top
    info = api.get_paths_info("org/compat", ["config.json"], revision=sha)
    assert [(i.path, i.size) for i in info] == [("config.json", (folder / "config.json").stat().st_size)]
    assert api.file_exists("org/compat", "config.json") and not api.file_exists("org/compat", "nope.bin")
    meta = api.get_safetensors_metadata("org/compat", revision=sha)
    assert meta.sharded and set(meta.weight_map) == set(tiny_model_tensors())
    full = api.model_info("org/compat", files_metadata=True)
    sizes = {s.rfilename: s.size for s in full.siblings}
    assert sizes["config.json"] == (folder / "config.json").stat().st_size
    assert full.safetensors.total == sum(a.size for a in tiny_model_tensors().values())


def test_hf_file_system_range_read(served):
    from huggingface_hub import HfFileSystem

    server, folder, sha = served
    fs = HfFileSystem(endpoint=server.endpoint, token=False)
    data = (folder / "model-00001-of-00002.safetensors").read_bytes()
    with fs.open(f"org/compat@{sha}/model-00001-of-00002.safetensors", "rb", block_size=64) as f:
        f.seek(100)
        assert f.read(50) == data[100:150]
    assert any(r.range and r.range.startswith("bytes=100-") for r in server.requests_to("/org/compat/resolve/"))


def test_another_process_can_use_the_server(served):
    """Ray workers are other processes: the server is a real socket server."""
    server, _, sha = served
    code = (
        "import json, sys\n"
        "from huggingface_hub import HfApi\n"
        "api = HfApi(endpoint=sys.argv[1], token=False)\n"
        "print(json.dumps([m.sha for m in api.list_models(expand=['sha'])]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, server.endpoint], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "HF_HUB_DISABLE_XET": "1"}, check=True)
    assert json.loads(out.stdout) == [sha]
