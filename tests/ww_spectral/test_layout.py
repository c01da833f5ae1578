"""ww_spectral/layout.py is the one rule for weight files: local folders and hub repos choose alike.

Also: HubSettings read once from the environment, download_file's checks before any request.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from support.checkpoints import tiny_model_tensors, write_safetensors, write_sharded, write_torch_bin
from support.hub_server import HubServer

from ww_spectral import hub, hub_source, layout
from ww_spectral.errors import CheckpointError, NoWeightsError, OptionError
from ww_spectral.sources import weight_files

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
W = {"w": np.ones((4, 4), np.float32)}


def _touch_st(folder: Path, *names: str) -> None:
    for n in names:
        write_safetensors(folder / n, W)


def _layouts(root: Path) -> dict[str, tuple[Path, tuple[str, ...], str]]:
    """name -> (folder, expected weight files, kind): every precedence step of the rule."""
    out = {}

    def case(name, files, kind, build):
        folder = root / name
        folder.mkdir(parents=True)
        build(folder)
        (folder / "README.md").write_text("# card")
        out[name] = (folder, files, kind)

    case("index_wins", ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"), "safetensors",
         lambda f: (write_sharded(f, tiny_model_tensors(), n_shards=2), _touch_st(f, "consolidated.safetensors"),
                    write_torch_bin(f / "pytorch_model.bin", W)))
    case("index_subset", ("b.safetensors",), "safetensors",
         lambda f: (_touch_st(f, "a.safetensors", "b.safetensors"),
                    (f / layout.ST_INDEX).write_text(json.dumps({"weight_map": {"w": "b.safetensors"}}))))
    case("model_st", ("model.safetensors",), "safetensors",
         lambda f: _touch_st(f, "model.safetensors", "adapter.safetensors"))
    case("all_st", ("a.safetensors", "b.safetensors"), "safetensors",
         lambda f: (_touch_st(f, "b.safetensors", "a.safetensors"), write_torch_bin(f / "pytorch_model.bin", W)))
    case("bin_index", ("pytorch_model-00001-of-00001.bin",), "torch",
         lambda f: (write_torch_bin(f / "pytorch_model-00001-of-00001.bin", W),
                    write_torch_bin(f / "stray.bin", W),
                    (f / layout.BIN_INDEX).write_text(
                        json.dumps({"weight_map": {"w": "pytorch_model-00001-of-00001.bin"}}))))
    case("bins", ("model.pt", "pytorch_model.bin"), "torch",
         lambda f: [write_torch_bin(f / n, W) for n in ("pytorch_model.bin", "model.pt", "optimizer.pt",
                                                          "training_args.bin", "scheduler.pt", "rng_state_0.pth")])
    return out


def test_select_weight_files_precedence():
    sel = layout.select_weight_files
    assert sel(["model.safetensors.index.json", "model-1.safetensors", "consolidated.safetensors", "x.bin"]) == \
        layout.WeightFiles(("model-1.safetensors",), "safetensors", layout.ST_INDEX)
    assert sel(["model.safetensors", "z.safetensors"]) == layout.WeightFiles(("model.safetensors",), "safetensors")
    assert sel(["b.safetensors", "a.safetensors", "x.bin"]).files == ("a.safetensors", "b.safetensors")
    assert sel(["sub/model.safetensors", "README.md"]).kind == "none"  # only root files count
    assert sel(["optimizer.pt", "training_args.bin", "model.ckpt"]) == layout.WeightFiles(("model.ckpt",), "torch")
    assert sel(["pytorch_model.bin.index.json", "p-1.bin"]).index == layout.BIN_INDEX
    assert sel([]) == layout.WeightFiles((), "none")


def test_local_folder_and_hub_repo_choose_the_same_files(tmp_path):
    cases = _layouts(tmp_path / "src")
    with HubServer() as server:
        for name, (folder, *_) in cases.items():
            server.add_repo(f"org/{name}", folder)
        for name, (folder, want, kind) in cases.items():
            local, local_kind = weight_files(folder)
            assert tuple(Path(p).name for p in local) == want and local_kind == kind, name
            plan = hub_source.plan_repo_files(
                f"org/{name}", endpoint=server.endpoint,
                read_index_file=lambda index, sha, n=name: layout.read_index(
                    hub.download_file(f"org/{n}", index, revision=sha, endpoint=server.endpoint,
                                      cache_dir=str(tmp_path / "cache")), index_name=index))
            assert (plan.files, plan.kind) == (want, kind), name
            model = hub.model_info(f"org/{name}", endpoint=server.endpoint)
            if layout.select_weight_files(model.siblings).index is None:
                assert model.files == want, name  # without an index, model_info already knows the files


def test_no_weights_alike(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "README.md").write_text("# nothing")
    with pytest.raises(NoWeightsError, match="found README.md"):
        weight_files(folder)
    with HubServer() as server:
        server.add_repo("org/empty", folder)
        with pytest.raises(NoWeightsError, match="found README.md"):
            hub_source.plan_repo_files("org/empty", endpoint=server.endpoint)


@pytest.mark.parametrize(("name", "problem"), [
    ("a.safetensors", None), ("sub/a.safetensors", None), ("../a", "'..'"), ("a/./b", "'.'"), ("/a", "absolute"),
    ("a\\b", "backslash"), ("a\x00b", "control"), ("", "non-empty"), ("a//b", "empty"), ("x" * 2000, "longer"),
])
def test_name_problem(name, problem):
    got = layout.name_problem(name)
    assert (got is None) if problem is None else (problem in got)


def test_check_inside(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "out.txt").write_text("x")
    (root / "in.txt").write_text("x")
    (root / "link_in").symlink_to(root / "in.txt")
    (root / "link_out").symlink_to(tmp_path / "out.txt")
    assert layout.is_inside(root / "link_in", root) and layout.is_inside(root / "sub" / ".." / "in.txt", root)
    assert not layout.is_inside(root / "link_out", root) and not layout.is_inside(root / ".." / "out.txt", root)
    with pytest.raises(CheckpointError, match="leads outside"):
        layout.check_inside(root / "link_out", root)
    assert layout.check_inside(root / "link_out", root, allow_external_links=True) == root / "link_out"


def test_hub_settings_read_once_from_the_environment(monkeypatch):
    env = {"WW_HUB_TIMEOUT_S": "2.5", "WW_HUB_MAX_ATTEMPTS": "7", "WW_HUB_BACKOFF_S": "0"}
    s = hub.HubSettings.from_env(environ=env)
    assert (s.timeout_s, s.max_attempts, s.backoff_s) == (2.5, 7, 0.0)
    assert hub.HubSettings.from_env(environ={}) == hub.HubSettings()
    monkeypatch.setenv("WW_HUB_MAX_ATTEMPTS", "3")
    assert hub.HubSettings.from_env().max_attempts == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.timeout_s = 1  # type: ignore[misc]
    with pytest.raises(OptionError, match="WW_HUB_TIMEOUT_S='soon' is not a number"):
        hub.HubSettings.from_env(environ={"WW_HUB_TIMEOUT_S": "soon"})
    with pytest.raises(OptionError, match="max_attempts >= 1"):
        hub.HubSettings(max_attempts=0)


def test_settings_passed_down_decide_the_retries(tmp_path):
    folder = tmp_path / "m"
    _touch_st(folder, "model.safetensors")
    with HubServer() as server:
        server.add_repo("org/m", folder)
        server.inject("/api/models/org/m", status=503, times=10, retry_after=None)
        before = len(server.requests_to("/api/models/org/m"))
        with pytest.raises(hub.TransientHubError):
            hub.model_info("org/m", endpoint=server.endpoint, settings=hub.HubSettings(max_attempts=2, backoff_s=0))
        assert len(server.requests_to("/api/models/org/m")) - before == 2


def test_download_file_checks_before_any_request(tmp_path):
    folder = tmp_path / "m"
    _touch_st(folder, "model.safetensors")
    with HubServer() as server:
        sha = server.add_repo("org/m", folder)
        dest = tmp_path / "dest"
        path = hub.download_file("org/m", "model.safetensors", revision=sha, endpoint=server.endpoint,
                                 local_dir=str(dest))
        assert Path(path) == dest / "model.safetensors" and Path(path).read_bytes() == \
            (folder / "model.safetensors").read_bytes()
        cached = hub.download_file("org/m", "model.safetensors", revision=sha, endpoint=server.endpoint,
                                   cache_dir=str(tmp_path / "cache"))
        assert f"models--org--m/snapshots/{sha}/model.safetensors" in cached
        n = len(server.requests)
        for filename, revision, err in (("../x.safetensors", sha, CheckpointError), ("/etc/passwd", sha, CheckpointError),
                                        ("model.safetensors", "../x", OptionError)):
            with pytest.raises(err):
                hub.download_file("org/m", filename, revision=revision, endpoint=server.endpoint,
                                  local_dir=str(dest))
        with pytest.raises(hub.SourceNotFoundError, match="not a hub repo id"):
            hub.download_file("org/../m", "model.safetensors", revision=sha, endpoint=server.endpoint)
        assert len(server.requests) == n  # refused before any request
