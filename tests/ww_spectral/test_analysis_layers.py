"""plan_layer / layer_matrices: which tensors are layers, from headers alone (WW 0.7.7's rules)."""

from __future__ import annotations

import numpy as np
import pytest

from ww_spectral.layers import eigenvalue_scale, layer_matrices, plan_layer
from ww_spectral.records import AnalysisOptions, TensorInfo

OPTS = AnalysisOptions()


def _plan(shape, dtype="F32", **opts):
    info = TensorInfo(name="m.layers.0.w.weight", shape=tuple(shape), dtype=dtype, file=None, nbytes=0)
    return plan_layer(info, 7, AnalysisOptions(**opts) if opts else OPTS)


def test_dense_and_embedding():
    p = _plan((4096, 11008))
    assert p.analysed and p.layer_type == "dense" and (p.N, p.M, p.rf, p.num_evals) == (11008, 4096, 1, 4096)
    assert abs(p.Q - 11008 / 4096) < 1e-12 and p.longname == "m.layers.0.w" and p.layer_id == 7
    assert p.est_bytes >= 8 * 4096 * 11008
    assert _plan((32000, 512)).analysed  # embeddings are dense layers
    big = _plan((50257, 768), max_N=50000)
    assert big.skip_code == "size_filter" and "N <= 50000" in big.skip_reason


def test_conv2d_and_ww_compat_swap():
    p = _plan((64, 32, 3, 3))
    assert (p.layer_type, p.N, p.M, p.rf, p.num_evals) == ("conv2d", 64, 32, 9, 288)
    even = _plan((24, 48, 2, 2))
    assert (even.N, even.M, even.Q) == (48, 24, 2.0)
    compat = _plan((24, 48, 2, 2), ww_compat_conv_nm=True)
    assert (compat.N, compat.M, compat.num_evals) == (24, 48, 96)  # WW's swapped report; same eigenvalues
    assert eigenvalue_scale(p) == 0.5 and eigenvalue_scale(_plan((8, 8))) == 1.0


@pytest.mark.parametrize("shape,code", [((10,), "not_matrix"), ((2, 3, 4), "not_matrix"), ((), "not_matrix"),
                                        ((0, 10), "empty"), ((1, 100), "size_filter"), ((100, 7), "size_filter"),
                                        ((20000, 16000), "size_filter")])
def test_skips(shape, code):
    p = _plan(shape)
    assert not p.analysed and p.skip_code == code and p.skip_reason


@pytest.mark.parametrize("dtype", ["F8_E4M3", "F8_E5M2", "I8", "I32", "U8", "XYZ"])
def test_unsupported_dtypes_are_skipped(dtype):
    p = _plan((64, 64), dtype)
    assert p.skip_code == "unsupported_dtype" and dtype in p.skip_reason


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16", "F64"])
def test_float_dtypes_are_analysed(dtype):
    assert _plan((64, 64), dtype).analysed


def test_layer_matrices():
    a = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    mats = layer_matrices(_plan(a.shape), a)
    assert len(mats) == 4 and all(m.shape == (2, 3) for m in mats)
    np.testing.assert_array_equal(mats[1], a[:, :, 0, 1])
    d = np.ones((5, 9), np.float32)
    assert layer_matrices(_plan(d.shape), d)[0] is d or np.shares_memory(layer_matrices(_plan(d.shape), d)[0], d)
    with pytest.raises(ValueError):
        layer_matrices(_plan((5, 9)), np.ones((9, 5)))
