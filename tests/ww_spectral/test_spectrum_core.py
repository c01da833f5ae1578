"""Eigenvalues of the smaller Gram matrix against planted singular values, every backend/precision and both
CPU eigensolvers of the numpy backend (?syevd, and the two-stage reduction of ww_spectral/lapack2stage.py)."""

from __future__ import annotations

import numpy as np
import pytest
from support.planted_models import matrix_with_singular_values
from threadpoolctl import threadpool_limits

from ww_spectral import lapack2stage, spectrum
from ww_spectral.layers import eigenvalue_scale, layer_matrices, plan_layer
from ww_spectral.records import AnalysisOptions, TensorInfo
from ww_spectral.spectrum import NonFiniteSpectrumError, eigenvalues, gram, layer_spectrum, noise_floor


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


@pytest.mark.parametrize("lower", [False, True])
def test_gram_is_the_smaller_side_upper_or_lower_triangle(lower):
    rng = np.random.default_rng(1)
    for W in (rng.standard_normal((50, 20)), rng.standard_normal((20, 50)), np.asfortranarray(rng.standard_normal((50, 20)))):
        G = gram(W, precision="float64", lower=lower)
        ref = W.T @ W if W.shape[1] <= W.shape[0] else W @ W.T
        assert G.shape == ref.shape and G.flags.f_contiguous
        idx = np.tril_indices(G.shape[0]) if lower else np.triu_indices(G.shape[0])
        np.testing.assert_allclose(G[idx], ref[idx], rtol=1e-12, atol=1e-12)


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


def _two_stage_or_skip(dtype):
    routines = lapack2stage.find(dtype)
    if routines is None:
        pytest.skip("this scipy's LAPACK has no ?sytrd_sy2sb/?sytrd_sb2st: ?syevd is used throughout")
    return routines


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(400, 300), (300, 400), (50, 40)])  # m above and below the band width KD
def test_two_stage_matches_evd_and_the_planted_spectrum(precision, shape):
    dtype = np.float32 if precision == "float32" else np.float64
    _two_stage_or_skip(dtype)
    rng = np.random.default_rng(5)
    m = min(shape)
    s = np.sqrt(np.sort(rng.pareto(2.0, m) + 0.1))  # heavy-tailed planted spectrum s**2
    W = matrix_with_singular_values(rng, *shape, s).astype(dtype)
    at = m * m * np.dtype(dtype).itemsize  # the threshold lowered to this Gram's size: two-stage
    assert spectrum._two_stage(m, dtype, at) is not None and spectrum._two_stage(m, dtype, at + 1) is None
    fast = eigenvalues(W, precision=precision, two_stage_min_bytes=at)
    evd = eigenvalues(W, precision=precision, two_stage_min_bytes=at + 1)
    assert fast.dtype == np.float64 and fast.shape == (m,) and np.all(np.diff(fast) >= 0) and fast.min() >= 0
    floor = noise_floor(evd[-1], m, precision)
    np.testing.assert_allclose(fast, evd, rtol=0, atol=floor)
    np.testing.assert_allclose(fast, np.sort(s.astype(dtype).astype(np.float64) ** 2), rtol=0, atol=floor)
    assert np.array_equal(fast, eigenvalues(W, precision=precision, two_stage_min_bytes=at))  # same bits


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 2, 3, lapack2stage.KD, lapack2stage.KD + 1, lapack2stage.KD + 2, 150])
@pytest.mark.parametrize("lower", [False, True])
def test_two_stage_reads_only_the_named_triangle(dtype, m, lower):
    routines = _two_stage_or_skip(dtype)
    rng = np.random.default_rng(m)
    X = rng.standard_normal((m, m + 3))
    G = X @ X.T
    ref = np.linalg.eigvalsh(G)
    A = np.asfortranarray(G, dtype=dtype)
    A[np.triu_indices(m, 1) if lower else np.tril_indices(m, -1)] = np.nan  # the other triangle: never read
    ev = lapack2stage.eigvalsh(routines, A, lower=lower)
    assert ev.dtype == dtype and np.all(np.diff(ev) >= 0)
    np.testing.assert_allclose(ev, ref, rtol=0, atol=noise_floor(ref[-1], m, "float32" if dtype == np.float32 else "float64"))


