"""Eigenvalues of the smaller Gram matrix against planted singular values, every backend/precision."""

from __future__ import annotations

import numpy as np
import pytest
from support.planted_models import matrix_with_singular_values
from threadpoolctl import threadpool_limits

from ww_spectral.layers import eigenvalue_scale, layer_matrices, plan_layer
from ww_spectral.records import AnalysisOptions, TensorInfo
from ww_spectral.spectrum import eigenvalues, gram, layer_spectrum, noise_floor


@pytest.fixture(autouse=True)
def _one_thread():
    with threadpool_limits(1):
        yield


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("precision,tol", [("float32", 2e-6), ("float64", 1e-13)])
@pytest.mark.parametrize("shape", [(120, 80), (80, 120), (64, 64)])
def test_eigenvalues_are_squared_singular_values(backend, precision, tol, shape):
    rng = np.random.default_rng(0)
    s = np.linspace(0.5, 3.0, min(shape))
    W = matrix_with_singular_values(rng, *shape, s)
    ev = eigenvalues(W.astype(np.float32) if precision == "float32" else W, backend=backend, precision=precision)
    assert ev.dtype == np.float64 and ev.shape == (min(shape),)
    assert np.all(np.diff(ev) >= 0) and ev.min() >= 0
    np.testing.assert_allclose(ev, np.sort(s**2), rtol=0, atol=tol * 9.0)


def test_gram_is_the_smaller_side_upper_triangle():
    rng = np.random.default_rng(1)
    for W in (rng.standard_normal((50, 20)), rng.standard_normal((20, 50)), np.asfortranarray(rng.standard_normal((50, 20)))):
        G = gram(W, precision="float64")
        ref = W.T @ W if W.shape[1] <= W.shape[0] else W @ W.T
        assert G.shape == ref.shape
        iu = np.triu_indices(G.shape[0])
        np.testing.assert_allclose(G[iu], ref[iu], rtol=1e-12, atol=1e-12)


def test_non_contiguous_slices_and_conv_scale():
    rng = np.random.default_rng(2)
    K = rng.standard_normal((12, 20, 3, 3)).astype(np.float32)
    plan = plan_layer(TensorInfo("c.weight", K.shape, "F32", None, K.nbytes), 0, AnalysisOptions())
    mats = layer_matrices(plan, K)
    assert len(mats) == 9 and mats[0].shape == (12, 20)
    slices = layer_spectrum(mats, scale=eigenvalue_scale(plan), precision="float64")
    pooled = np.sort(np.concatenate(slices))
    ref = np.sort(np.concatenate([np.linalg.svd(K[:, :, i, j].astype(np.float64), compute_uv=False) ** 2
                                  for i in range(3) for j in range(3)])) * 0.5
    np.testing.assert_allclose(pooled, ref, rtol=1e-10)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_zero_eigenvalues_of_rank_deficient_matrix_stay_under_the_noise_floor(precision):
    rng = np.random.default_rng(3)
    W = rng.standard_normal((300, 30)) @ rng.standard_normal((30, 200))  # rank 30
    ev = eigenvalues(W, precision=precision)
    floor = noise_floor(ev.max(), 200, precision)
    assert np.all(ev[:170] <= floor)
    assert np.all(ev[170:] > 100 * floor)


@pytest.mark.skipif("not __import__('torch').cuda.is_available()")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(4)
    W = rng.standard_normal((300, 200))
    np.testing.assert_allclose(eigenvalues(W, backend="torch", device="cuda", precision="float64"),
                               eigenvalues(W, precision="float64"), rtol=1e-9, atol=1e-9)
