"""Bad input files: each gives a typed error whose message names the problem and the fix."""

from __future__ import annotations

import struct
import zipfile

import numpy as np
import pytest
from support.checkpoints import (
    raw_header,
    tiny_model_tensors,
    write_hf_model_folder,
    write_malicious_pickle,
    write_raw_safetensors,
    write_safetensors,
    write_sharded,
    write_torch_bin,
)

from ww_spectral.checkpoint import open_checkpoint
from ww_spectral.errors import (
    CheckpointError,
    NoWeightsError,
    SourceNotFoundError,
    UnsafeCheckpointError,
    UnsupportedDtypeError,
    WWSpectralError,
)


def _raises(exc_type, source, *needles, **kwargs) -> str:
    with pytest.raises(exc_type) as info:
        open_checkpoint(source, **kwargs)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    assert "\n" not in msg  # the CLI prints it as one line
    return msg


def test_truncated_file(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", tiny_model_tensors())
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    msg = _raises(CheckpointError, path, "truncated file", "re-download it")
    last = list(tiny_model_tensors())[-1]
    assert repr(last) in msg  # names the tensor that no longer fits


def test_truncated_inside_header(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", tiny_model_tensors())
    path.write_bytes(path.read_bytes()[:40])
    _raises(CheckpointError, path, "truncated file", "re-download it")
    path.write_bytes(b"\x01\x02")
    _raises(CheckpointError, path, "truncated file", "re-download it")
    path.write_bytes(b"")
    _raises(CheckpointError, path, "truncated file")


def test_offsets_past_the_end(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]},
              "v": {"dtype": "F32", "shape": [100], "data_offsets": [64, 464]}}
    path = write_raw_safetensors(tmp_path / "m.safetensors", header, bytes(64))
    _raises(CheckpointError, path, "'v'", "needs bytes 64..464", "the file has 64", "re-download it")


def test_header_lies_about_shape(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [8, 8], "data_offsets": [0, 64]}}
    path = write_raw_safetensors(tmp_path / "m.safetensors", header, bytes(64))
    _raises(CheckpointError, path, "'w'", "F32 (8, 8) = 256 bytes", "span 64 bytes", "re-export")


def test_header_lies_about_dtype(tmp_path):
    header = {"w": {"dtype": "F64", "shape": [4, 4], "data_offsets": [0, 64]}}
    path = write_raw_safetensors(tmp_path / "m.safetensors", header, bytes(64))
    _raises(CheckpointError, path, "'w'", "F64", "lies about its shape or dtype")


def test_overlapping_tensors(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]},
              "b": {"dtype": "F32", "shape": [8], "data_offsets": [16, 48]}}
    path = write_raw_safetensors(tmp_path / "m.safetensors", header, bytes(48))
    _raises(CheckpointError, path, "'a'", "'b'", "overlap", "re-download")


