"""Eigenvalues of W^T W on the smaller side (the ESD), unnormalised, as WeightWatcher computes them.

W (a x b) -> the eigenvalues of the min(a,b) x min(a,b) Gram matrix, ascending, float64, clipped at 0
(squares of singular values are never negative; eigensolver round-off can be). The Gram matrix is one
symmetric rank-k update (BLAS ?syrk computes one triangle: half the flops of W^T @ W), then a symmetric
eigensolver that never forms eigenvectors.

Backends:
- "numpy": scipy BLAS ?syrk + LAPACK ?syevd (scipy.linalg.eigh(driver="evd", eigvals_only=True));
- "torch": CPU: the same ?syrk, then torch.linalg.eigvalsh (fastest CPU eigensolver measured here);
  CUDA (device="cuda"): matmul + eigvalsh on the GPU.
Precision: "float32" (default; Gram and eigensolve in float32, about 1e-7 * lambda_max absolute error)
or "float64" (about 1e-16 * lambda_max).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.linalg import blas

_DTYPES = {"float32": np.float32, "float64": np.float64}


class NonFiniteSpectrumError(ValueError):
    """W^T W has NaN/Inf entries: NaN/Inf weights, or overflow of the Gram products in float32."""


def gram(W: np.ndarray, *, precision: str = "float32") -> np.ndarray:
    """The smaller Gram matrix of W (a x b): W^T W (b x b) if b <= a else W W^T (a x a).

    Only the upper triangle is meaningful (?syrk output); returned in Fortran order, shape (m, m),
    dtype float32/float64 by precision.
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
    want_small_cols = cols <= rows  # W^T W (cols x cols) is the smaller Gram
    # X = A^T: A^T A = X X^T (trans=0), A A^T = X^T X (trans=1); X = A: the other way round.
    trans = int(want_small_cols != xt)
    return syrk(1.0, X, trans=trans, lower=0)


def _eigvalsh_numpy(G: np.ndarray) -> np.ndarray:
    return scipy.linalg.eigh(
        G, eigvals_only=True, driver="evd", lower=False, overwrite_a=True, check_finite=False
    )


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
    W: np.ndarray, *, backend: str = "numpy", precision: str = "float32", device: str = "cpu"
) -> np.ndarray:
    """Eigenvalues of the smaller Gram matrix of W (a x b): min(a, b) values, ascending, float64, >= 0."""
    if backend == "torch" and device == "cuda":
        ev = _eigenvalues_cuda(W, precision)
    else:
        G = gram(W, precision=precision)
        # Checking the m x m Gram (not the n x m weights) is cheaper and also catches overflow; LAPACK
        # must never see NaN (some ?syevd builds loop on it).
        if not np.isfinite(G).all():
            raise NonFiniteSpectrumError("W^T W has NaN/Inf entries")
        ev = _eigvalsh_torch(G) if backend == "torch" else _eigvalsh_numpy(G)
    ev = np.asarray(ev, dtype=np.float64)
    np.maximum(ev, 0.0, out=ev)
    ev.sort()
    return ev


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
