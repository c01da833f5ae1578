"""GGUF: files written and quantised by the `gguf` package read back one tensor at a time, equal to the
package's own reader + dequantiser; hostile headers fail fast with typed errors; names map to roles."""

from __future__ import annotations

import struct

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402
from support.planted_models import heavy_tailed  # noqa: E402

from ww_spectral.errors import CheckpointError, UnsupportedDtypeError  # noqa: E402
from ww_spectral.fit import fit_power_law  # noqa: E402
from ww_spectral.readers.gguf import GGUFReader, hf_name, parse_gguf_header  # noqa: E402
from ww_spectral.roles import natural_order, tensor_role  # noqa: E402
from ww_spectral.spectrum import eigenvalues  # noqa: E402

TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.TQ2_0, Q.MXFP4]
# The gguf package dequantises these but cannot quantise them: their blocks are random bytes with sane
# float16 scale fields (byte offsets of d / dmin in each block, from ggml's block_q*_K structs).
RANDOM_BLOCK_TYPES = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,),
                      Q.IQ4_NL: (0,), Q.IQ4_XS: (0,)}


def random_blocks(rng, rows: int, cols: int, qtype) -> np.ndarray:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    for offset in RANDOM_BLOCK_TYPES[qtype]:
        data[..., offset:offset + 2] = np.frombuffer(np.float16(0.01).tobytes(), dtype=np.uint8)
    return data.reshape(rows, -1)


