"""Eigenvalues of W^T W on the smaller side (the ESD), unnormalised, as WeightWatcher computes them.

W (a x b) -> the eigenvalues of the min(a,b) x min(a,b) Gram matrix, ascending, float64, clipped at 0
(squares of singular values are never negative; eigensolver round-off can be). The Gram matrix is one
symmetric rank-k update (BLAS ?syrk computes one triangle: half the flops of W^T @ W), then a symmetric
eigensolver that never forms eigenvectors.

Backends:
- "numpy": scipy BLAS ?syrk, then the eigensolver rule below (_two_stage);
- "torch": CPU: the same ?syrk, then torch.linalg.eigvalsh (MKL ?syevd);
  CUDA (device="cuda"): matmul + eigvalsh on the GPU.
Precision: "float32" (default; Gram and eigensolve in float32, about 1e-7 * lambda_max absolute error)
or "float64" (about 1e-16 * lambda_max).

The eigensolver rule (numpy backend; one place: _two_stage). Gram matrices of TWO_STAGE_MIN_BYTES
(40 MiB: m >= 3239 in float32, m >= 2291 in float64) and more take LAPACK's two-stage reduction
(ww_spectral/lapack2stage.py: ?sytrd_sy2sb + ?sytrd_sb2st + ?sterf, on the Gram's lower triangle); smaller
ones, or where scipy's LAPACK lacks those routines, the steps of LAPACK's ?syevd with jobz='N' called
directly (blocked ?sytrd + ?sterf, through scipy.linalg.lapack: `_one_stage`). The one-stage ?sytrd streams the trailing matrix from memory once per
column: cheap while the matrix fits in the last-level cache, slow above it; the crossover sits near
32-36 MiB here (a machine with a smaller cache would gain from a lower threshold). CPU ms of one
eigensolve, one BLAS thread, best of 3 interleaved, AMD EPYC 2 cores with 32 MiB L3, scipy 1.17 /
OpenBLAS 0.3.30, torch 2.13 / MKL, machine shared (load 4-6); heavy-tailed weights
(benchmarks/bench_big_model.py --eigensolvers --repeat 3):
  float32  m:     2048   3072   3328   3584   4096
           evd     258   1009   1370   1642   2615
           2-stage 304    971   1080   1273   1891
           torch   313    988   1172   1335   1981
  float64  m:     1536   2048   2304   2560   4096
           evd     190    504    875   1369   5844
           2-stage 234    498    709    943   3222
           torch   242    567    772   1056   3569
The paths agree within noise_floor (largest difference 2.9e-6 * lambda_max in float32, 5.8e-15 in
float64); each is deterministic (same input, same bits on one host) and runs on the BLAS threads the
caller allows (threadpoolctl limits the same OpenBLAS). Below the threshold results are ?syevd's (and
scipy.linalg.eigh's), bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import blas, lapack

from . import lapack2stage

_DTYPES = {"float32": np.float32, "float64": np.float64}
TWO_STAGE_MIN_BYTES = 40 * 2**20  # Gram matrices this large or larger: two-stage (see the docstring)


class NonFiniteSpectrumError(ValueError):
    """W^T W has NaN/Inf entries: NaN/Inf weights, or overflow of the Gram products in float32."""


def gram(W: np.ndarray, *, precision: str = "float32", lower: bool = False) -> np.ndarray:
    """The smaller Gram matrix of W (a x b): W^T W (b x b) if b <= a else W W^T (a x a).

    Only the upper triangle (lower=True: the lower one) is meaningful (?syrk output); returned in Fortran
    order, shape (m, m), dtype float32/float64 by precision.
    """
    dtype = _DTYPES[precision]
    A = np.asarray(W, dtype=dtype)
    if A.ndim != 2:
        raise ValueError(f"gram needs a 2-D matrix, got shape {A.shape}")
    syrk = blas.ssyrk if dtype == np.float32 else blas.dsyrk
    # Hand BLAS a Fortran-ordered view without copying: A C-ordered (a x b) is X = A^T (b x a) F-ordered.
    if A.flags.c_contiguous:
        X, xt = A.T, True
    else:
        X, xt = np.asfortranarray(A), False
    rows, cols = A.shape
    if A.size == 0:  # min(rows, cols) = 0: an empty Gram (BLAS would reject the zero leading dimension, aloud)
        return np.zeros((0, 0), dtype=dtype, order="F")
    want_small_cols = cols <= rows  # W^T W (cols x cols) is the smaller Gram
    # X = A^T: A^T A = X X^T (trans=0), A A^T = X^T X (trans=1); X = A: the other way round.
    trans = int(want_small_cols != xt)
    return syrk(1.0, X, trans=trans, lower=int(lower))


def _finite_gram(W: np.ndarray, precision: str, lower: bool) -> np.ndarray:
    """gram(W), refused with NonFiniteSpectrumError when it holds NaN/Inf. Checking the m x m Gram (not the
    n x m weights) is cheaper and also catches overflow; LAPACK must never see NaN (some ?syevd builds loop
    on it)."""
    G = gram(W, precision=precision, lower=lower)
    if not np.isfinite(G).all():
        raise NonFiniteSpectrumError("W^T W has NaN/Inf entries")
    return G


def _two_stage(m: int, dtype: type, min_bytes: int | None) -> lapack2stage.Routines | None:
    """THE eigensolver rule: LAPACK's two-stage routines for an m x m Gram of this dtype, or None for one-stage."""
    if min_bytes is None or m < 2 or m * m * np.dtype(dtype).itemsize < min_bytes:
        return None
    return lapack2stage.find(dtype)


