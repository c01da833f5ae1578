"""Every SOURCE kind round-trips exactly through open_checkpoint (real files, real torch/safetensors)."""

from __future__ import annotations

import shutil

import ml_dtypes
import numpy as np
import pytest
import torch
from support.checkpoints import (
    random_tensors,
    stored_values,
    tiny_model_tensors,
    write_hf_cache,
    write_hf_model_folder,
    write_safetensors,
    write_sharded,
    write_torch_bin,
)

from ww_spectral import sources
from ww_spectral.checkpoint import open_checkpoint

DTYPES = ["F32", "F16", "BF16", "F64"]
TORCH = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def _assert_exact(ckpt, expected: dict[str, np.ndarray]) -> None:
    names = [t.name for t in ckpt.tensors()]
    assert sorted(names) == sorted(expected)
    for name, want in expected.items():
        got64 = ckpt.read(name, dtype=np.float64)
        got32 = ckpt.read(name)
        assert got64.dtype == np.float64 and got32.dtype == np.float32
        assert got64.shape == want.shape
        np.testing.assert_array_equal(got64, want)
        np.testing.assert_array_equal(got32, want.astype(np.float32))


@pytest.mark.parametrize("code", DTYPES)
def test_single_file_matches_torch_bit_for_bit(tmp_path, code):
    """A file written by the safetensors library itself: our bf16/fp16 upcast equals torch's, bit for bit."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    tensors = {f"w{i}": (torch.randn(17, 9, generator=g) * 10 ** (i - 2)).to(TORCH[code]) for i in range(4)}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    with open_checkpoint(tmp_path / "m.safetensors") as ckpt:
        assert ckpt.ref.kind == "safetensors"
        assert {t.dtype for t in ckpt.tensors()} == {code}
        for name, t in tensors.items():
            np.testing.assert_array_equal(ckpt.read(name).view(np.uint32), t.float().numpy().view(np.uint32))
            np.testing.assert_array_equal(ckpt.read(name, dtype=np.float64), t.double().numpy())


@pytest.mark.parametrize("code", DTYPES)
def test_support_writer_round_trip(tmp_path, code):
    tensors = tiny_model_tensors(seed=1)
    path = write_safetensors(tmp_path / "m.safetensors", tensors, dtype=code)
    with open_checkpoint(path) as ckpt:
        _assert_exact(ckpt, stored_values(tensors, code))
        infos = {t.name: t for t in ckpt.tensors()}
        assert infos["model.conv.weight"].shape == (16, 8, 3, 3)
        assert infos["model.conv.weight"].nbytes == 16 * 8 * 9 * {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}[code]
        assert infos["model.conv.weight"].file == str(path.resolve())


def test_tensors_in_storage_order(tmp_path):
    tensors = random_tensors({"z": (2, 2), "a": (3, 3), "m": (4, 4)}, seed=0)
    path = write_safetensors(tmp_path / "m.safetensors", tensors)
    with open_checkpoint(path) as ckpt:
        assert [t.name for t in ckpt.tensors()] == ["z", "a", "m"]  # written order = data offset order


def test_sharded_folder_with_index(tmp_path):
    tensors = tiny_model_tensors(seed=2)
    folder = write_sharded(tmp_path / "sharded", tensors, n_shards=3, dtype="BF16")
    with open_checkpoint(folder) as ckpt:
        assert ckpt.ref.kind == "safetensors"
        assert [p.rsplit("/", 1)[1] for p in ckpt.ref.files] == [
            f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)
        ]
        assert ckpt.ref.repo_id == "sharded"
        _assert_exact(ckpt, stored_values(tensors, "BF16"))
    # The index file itself is also an accepted SOURCE.
    with open_checkpoint(folder / "model.safetensors.index.json") as ckpt:
        assert len(ckpt.tensors()) == len(tensors)


def test_hf_model_folder_config(tmp_path):
    tensors = tiny_model_tensors(seed=3)
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 32}
    folder = write_hf_model_folder(tmp_path / "org-tiny", tensors, config=config, model_card={"license": "mit"},
                                   dtype="F16", extra_files={"tokenizer.json": "{}"})
    with open_checkpoint(folder) as ckpt:
        assert ckpt.ref.config == config
        assert ckpt.ref.repo_id == "org-tiny"
        assert ckpt.ref.revision.startswith("local-")
        _assert_exact(ckpt, stored_values(tensors, "F16"))


@pytest.mark.parametrize("nest", [None, "state_dict", "model"])
@pytest.mark.parametrize("legacy", [False, True])
def test_torch_state_dicts(tmp_path, nest, legacy):
    tensors = tiny_model_tensors(seed=4)
    path = write_torch_bin(tmp_path / "pytorch_model.bin", tensors, nest=nest, legacy=legacy)
    with open_checkpoint(path) as ckpt:
        assert ckpt.ref.kind == "torch"
        _assert_exact(ckpt, stored_values(tensors, None))


@pytest.mark.parametrize("code", ["BF16", "F16"])
def test_torch_bf16_fp16_match_torch(tmp_path, code):
    tensors = random_tensors({"a": (8, 5), "b": (3, 3, 2, 2)}, seed=5)
    for suffix in (".pt", ".pth"):
        path = write_torch_bin(tmp_path / f"weights{suffix}", tensors, dtype=code)
        with open_checkpoint(path) as ckpt:
            assert {t.dtype for t in ckpt.tensors()} == {code}
            for name, arr in tensors.items():
                want = torch.from_numpy(arr).to(TORCH[code]).float().numpy()
                np.testing.assert_array_equal(ckpt.read(name), want)


def test_folder_prefers_safetensors_over_bin(tmp_path):
    st = random_tensors({"w": (4, 4)}, seed=6)
    other = random_tensors({"w": (4, 4), "v": (2, 2)}, seed=7)
    write_hf_model_folder(tmp_path / "m", st)
    write_torch_bin(tmp_path / "m" / "pytorch_model.bin", other)
    write_torch_bin(tmp_path / "m" / "optimizer.pt", other)
    with open_checkpoint(tmp_path / "m") as ckpt:
        assert ckpt.ref.kind == "safetensors"
        assert [t.name for t in ckpt.tensors()] == ["w"]
        np.testing.assert_array_equal(ckpt.read("w"), st["w"])


def test_bin_folder_ignores_trainer_files(tmp_path):
    tensors = random_tensors({"w": (4, 4)}, seed=8)
    write_torch_bin(tmp_path / "ck" / "pytorch_model.bin", tensors)
    (tmp_path / "ck" / "training_args.bin").write_bytes(b"not weights")
    with open_checkpoint(tmp_path / "ck") as ckpt:
        assert ckpt.ref.kind == "torch" and len(ckpt.ref.files) == 1


def test_hf_cache_snapshot_and_cached_repo(tmp_path):
    t1 = random_tensors({"w": (6, 4)}, seed=9)
    t2 = random_tensors({"w": (6, 4)}, seed=10)
    v1 = write_hf_model_folder(tmp_path / "v1", t1)
    v2 = write_hf_model_folder(tmp_path / "v2", t2)
    cache = tmp_path / "cache"
    snap1 = write_hf_cache(cache, "org/name", v1, commit="a" * 40, branch="old")
    snap2 = write_hf_cache(cache, "org/name", v2, commit="b" * 40, branch="main")
    with open_checkpoint(snap1) as ckpt:
        assert (ckpt.ref.repo_id, ckpt.ref.revision) == ("org/name", "a" * 40)
        np.testing.assert_array_equal(ckpt.read("w"), t1["w"])
    with open_checkpoint(cache / "models--org--name") as ckpt:  # refs/main
        assert (ckpt.ref.repo_id, ckpt.ref.revision) == ("org/name", "b" * 40)
        assert ckpt.ref.files[0].startswith(str(snap2))
        np.testing.assert_array_equal(ckpt.read("w"), t2["w"])
    with open_checkpoint(cache / "models--org--name", revision="old") as ckpt:
        assert ckpt.ref.revision == "a" * 40
    with open_checkpoint(cache / "models--org--name", revision="a" * 40) as ckpt:
        assert ckpt.ref.revision == "a" * 40


def test_module_and_mappings():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Conv1d(4, 2, 3))
    with open_checkpoint(net) as ckpt:
        assert ckpt.ref.kind == "module" and ckpt.ref.repo_id == "Sequential"
        assert [t.name for t in ckpt.tensors()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
        np.testing.assert_array_equal(ckpt.read("0.weight"), net[0].weight.detach().numpy())
        w = ckpt.read("0.weight")
        w[:] = 0  # a copy: the model is untouched
        assert net[0].weight.abs().sum() > 0
    arrays = {"a": np.arange(12, dtype=np.float64).reshape(3, 4), "b": np.ones((2, 2), dtype=ml_dtypes.bfloat16),
              "t": torch.full((2, 3), 0.1, dtype=torch.bfloat16), "i": np.arange(3, dtype=np.int32)}
    with open_checkpoint(arrays) as ckpt:
        assert ckpt.ref.kind == "mapping"
        assert [t.dtype for t in ckpt.tensors()] == ["F64", "BF16", "BF16", "I32"]
        np.testing.assert_array_equal(ckpt.read("a", dtype=np.float64), arrays["a"])
        np.testing.assert_array_equal(ckpt.read("t"), arrays["t"].float().numpy())
        assert ckpt.read("b").dtype == np.float32


def test_local_revision_is_content_hash(tmp_path):
    tensors = random_tensors({"w": (32, 16), "v": (8, 8)}, seed=11)
    a = write_hf_model_folder(tmp_path / "x" / "model", tensors)
    b = tmp_path / "y" / "model"
    shutil.copytree(a, b)
    with open_checkpoint(a) as ca, open_checkpoint(b) as cb:
        assert ca.ref.revision == cb.ref.revision  # path- and mtime-independent
    with open_checkpoint(a) as ca2:
        assert ca2.ref.revision == ca.ref.revision  # stable
    edited = dict(tensors)
    edited["w"] = tensors["w"].copy()
    edited["w"][31, 15] += 1.0  # the last value of the file
    write_safetensors(b / "model.safetensors", edited)
    with open_checkpoint(b) as cb2:
        assert cb2.ref.revision != ca.ref.revision
    (b / "config.json").write_text('{"model_type": "other"}')  # not weights: same revision
    with open_checkpoint(b) as cb3:
        assert cb3.ref.revision == cb2.ref.revision


def test_sampled_revision_of_big_files_sees_header_and_data_edits(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FULL_HASH_BYTES", 1024)  # force the sampled path on a small file
    tensors = random_tensors({"w": (256, 64)}, seed=12)
    path = write_safetensors(tmp_path / "m.safetensors", tensors)
    base = sources.content_revision([path])
    assert base == sources.content_revision([path])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the tail sample
    path.write_bytes(bytes(data))
    assert sources.content_revision([path]) != base
    write_safetensors(path, {"w": tensors["w"].reshape(128, 128)})  # same bytes, new shape: header differs
    assert sources.content_revision([path]) not in (base,)


def test_reader_returns_special_values_unchanged(tmp_path):
    """NaN/Inf, all-zero and 1xN matrices are the analysis' business: the reader returns them as stored."""
    w = np.array([[np.nan, np.inf, -np.inf, 1.5]], dtype=np.float32)
    tensors = {"nan_inf": w, "zeros": np.zeros((5, 7), np.float32), "row": np.arange(9, dtype=np.float32)[None, :],
               "empty": np.zeros((0, 4), np.float32)}
    for code in ("F32", "BF16", "F16"):
        path = write_safetensors(tmp_path / f"{code}.safetensors", tensors, dtype=code)
        with open_checkpoint(path) as ckpt:
            np.testing.assert_array_equal(ckpt.read("nan_inf"), w)  # NaN == NaN for assert_array_equal
            np.testing.assert_array_equal(ckpt.read("zeros"), tensors["zeros"])
            assert ckpt.read("row").shape == (1, 9)
            assert ckpt.read("empty").shape == (0, 4)


def test_read_after_close_is_a_clear_error(tmp_path):
    from ww_spectral.errors import CheckpointError

    path = write_safetensors(tmp_path / "m.safetensors", {"w": np.ones((2, 2), np.float32)})
    ckpt = open_checkpoint(path)
    ckpt.close()
    with pytest.raises(CheckpointError, match="closed; open it again"):
        ckpt.read("w")
    with open_checkpoint(path) as ckpt, pytest.raises(KeyError, match="no tensor named 'v'"):
        ckpt.read("v")
