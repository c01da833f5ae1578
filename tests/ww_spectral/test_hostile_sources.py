"""Hostile sources (issue 9 rows 2, 3, 8, 10, 15): each test builds its own hostile folder, cache or hub repo.

Hub tests use the loopback hub server (tests/support/hub_server.py) with the REAL huggingface_hub client.
Nothing a source says may make the tool write or read outside its roots, echo a file's content, block on a
FIFO, read without bound, or end in a traceback: every fault is one line of a typed error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from support.checkpoints import (
    tiny_model_tensors,
    write_hf_cache,
    write_hf_model_folder,
    write_safetensors,
    write_sharded,
)
from support.hub_server import HubServer

from pipelines.cli import main
from ww_spectral import hub, hub_source, layout
from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.errors import CheckpointError, HubError, OptionError, WWSpectralError
from ww_spectral.sources import resolve_source

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
SECRET = "TOP-SECRET-MARKER-5f3a"
TENSORS = {"a.weight": np.arange(64, dtype=np.float32).reshape(8, 8)}


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and "\r" not in msg
    return msg


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")) if folder.exists() else []


def _finishes(fn, *, seconds: float = 60.0, unblock: Path | None = None):
    """fn() run in a thread; the test fails (instead of hanging) when it has not returned in `seconds`
    (generous: these calls take milliseconds, but a CI machine at load 10 can stall a thread for seconds).
    unblock: a FIFO opened for writing afterwards, so a reader stuck on it can end."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        if unblock is not None:
            with contextlib.suppress(OSError):
                os.close(os.open(unblock, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"still running after {seconds} s (blocked on a FIFO or reading without end)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.fixture(scope="module")
def server():
    with HubServer() as s:
        yield s


# ---------------------------------------------------------------------------------------------------------
# row 2: a branch name that climbs out of the cache


def _climb(from_dir: Path, target: Path) -> str:
    """A relative path from `from_dir` to `target` (as an attacker would write it into a branch name)."""
    return os.path.relpath(target, from_dir)


def test_hub_branch_name_with_dotdot_writes_nothing_outside_the_cache(server, tmp_path):
    folder = write_hf_model_folder(tmp_path / "src", TENSORS)
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    evil = _climb(cache / "models--org--climb" / "refs", outside / "x")  # "../../../outside/x"
    assert ".." in evil
    sha = server.add_repo("org/climb", folder)
    server.add_repo("org/climb", folder, branch=evil, commit=sha)
    with pytest.raises(OptionError, match="not a commit sha or a safe branch/tag name") as info:
        open_checkpoint(f"org/climb@{evil}", endpoint=server.endpoint, cache_dir=str(cache))
    _one_line(info.value)
    with pytest.raises(OptionError):
        open_checkpoint("org/climb", revision=evil, endpoint=server.endpoint, cache_dir=str(cache))
    for call in (lambda: hub_source.download_weights("org/climb", revision=evil, endpoint=server.endpoint,
                                                     cache_dir=str(cache)),
                 lambda: hub.model_info("org/climb", revision=evil, endpoint=server.endpoint),
                 lambda: hub.download_file("org/climb", "config.json", revision=evil, endpoint=server.endpoint,
                                           cache_dir=str(cache)),
                 lambda: hub_source.open_remote_checkpoint("org/climb", evil, endpoint=server.endpoint)):
        with pytest.raises(OptionError):
            call()
    assert not outside.exists()
    # The same repo asked for by its main branch works and writes only inside the cache.
    with open_checkpoint("org/climb", endpoint=server.endpoint, cache_dir=str(cache)) as ckpt:
        np.testing.assert_array_equal(ckpt.read("a.weight"), TENSORS["a.weight"])
    assert not outside.exists()


def test_analyze_cli_refuses_a_climbing_revision(server, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    folder = write_hf_model_folder(tmp_path / "src", TENSORS)
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    evil = _climb(cache / "models--org--cli" / "refs", outside / "x")
    server.add_repo("org/cli", folder, branch=evil)
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert main(["analyze", f"org/cli@{evil}", "--no-progress"]) == 2
    assert main(["analyze", "org/cli", "--revision", evil, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "safe branch/tag name" in err and "Traceback" not in err
    assert not outside.exists()


def test_hub_answering_a_climbing_commit_id_is_refused(server, tmp_path):
    folder = write_hf_model_folder(tmp_path / "src", TENSORS)
    cache = tmp_path / "cache"
    server.add_repo("org/liar", folder, commit="../../../outside/y")
    with pytest.raises(HubError, match="not 40 hex") as info:
        open_checkpoint("org/liar", endpoint=server.endpoint, cache_dir=str(cache))
    _one_line(info.value)
    with pytest.raises(HubError, match="not 40 hex"):
        hub_source.open_remote_checkpoint("org/liar", endpoint=server.endpoint)
    assert not (tmp_path / "outside").exists()
    # A listing still lists it (without a commit): one bad repo does not end a listing.
    listed = {m.repo_id: m.sha for m in hub.list_models(endpoint=server.endpoint, limit=None)}
    assert listed["org/liar"] is None


@pytest.mark.parametrize("rev", ["../x", "a/../../b", "/etc/passwd", "a//b", "main\n", ".hidden", "x" * 300,
                                 "a\x1b[2Kb", "a b"])
def test_unsafe_revisions_are_refused_everywhere_they_enter(rev):
    assert not layout.is_safe_revision(rev)
    with pytest.raises(OptionError):
        layout.check_revision(rev)
    with pytest.raises(OptionError):
        hub.parse_model_id(f"org/name@{rev}")


@pytest.mark.parametrize("rev", ["main", "v1.0", "refs/pr/1", "release-2024_01", "a" * 40])
def test_ordinary_revisions_pass(rev):
    assert layout.check_revision(rev) == rev
    assert hub.parse_model_id(f"org/name@{rev}") == ("org/name", rev)


# ---------------------------------------------------------------------------------------------------------
# row 3: a cached repo's refs/ never shows a file's content


@pytest.fixture
def cached(tmp_path):
    src = write_hf_model_folder(tmp_path / "src", TENSORS)
    write_hf_cache(tmp_path / "cache", "org/tiny", src, commit="c" * 40)
    secret = tmp_path / "home" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text(SECRET + "\n")
    return tmp_path / "cache" / "models--org--tiny", secret


def test_describe_with_a_revision_that_points_at_a_home_file(cached, capsys):
    repo_dir, secret = cached
    rev = _climb(repo_dir / "refs", secret)
    assert main(["describe", str(repo_dir), "--revision", rev]) == 2
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert "safe branch/tag name" in out.err and len(out.err.strip().splitlines()) == 1
    with pytest.raises(OptionError) as info:
        open_checkpoint(repo_dir, revision=rev)
    assert SECRET not in str(info.value)


def test_tampered_cache_ref_is_never_echoed(cached, capsys):
    repo_dir, secret = cached
    main_ref = repo_dir / "refs" / "main"
    main_ref.unlink()
    main_ref.symlink_to(secret)  # refs/main links to a file in the home folder
    assert main(["describe", str(repo_dir)]) == 2
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err and "outside" in out.err
    with pytest.raises(CheckpointError, match="40-hex commit id") as info:  # even when links are allowed
        open_checkpoint(repo_dir, allow_external_links=True)
    assert SECRET not in str(info.value)
    main_ref.unlink()
    main_ref.write_text(SECRET)  # a ref inside the repo that holds no commit id
    with pytest.raises(CheckpointError, match="40-hex commit id") as info:
        open_checkpoint(repo_dir)
    assert SECRET not in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# row 8: config.json / index / weights that are FIFOs, devices, huge or deeply nested


def _folder_with(tmp_path: Path, name: str = "model") -> Path:
    folder = tmp_path / name
    write_safetensors(folder / "model.safetensors", TENSORS)
    return folder


def _assert_config_ignored(caplog, folder: Path, **kwargs) -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ww_spectral"):
        ref = _finishes(lambda: resolve_source(str(folder), **kwargs).ref, unblock=folder / "config.json")
    assert ref.config == {} and ref.files  # the weights are still found
    warnings = [r.getMessage() for r in caplog.records if "config.json ignored" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]


def test_config_fifo_never_blocks(tmp_path, caplog):
    folder = _folder_with(tmp_path)
    os.mkfifo(folder / "config.json")
    _assert_config_ignored(caplog, folder)
    assert "FIFO" in caplog.records[-1].getMessage()


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_config_linked_to_dev_zero(tmp_path, caplog):
    folder = _folder_with(tmp_path)
    (folder / "config.json").symlink_to("/dev/zero")
    _assert_config_ignored(caplog, folder)  # leads outside the folder
    _assert_config_ignored(caplog, folder, allow_external_links=True)  # a character device
    assert "character device" in caplog.records[-1].getMessage()


def test_config_of_600_mb_is_not_read(tmp_path, caplog):
    folder = _folder_with(tmp_path)
    with open(folder / "config.json", "wb") as f:
        f.truncate(600 * 2**20)  # sparse: costs no disk
    tracemalloc.start()
    try:
        _assert_config_ignored(caplog, folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20
    assert "limit" in caplog.records[-1].getMessage()


def test_config_deeply_nested(tmp_path, caplog):
    folder = _folder_with(tmp_path)
    (folder / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    _assert_config_ignored(caplog, folder)
    (folder / "config.json").write_text('{"model_type": "llama", "x": ' + "[" * 100 + "]" * 100 + "}")
    _assert_config_ignored(caplog, folder)
    (folder / "config.json").write_text('["not", "an", "object"]')
    _assert_config_ignored(caplog, folder)


def test_remote_config_too_deep_or_too_big_is_ignored(server, tmp_path, caplog):
    folder = write_hf_model_folder(tmp_path / "src", TENSORS, config={"model_type": "llama"})
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    server.add_repo("org/deepconfig", folder)
    with caplog.at_level(logging.WARNING, logger="ww_spectral"):
        with hub_source.open_remote_checkpoint("org/deepconfig", endpoint=server.endpoint) as ckpt:
            assert ckpt.ref.config == {} and [t.name for t in ckpt.tensors()] == ["a.weight"]
        with open_checkpoint("org/deepconfig", endpoint=server.endpoint, cache_dir=str(tmp_path / "c")) as ckpt:
            assert ckpt.ref.config == {}
    assert len([r for r in caplog.records if "config.json ignored" in r.getMessage()]) == 2


def test_index_that_is_a_fifo_huge_or_nested_is_one_error(tmp_path):
    folder = write_sharded(tmp_path / "m", tiny_model_tensors(), n_shards=2)
    index = folder / "model.safetensors.index.json"
    index.unlink()
    os.mkfifo(index)
    with pytest.raises(CheckpointError, match="FIFO") as info:
        _finishes(lambda: open_checkpoint(folder), unblock=index)
    _one_line(info.value)
    index.unlink()
    with open(index, "wb") as f:
        f.truncate(600 * 2**20)
    with pytest.raises(CheckpointError, match="limit") as info:
        _finishes(lambda: open_checkpoint(folder))
    _one_line(info.value)
    index.write_text('{"weight_map": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CheckpointError, match="not a valid index .*nests") as info:
        open_checkpoint(folder)
    _one_line(info.value)


def test_weight_file_that_is_a_fifo_or_device(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="FIFO") as info:
        _finishes(lambda: open_checkpoint(fifo), unblock=fifo)
    _one_line(info.value)
    if os.path.exists("/dev/zero"):
        zero = tmp_path / "z" / "model.safetensors"
        zero.parent.mkdir()
        zero.symlink_to("/dev/zero")
        with pytest.raises(CheckpointError, match="character device"):
            _finishes(lambda: open_checkpoint(zero, allow_external_links=True))
        with pytest.raises(CheckpointError, match="character device"):  # found in a folder, too
            _finishes(lambda: open_checkpoint(zero.parent, allow_external_links=True))


# ---------------------------------------------------------------------------------------------------------
# row 10: a hub index naming a shard outside the repo


@pytest.mark.parametrize("shard", ["../x.safetensors", "/abs/x.safetensors", "sub/../../x.safetensors",
                                   "..\\x.safetensors", "a\nb.safetensors"])
def test_hub_index_naming_a_shard_outside_the_repo(server, tmp_path, shard):
    folder = tmp_path / "src"
    payload = write_safetensors(tmp_path / "payload.safetensors", TENSORS)
    write_safetensors(folder / "model-00001-of-00001.safetensors", TENSORS)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a.weight": shard}}))
    repo = f"org/shard{abs(hash(shard)) % 10**8}"
    server.add_repo(repo, folder, extra_files={shard: payload})  # the hostile hub even serves that name
    cache, dest = tmp_path / "cache", tmp_path / "dest" / "work"
    for call in (lambda: open_checkpoint(repo, endpoint=server.endpoint, cache_dir=str(cache)),
                 lambda: hub_source.open_remote_checkpoint(repo, endpoint=server.endpoint),
                 lambda: hub_source.remote_tensor_infos(repo, endpoint=server.endpoint),
                 lambda: next(hub_source.iter_weight_shards(repo, endpoint=server.endpoint, dest=dest))):
        with pytest.raises(CheckpointError, match="not a valid index .shard name") as info:
            call()
        _one_line(info.value)
    outside = [p for p in _files_under(tmp_path) if p.name == "x.safetensors"]
    assert outside == []


def test_parse_index_rules():
    ok = json.dumps({"weight_map": {"a": "m-2.safetensors", "b": "m-1.safetensors", "c": "m-2.safetensors"}})
    assert layout.parse_index(ok.encode(), index_name=layout.ST_INDEX) == ("m-1.safetensors", "m-2.safetensors")
    for bad in ({"weight_map": {"a": "../m.safetensors"}}, {"weight_map": {"a": "m.bin"}}, {"weight_map": {}},
                {"weight_map": {"a": 3}}, {"weight_map": []}, [], {"weight_map": {"a": "/m.safetensors"}}):
        with pytest.raises(CheckpointError, match="not a valid index") as info:
            layout.parse_index(json.dumps(bad).encode(), index_name=layout.ST_INDEX)
        _one_line(info.value)
    assert layout.parse_index(json.dumps({"weight_map": {"a": "../m.bin"}}).encode(), index_name=layout.BIN_INDEX,
                              allow_external_links=True) == ("../m.bin",)


# ---------------------------------------------------------------------------------------------------------
# row 15: links and index entries leaving a model folder


@pytest.fixture
def elsewhere(tmp_path):
    """A valid safetensors file outside any model folder (what a link would expose)."""
    return write_safetensors(tmp_path / "elsewhere" / "private.safetensors",
                             {"secret.weight": np.full((8, 8), 7.0, np.float32)})


def test_symlinked_weight_file_outside_the_folder(tmp_path, elsewhere, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(elsewhere)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(CheckpointError, match="leads outside .*--allow-external-links") as info:
        open_checkpoint(folder)
    _one_line(info.value)
    with pytest.raises(CheckpointError, match="leads outside"):  # named directly: its folder is the root
        open_checkpoint(folder / "model.safetensors")
    assert main(["describe", str(folder)]) == 2
    assert "allow-external-links" in capsys.readouterr().err
    with open_checkpoint(folder, allow_external_links=True) as ckpt:
        assert ckpt.read("secret.weight")[0, 0] == 7.0
    assert main(["describe", str(folder), "--allow-external-links"]) == 0


def test_index_entries_outside_the_folder(tmp_path, elsewhere):
    folder = write_sharded(tmp_path / "model", tiny_model_tensors(), n_shards=2)
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    for target in (os.path.relpath(elsewhere, folder), str(elsewhere)):  # "../elsewhere/...", absolute
        first = next(iter(data["weight_map"]))
        index.write_text(json.dumps({"weight_map": {**data["weight_map"], first: target}}))
        with pytest.raises(CheckpointError, match="lead outside the model.*--allow-external-links") as info:
            open_checkpoint(folder)
        _one_line(info.value)
        with open_checkpoint(folder, allow_external_links=True) as ckpt:
            assert "secret.weight" in {t.name for t in ckpt.tensors()}


def test_linked_subfolder_and_config_outside(tmp_path, elsewhere, caplog):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "shards").symlink_to(elsewhere.parent, target_is_directory=True)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"secret.weight": "shards/private.safetensors"}}))
    with pytest.raises(CheckpointError, match="leads outside"):
        open_checkpoint(folder)
    other = _folder_with(tmp_path, "other")
    outside_config = tmp_path / "elsewhere" / "config.json"
    outside_config.write_text(json.dumps({"model_type": SECRET}))
    (other / "config.json").symlink_to(outside_config)
    _assert_config_ignored(caplog, other)
    assert resolve_source(str(other), allow_external_links=True).ref.config == {"model_type": SECRET}


def test_hf_cache_links_into_blobs_stay_allowed(tmp_path, elsewhere):
    src = write_hf_model_folder(tmp_path / "src", tiny_model_tensors(), n_shards=2)
    snap = write_hf_cache(tmp_path / "cache", "org/tiny", src, commit="d" * 40)
    assert all(p.is_symlink() for p in snap.iterdir())  # ../../blobs/<sha256>
    for source in (snap, snap.parent.parent, snap / "model-00001-of-00002.safetensors"):
        with open_checkpoint(source) as ckpt:
            assert ckpt.ref.repo_id == "org/tiny" and ckpt.ref.revision == "d" * 40
            assert ckpt.ref.config["model_type"] == "llama" and ckpt.tensors()
    # ... but a snapshot file linking outside its repo folder is refused like any other.
    (snap / "model-00001-of-00002.safetensors").unlink()
    (snap / "model-00001-of-00002.safetensors").symlink_to(elsewhere)
    with pytest.raises(CheckpointError, match="leads outside"):
        open_checkpoint(snap)


def test_every_refusal_is_a_wwspectral_error():
    for exc in (OptionError, CheckpointError, HubError):
        assert issubclass(exc, WWSpectralError)