def test_missing_two_stage_routines_fall_back_to_evd():
    assert lapack2stage.find(np.float32, prefixes=("no_such_lapack_",)) is None
    assert lapack2stage.find(np.int32) is None
    assert spectrum._two_stage(4096, np.float32, None) is None and spectrum._two_stage(1, np.float64, 0) is None
    rng = np.random.default_rng(6)
    s = np.linspace(0.5, 2.0, 90)
    W = matrix_with_singular_values(rng, 120, 90, s)
    ev = eigenvalues(W, precision="float64", two_stage_min_bytes=None)  # ?syevd, whatever the size
    np.testing.assert_allclose(ev, np.sort(s**2), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="square Fortran-ordered"):
        lapack2stage.eigvalsh(_two_stage_or_skip(np.float64), np.ones((3, 3)), lower=True)


def test_two_stage_path_still_rejects_non_finite_grams():
    _two_stage_or_skip(np.float32)
    W = np.ones((30, 20), np.float32)
    W[3, 4] = np.nan
    with pytest.raises(NonFiniteSpectrumError):
        eigenvalues(W, two_stage_min_bytes=0)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(120, 90), (90, 120), (7, 1), (2, 2)])
def test_kept_reduction_gives_the_top_eigenpairs(precision, shape):
    # planted singular values s: the Gram's eigenvalues are s^2, its top eigenvectors the top singular vectors
    rng = np.random.default_rng(11)
    m = min(shape)
    s = np.linspace(0.5, 3.0, m)
    W = matrix_with_singular_values(rng, *shape, s).astype(precision)
    ev, reduction = spectrum.eigenvalues_and_reduction(W, precision=precision)
    floor = noise_floor(s[-1] ** 2, m, precision)
    np.testing.assert_allclose(ev, np.sort(s**2), rtol=0, atol=floor)
    np.testing.assert_allclose(ev, eigenvalues(W, precision=precision), rtol=0, atol=floor)
    k = min(3, m)
    vals, vecs = reduction.top_eigenpairs(k)
    np.testing.assert_allclose(vals, np.sort(s**2)[::-1][:k], rtol=0, atol=floor)
    A = W.astype(np.float64)
    G = A.T @ A if shape[1] <= shape[0] else A @ A.T
    assert vecs.shape == (m, k)
    np.testing.assert_allclose(G @ vecs, vecs * vals, rtol=0, atol=10 * floor)
    np.testing.assert_allclose(vecs.T.astype(np.float64) @ vecs, np.eye(k), rtol=0, atol=1e-5)


def test_no_reduction_is_kept_on_the_two_stage_path(monkeypatch):
    _two_stage_or_skip(np.float32)
    monkeypatch.setattr(spectrum, "TWO_STAGE_MIN_BYTES", 0)
    W = np.random.default_rng(3).standard_normal((40, 30)).astype(np.float32)
    ev, reduction = spectrum.eigenvalues_and_reduction(W)
    assert reduction is None and ev.size == 30


def test_an_empty_matrix_has_an_empty_spectrum_quietly():
    # OpenBLAS reports a rejected zero leading dimension with printf (C stdio, flushed at exit), so the check runs
    # in a child process and reads everything it wrote
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from ww_spectral.spectrum import eigenvalues, eigenvalues_and_reduction, gram\n"
            "for shape in [(0, 3), (5, 0), (0, 0)]:\n"
            "    W = np.zeros(shape, np.float32)\n"
            "    assert gram(W).shape == (0, 0)\n"
            "    assert eigenvalues(W).size == 0 and eigenvalues_and_reduction(W)[0].size == 0\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", (done.stdout, done.stderr)