@pytest.mark.parametrize("entry, needle", [
    ({"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}, "non-negative integers"),
    ({"dtype": "F32", "shape": "2x2", "data_offsets": [0, 16]}, "non-negative integers"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}, "data_offsets"),
    ({"dtype": "F32", "shape": [2]}, "data_offsets"),
    ({"dtype": 7, "shape": [2], "data_offsets": [0, 8]}, "dtype code"),
    ([1, 2, 3], "not an object"),
])
def test_malformed_header_entries(tmp_path, entry, needle):
    path = write_raw_safetensors(tmp_path / "m.safetensors", {"w": entry}, bytes(16))
    _raises(CheckpointError, path, "'w'", needle, "re-download or re-export")


def test_insane_header_length_and_not_json(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    _raises(CheckpointError, path, "header length", "not sane")
    path.write_bytes(struct.pack("<Q", 8) + b"{notjson" + bytes(8))
    _raises(CheckpointError, path, "not valid JSON", "re-download")
    path.write_bytes(raw_header([1, 2]))  # JSON, but not an object
    _raises(CheckpointError, path, "not a safetensors file")
    path.write_bytes(b"PK\x03\x04" + bytes(60))  # a zip renamed to .safetensors
    _raises(CheckpointError, path, "not a safetensors file", "a .bin/.pt renamed?")


def test_unknown_and_quantised_dtype_codes(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
              "x": {"dtype": "Q4_K", "shape": [4, 4], "data_offsets": [16, 40]},
              "f8": {"dtype": "F8_E5M2", "shape": [2, 2], "data_offsets": [40, 44]}}
    path = write_raw_safetensors(tmp_path / "m.safetensors", header, np.ones(4, "<f4").tobytes() + bytes(28))
    with open_checkpoint(path) as ckpt:
        assert [t.dtype for t in ckpt.tensors()] == ["F32", "Q4_K", "F8_E5M2"]
        for name, needle in (("x", "unknown dtype code"), ("f8", "float8")):
            with pytest.raises(UnsupportedDtypeError, match=needle) as info:
                ckpt.read(name)
            assert "dequantise" in str(info.value)
        with pytest.raises(UnsupportedDtypeError, match="float32 or float64"):
            ckpt.read("w", dtype=np.int32)
        np.testing.assert_array_equal(ckpt.read("w"), np.ones((2, 2), np.float32))


def test_empty_folder_and_folder_without_weights(tmp_path):
    (tmp_path / "empty").mkdir()
    _raises(NoWeightsError, tmp_path / "empty", "no supported weight files", ".safetensors",
            "the folder is empty")
    other = tmp_path / "tok"
    other.mkdir()
    (other / "tokenizer.json").write_text("{}")
    (other / "config.json").write_text("{}")
    _raises(NoWeightsError, other, "config.json", "tokenizer.json")
    cache_root = tmp_path / "hub"
    (cache_root / "models--org--a").mkdir(parents=True)
    _raises(NoWeightsError, cache_root, "Hugging Face cache root", "models--org--name")


def test_nonexistent_path_names_accepted_kinds(tmp_path):
    msg = _raises(SourceNotFoundError, tmp_path / "nope.safetensors", "no such file or folder")
    assert ".safetensors" in msg and "org/name[@revision]" in msg and "nn.Module" in msg
    _raises(SourceNotFoundError, "./relative/missing", "no such file")
    _raises(SourceNotFoundError, 42, "int", "hub id")
    assert issubclass(SourceNotFoundError, FileNotFoundError)


def test_not_a_weight_file(tmp_path):
    p = tmp_path / "weights.npz"
    p.write_bytes(b"x")
    _raises(NoWeightsError, p, "not a supported weight file", ".safetensors")


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused_never_run(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = write_malicious_pickle(tmp_path / "pytorch_model.bin", marker, legacy=legacy)
    _raises(UnsafeCheckpointError, path, "refused", "io.open", "not executed", ".safetensors")
    assert not marker.exists()
    _raises(UnsafeCheckpointError, tmp_path, "refused")  # also through the folder
    assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_protocol_4_is_refused_never_run(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = write_malicious_pickle(tmp_path / "model.pt", marker, legacy=legacy, protocol=4)
    _raises(CheckpointError, path, "nothing in it was executed", ".safetensors")
    assert not marker.exists()


def test_damaged_torch_files(tmp_path):
    path = write_torch_bin(tmp_path / "model.pt", tiny_model_tensors())
    path.write_bytes(path.read_bytes()[:300])
    _raises(CheckpointError, path, "not a readable PyTorch checkpoint", "re-download")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00garbage" * 10)
    _raises(CheckpointError, junk, "not a readable PyTorch checkpoint")
    assert zipfile.is_zipfile(write_torch_bin(tmp_path / "ok.pt", {"w": np.ones((2, 2), np.float32)}))


def test_index_lists_missing_shard(tmp_path):
    folder = write_sharded(tmp_path / "m", tiny_model_tensors(), n_shards=2)
    (folder / "model-00002-of-00002.safetensors").unlink()
    _raises(CheckpointError, folder, "model-00002-of-00002.safetensors", "missing", "re-download")
    (folder / "model.safetensors.index.json").write_text("{not json")
    _raises(CheckpointError, folder, "not a valid index", "re-download")


def test_cached_repo_with_missing_revision(tmp_path):
    from support.checkpoints import write_hf_cache

    src = write_hf_model_folder(tmp_path / "src", tiny_model_tensors())
    write_hf_cache(tmp_path / "cache", "org/a", src, commit="c" * 40)
    _raises(SourceNotFoundError, tmp_path / "cache" / "models--org--a", "'v2'", "refs: ['main']",
            revision="v2")


def test_every_error_is_a_wwspectral_error():
    for exc in (CheckpointError, NoWeightsError, SourceNotFoundError, UnsafeCheckpointError, UnsupportedDtypeError):
        assert issubclass(exc, WWSpectralError)


def test_file_shrunk_after_open_is_one_typed_error_for_every_read(tmp_path):
    """A file cut short after its header was read: read, read_rows and raw each refuse it in one line (a memory
    map read past the end of a file would kill the process instead)."""
    from ww_spectral.readers.safetensors import SafetensorsReader

    stack = np.arange(4 * 8 * 6, dtype=np.float32).reshape(4, 8, 6)
    path = write_safetensors(tmp_path / "m.safetensors", {"experts.up_proj": stack})
    reader = SafetensorsReader(path)
    np.testing.assert_array_equal(reader.read_rows("experts.up_proj", 1, 3), stack[1:3])
    path.write_bytes(path.read_bytes()[:-8 * 6 * 4])  # the last expert is gone
    np.testing.assert_array_equal(reader.read_rows("experts.up_proj", 0, 3), stack[:3])  # still on disk
    for read in (lambda: reader.read("experts.up_proj"), lambda: reader.read_rows("experts.up_proj", 2, 4),
                 lambda: reader.raw("experts.up_proj")):
        with pytest.raises(CheckpointError, match=r"truncated file: tensor 'experts.up_proj' needs bytes") as info:
            read()
        assert "re-download it" in str(info.value) and "\n" not in str(info.value)
    reader.close()