@dataclass(frozen=True, eq=False)
class Tridiagonal:
    """A Gram matrix G (m x m) reduced by ?sytrd on its lower triangle, G = Q T Q^T, kept to give eigenvectors
    after its eigenvalues: reflectors (m x m, F-ordered; Householder vectors below the subdiagonal), tau (m - 1),
    d, e (T's diagonal, m, and off-diagonal, m - 1). Memory: one m x m matrix."""

    reflectors: np.ndarray
    tau: np.ndarray
    d: np.ndarray
    e: np.ndarray

    def top_eigenpairs(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(the k largest eigenvalues, descending, float64; their unit eigenvectors, m x k, G's dtype): bisection
        (?stebz) and inverse iteration (?stein) on T, then Q applied (?ormqr on the reflectors, as ?ormtr does for
        a lower reduction). O(m^2 k) flops instead of another reduction."""
        m = self.d.size
        k = max(0, min(int(k), m))
        if m <= 1 or k == 0:
            return np.asarray(self.d[m - k:], np.float64)[::-1].copy(), np.eye(m, k, dtype=self.d.dtype)
        stebz, stein, ormqr = lapack.get_lapack_funcs(("stebz", "stein", "ormqr"), (self.d,))
        found, w, iblock, isplit, info = stebz(self.d, self.e, 2, 0.0, 0.0, m - k + 1, m, 0.0, b"B")
        if info != 0 or found != k:
            raise np.linalg.LinAlgError(f"?stebz: {found} of the {k} largest eigenvalues (info={info})")
        z, info = stein(self.d, self.e, w[:k], iblock, isplit)  # iblock: m long, its first k used
        if info != 0:
            raise np.linalg.LinAlgError(f"?stein: {info} eigenvectors did not converge")
        z = np.asfortranarray(z)
        q, _, info = ormqr(b"L", b"N", self.reflectors[1:, :m - 1], self.tau[:m - 1], z[1:, :],
                           lwork=64 * k + 65 * 64)
        if info != 0:  # an illegal argument: a bug here, never the input
            raise RuntimeError(f"?ormqr rejected argument {-info}")
        z[1:, :] = q
        order = np.argsort(w[:k], kind="stable")[::-1]
        return np.asarray(w[:k], np.float64)[order], z[:, order]


def _one_stage(G: np.ndarray, *, lower: bool, keep: bool = False) -> tuple[np.ndarray, Tridiagonal | None]:
    """Eigenvalues of the Gram G (F-ordered, the triangle named by `lower` set; overwritten), ascending: ?sytrd
    (blocked, with its optimal workspace) then ?sterf - the steps of ?syevd(jobz='N'), the same bits, without
    its extra passes and scipy.linalg.eigh's wrapping (m = 384 float32: 3.6 ms instead of 4.1); keep (lower
    only): also the reduction, for eigenvectors later."""
    m = G.shape[0]
    if m <= 1:  # nothing to reduce (and scipy's ?sterf wrapper refuses an empty off-diagonal)
        ev = np.array(G[:m, :m].diagonal())
        return ev, Tridiagonal(G, np.empty(0, G.dtype), ev.copy(), np.empty(0, G.dtype)) if keep else None
    sytrd, sytrd_lwork, sterf = lapack.get_lapack_funcs(("sytrd", "sytrd_lwork", "sterf"), (G,))
    lwork, _ = sytrd_lwork(m, lower=int(lower))
    reflectors, d, e, tau, info = sytrd(G, lower=int(lower), lwork=max(1, int(lwork)), overwrite_a=1)
    if info < 0:  # an illegal argument: a bug here, never the input
        raise RuntimeError(f"?sytrd rejected argument {-info}")
    kept = Tridiagonal(reflectors, tau, d.copy(), e.copy()) if keep and lower else None
    ev, info = sterf(d, e)
    if info != 0:
        raise np.linalg.LinAlgError(f"?sterf: {info} off-diagonal elements did not converge")
    return ev, kept


def _eigvalsh_numpy(
    G: np.ndarray, *, lower: bool = False, two_stage_min_bytes: int | None = TWO_STAGE_MIN_BYTES
) -> np.ndarray:
    """Eigenvalues of the Gram G (F-ordered, the triangle named by `lower` set; overwritten), by the rule."""
    routines = _two_stage(G.shape[0], G.dtype, two_stage_min_bytes)
    if routines is not None:
        return lapack2stage.eigvalsh(routines, G, lower=lower)
    return _one_stage(G, lower=lower)[0]


def _eigvalsh_torch(G: np.ndarray) -> np.ndarray:
    import torch

    # G is F-ordered with the upper triangle set; its transpose is C-ordered with the lower one set.
    return torch.linalg.eigvalsh(torch.from_numpy(np.ascontiguousarray(G.T)), UPLO="L").numpy()


def _eigenvalues_cuda(W: np.ndarray, precision: str) -> np.ndarray:
    import torch

    dtype = torch.float32 if precision == "float32" else torch.float64
    A = torch.from_numpy(np.ascontiguousarray(W)).to("cuda", dtype=dtype)
    G = A.T @ A if A.shape[1] <= A.shape[0] else A @ A.T
    if not bool(torch.isfinite(G).all()):
        raise NonFiniteSpectrumError("W^T W has NaN/Inf entries")
    return torch.linalg.eigvalsh(G).cpu().numpy()


def eigenvalues(
    W: np.ndarray,
    *,
    backend: str = "numpy",
    precision: str = "float32",
    device: str = "cpu",
    two_stage_min_bytes: int | None = TWO_STAGE_MIN_BYTES,
) -> np.ndarray:
    """Eigenvalues of the smaller Gram matrix of W (a x b): min(a, b) values, ascending, float64, >= 0.

    two_stage_min_bytes: the numpy backend's eigensolver threshold (module docstring); None: one-stage always.
    """
    if backend == "torch" and device == "cuda":
        ev = _eigenvalues_cuda(W, precision)
    else:
        # The two-stage reduction is faster on the lower triangle (4096, float32: 1.9 s vs 2.3 s upper).
        lower = backend == "numpy" and _two_stage(min(np.shape(W), default=0), _DTYPES[precision],
                                                  two_stage_min_bytes) is not None
        G = _finite_gram(W, precision, lower)
        if backend == "torch":
            ev = _eigvalsh_torch(G)
        else:
            ev = _eigvalsh_numpy(G, lower=lower, two_stage_min_bytes=two_stage_min_bytes)
    return _ascending(ev)


def _ascending(ev: np.ndarray) -> np.ndarray:
    """Computed eigenvalues of a Gram matrix as returned: float64, clipped at 0 (round-off), ascending."""
    ev = np.asarray(ev, dtype=np.float64)
    np.maximum(ev, 0.0, out=ev)
    ev.sort()
    return ev


def eigenvalues_and_reduction(W: np.ndarray, *, precision: str = "float32") -> tuple[np.ndarray, Tridiagonal | None]:
    """eigenvalues(W) on the numpy backend and, where its one-stage path applies (Grams under
    TWO_STAGE_MIN_BYTES), the reduction to tridiagonal form, kept for Tridiagonal.top_eigenpairs (eigenvectors
    of the same Gram without a second reduction); None on the two-stage path. The Gram's lower triangle is
    reduced (eigenvalues() reduces the upper one below the threshold: the two agree within noise_floor)."""
    if _two_stage(min(np.shape(W), default=0), _DTYPES[precision], TWO_STAGE_MIN_BYTES) is not None:
        return eigenvalues(W, precision=precision), None
    G = _finite_gram(W, precision, True)
    ev, kept = _one_stage(G, lower=True, keep=True)
    return _ascending(ev), kept


def layer_spectrum(
    mats: list[np.ndarray],
    *,
    scale: float = 1.0,
    backend: str = "numpy",
    precision: str = "float32",
    device: str = "cpu",
) -> list[np.ndarray]:
    """Eigenvalues of every slice of one layer, each multiplied by `scale` (0.5 for conv2d, as WW does).

    mats: the layer's matrices (one for dense, kh*kw for conv2d). Returns one ascending float64 array
    per slice; pool them with np.sort(np.concatenate(...)).
    """
    out = []
    for W in mats:
        ev = eigenvalues(W, backend=backend, precision=precision, device=device)
        if scale != 1.0:
            ev *= scale
        out.append(ev)
    return out


def noise_floor(lambda_max: float, m: int, precision: str) -> float:
    """Absolute accuracy of computed eigenvalues of an m x m Gram matrix: below this they are round-off.

    Backward-stable Gram + eigensolve: |error| <~ c * eps * sqrt(m) * lambda_max; c = 8 is a margin
    measured on exactly rank-deficient matrices (their zero eigenvalues land well inside it).
    """
    eps = float(np.finfo(_DTYPES[precision]).eps)
    return 8.0 * eps * float(np.sqrt(max(m, 1))) * float(lambda_max)