def write_gguf(path, tensors: dict[str, tuple[np.ndarray, Q]], *, arch="llama", metadata=None) -> None:
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(2)
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(200)])  # summarised, not kept
    for key, value in (metadata or {}).items():
        w.add_string(key, value)
    for name, (values, qtype) in tensors.items():
        if values.dtype == np.uint8:
            w.add_tensor(name, values, raw_dtype=qtype)
        elif qtype in (Q.F32, Q.F16):
            w.add_tensor(name, values.astype(np.float32 if qtype == Q.F32 else np.float16))
        else:
            w.add_tensor(name, quantize(values.astype(np.float32), qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_every_type_equals_the_gguf_package(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {f"blk.{i}.ffn_up.weight": (rng.standard_normal((32, 512)).astype(np.float32), t)
               for i, t in enumerate(TYPES)}
    tensors.update({f"blk.{i + 20}.ffn_down.weight": (random_blocks(rng, 16, 512, t), t)
                    for i, t in enumerate(RANDOM_BLOCK_TYPES)})
    tensors["output_norm.weight"] = (np.ones(512, np.float32), Q.F32)
    path = tmp_path / "model.gguf"
    write_gguf(path, tensors)
    theirs = gguf.GGUFReader(str(path))
    ours = GGUFReader(path)
    assert ours.architecture == "llama"
    assert ours.metadata["tokenizer.ggml.tokens"] == {"array_of": 8, "length": 200}
    infos = {i.name: i for i in ours.tensors()}
    for t in theirs.tensors:
        expected = dequantize(t.data, t.tensor_type).reshape(infos[t.name].shape)
        got = ours.read(t.name)
        assert got.dtype == np.float32 and got.shape == tuple(reversed([int(d) for d in t.shape]))
        assert np.isfinite(got).all()
        np.testing.assert_array_equal(got, expected.astype(np.float32))
        qtype = tensors[t.name][1]
        assert infos[t.name].dtype == ({Q.F32: "F32", Q.F16: "F16", Q.BF16: "BF16"}.get(qtype) or f"GGUF_{qtype.name}")
    assert ours.read("blk.0.ffn_up.weight").shape == (32, 512)  # numpy order: (out, in)
    ours.close()


def test_names_map_to_hf_names_roles_and_natural_order():
    assert hf_name("blk.3.attn_q.weight") == "model.layers.3.self_attn.q_proj.weight"
    assert hf_name("blk.3.ffn_down_exps.weight") == "model.layers.3.mlp.experts.down_proj.weight"
    assert hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_name("output.weight") == "lm_head.weight"
    assert hf_name("mystery.weight") == "mystery.weight"
    for name in ("blk.3.attn_q.weight", "blk.10.ffn_gate.weight", "output.weight"):
        assert tensor_role(name).as_dict() == tensor_role(hf_name(name)).as_dict()
    assert natural_order(["blk.10.attn_q.weight", "blk.2.attn_q.weight"])[0] == "blk.2.attn_q.weight"


def header(n_tensors=1, n_kv=0, version=3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def gstr(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def tensor_info(name=b"w", dims=(32, 4), ggml_type=0, offset=0) -> bytes:
    return gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + \
        struct.pack("<IQ", ggml_type, offset)


def padded(blob: bytes, data: bytes = b"") -> bytes:
    return blob + b"\0" * (-len(blob) % 32) + data


HOSTILE = {
    "not gguf": b"GGML" + b"\0" * 40,
    "version 1": header(version=1) + b"\0" * 40,
    "billions of tensors": header(n_tensors=2 ** 40) + b"\0" * 40,
    "billions of keys": header(n_tensors=0, n_kv=2 ** 33) + b"\0" * 40,
    "huge key length": header(n_tensors=0, n_kv=1) + struct.pack("<Q", 2 ** 62) + b"\0" * 40,
    "huge array": header(n_tensors=0, n_kv=1) + gstr(b"k") + struct.pack("<IIQ", 9, 4, 2 ** 50) + b"\0" * 40,
    "nested arrays": header(n_tensors=0, n_kv=1) + gstr(b"k") + struct.pack("<I", 9)
    + struct.pack("<IQ", 9, 1) * 5 + struct.pack("<IQ", 4, 0),
    "bad value type": header(n_tensors=0, n_kv=1) + gstr(b"k") + struct.pack("<I", 99) + b"\0" * 40,
    "too many dims": padded(header() + tensor_info(dims=(32, 1, 1, 1, 1)), b"\0" * 512),
    "huge dims": padded(header() + tensor_info(dims=(2 ** 32, 2 ** 32)), b"\0" * 512),
    "unknown type": padded(header() + tensor_info(ggml_type=77), b"\0" * 512),
    "past the end": padded(header() + tensor_info(), b"\0" * 100),
    "misaligned": padded(header() + tensor_info(dims=(8, 1), offset=4), b"\0" * 512),
    "bad block row": padded(header() + tensor_info(dims=(33, 4), ggml_type=8), b"\0" * 512),
    "duplicate names": padded(header(n_tensors=2) + tensor_info() + tensor_info(offset=512), b"\0" * 1024),
    "overlap": padded(header(n_tensors=2) + tensor_info() + tensor_info(name=b"v", offset=256), b"\0" * 1024),
    "truncated": header(n_tensors=1) + gstr(b"weight")[:6],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_headers_are_refused(tmp_path, case):
    path = tmp_path / "bad.gguf"
    path.write_bytes(HOSTILE[case])
    with pytest.raises(CheckpointError):
        GGUFReader(path)


def test_well_formed_minimal_file_parses():
    blob = padded(header(n_tensors=1, n_kv=1) + gstr(b"general.architecture") + struct.pack("<I", 8) + gstr(b"x")
                  + tensor_info(), np.arange(128, dtype=np.float32).tobytes())
    meta, tensors, start = parse_gguf_header(blob, path="mem")
    assert meta == {"general.architecture": "x"} and tensors[0].shape == (4, 32) and start % 32 == 0


def test_big_endian_and_integer_tensors_are_unsupported(tmp_path):
    path = tmp_path / "be.gguf"
    path.write_bytes(b"GGUF" + struct.pack(">IQQ", 3, 0, 0))
    with pytest.raises(UnsupportedDtypeError, match="big-endian"):
        GGUFReader(path)
    ok = tmp_path / "i32.gguf"
    ok.write_bytes(padded(header() + tensor_info(dims=(8, 1), ggml_type=26), b"\0" * 32))
    reader = GGUFReader(ok)
    with pytest.raises(UnsupportedDtypeError, match="I32"):
        reader.read("w")
    reader.close()


def alpha(w) -> float:
    return fit_power_law(eigenvalues(np.asarray(w, dtype=np.float32))).alpha


@pytest.mark.parametrize(("qtype", "tol"), [(Q.Q8_0, 0.05), (Q.Q5_1, 0.2), (Q.Q4_1, 0.35), (Q.Q4_0, 0.35)])
def test_quantised_heavy_tailed_model_keeps_alpha(tmp_path, qtype, tol):
    rng = np.random.default_rng(3)
    originals = {f"blk.{i}.ffn_down.weight": heavy_tailed(rng, 512, 256, alpha=a) for i, a in enumerate((2.5, 3.5, 4.5))}
    write_gguf(tmp_path / "m.gguf", {k: (v, qtype) for k, v in originals.items()})
    reader = GGUFReader(tmp_path / "m.gguf")
    deltas = [alpha(reader.read(name)) - alpha(w) for name, w in originals.items()]
    reader.close()
    print(f"gguf {qtype.name}: delta alpha {np.round(deltas, 4)}")
    assert max(abs(d) for d in deltas) < tol
