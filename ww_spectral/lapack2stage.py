"""Eigenvalues of a symmetric matrix by LAPACK's two-stage tridiagonal reduction, through ctypes.

scipy.linalg wraps only the one-stage drivers (?syevd, ?syevr, ...). Their reduction to tridiagonal form
(?sytrd) does half of its flops as matrix-vector products that stream the whole trailing matrix from memory
once per column: fast while the matrix fits in the last-level cache, memory-bound above it. The two-stage
reduction (LAPACK >= 3.7, what ?syevd_2stage does) first reduces to a band of half-width KD with
matrix-matrix products (?sytrd_sy2sb), then chases the band down to tridiagonal (?sytrd_sb2st, O(n^2 KD)
flops); ?sterf then gives the eigenvalues, the same last step as ?syevd with jobz='N'. Which path to take
for which size is decided in ww_spectral/spectrum.py, with the measured numbers.

The routines come from the LAPACK that scipy.linalg itself calls: dlsym on the handle of
scipy.linalg.cython_lapack's extension module searches that module and the libraries it links (in scipy's
wheels the bundled OpenBLAS, whose symbols carry a "scipy_" prefix). Integers are 32-bit, as in
cython_lapack's own signatures. It is the OpenBLAS that threadpoolctl limits, so a caller's BLAS thread
limit (one thread per layer worker) applies to this path too. Without the routines, find() gives None and
the caller keeps scipy's ?syevd.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import numpy as np

# Band half-width of the first stage. Measured on 4096 x 4096 Gram matrices, one thread (AMD EPYC, 32 MiB
# L3), lower triangle, CPU seconds: float32 KD 32 / 48 / 64 / 96 -> 2.20 / 2.02 / 1.92 / 1.93; float64 (upper)
# 4.4 / 4.1 / 4.1 / 4.1. LAPACK's own default (ilaenv2stage) is 32.
KD = 64
PREFIXES = ("scipy_", "")  # scipy's bundled OpenBLAS, then a LAPACK with the plain Fortran names

_INT = ctypes.c_int
_LEN = ctypes.c_size_t  # gfortran's hidden length argument of each CHARACTER argument, appended last


@dataclass(frozen=True)
class Routines:
    """?sytrd_sy2sb, ?sytrd_sb2st and ?sterf of one precision ("s" float32, "d" float64)."""

    prefix: str
    sy2sb: ctypes._CFuncPtr
    sb2st: ctypes._CFuncPtr
    sterf: ctypes._CFuncPtr


def _lapack_handle() -> ctypes.CDLL | None:
    import scipy.linalg.cython_lapack  # scipy is a dependency; here only its file path is used

    try:
        return ctypes.CDLL(scipy.linalg.cython_lapack.__file__)
    except OSError:
        return None


@functools.cache
def find(dtype: type | np.dtype, *, prefixes: tuple[str, ...] = PREFIXES) -> Routines | None:
    """The two-stage routines for float32 or float64 in scipy's LAPACK, or None where any is missing."""
    char = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}.get(np.dtype(dtype))
    handle = _lapack_handle() if char else None
    if handle is None:
        return None
    for prefix in prefixes:
        try:
            funcs = [getattr(handle, f"{prefix}{char}{name}_") for name in ("sytrd_sy2sb", "sytrd_sb2st", "sterf")]
        except AttributeError:
            continue
        for f in funcs:
            f.restype = None
        return Routines(f"{prefix}{char}", *funcs)
    return None


def _ref(value: int) -> ctypes._Pointer:
    return ctypes.byref(_INT(value))


def eigvalsh(routines: Routines, A: np.ndarray, *, lower: bool, kd: int = KD) -> np.ndarray:
    """All eigenvalues of the symmetric m x m matrix A, ascending, in A's dtype; A is overwritten.

    A: Fortran-ordered float32/float64 (matching `routines`), only the triangle named by `lower` is read.
    Raises numpy.linalg.LinAlgError where ?sterf does not converge (as scipy's ?syevd path does).
    """
    m = A.shape[0]
    if A.ndim != 2 or A.shape[1] != m or not A.flags.f_contiguous:
        raise ValueError(f"eigvalsh needs a square Fortran-ordered matrix, got shape {A.shape}")
    if m == 0:
        return np.empty(0, A.dtype)
    dt, uplo, info = A.dtype, b"L" if lower else b"U", _INT(0)
    kd = max(1, min(kd, m - 1))
    ldab = kd + 1
    AB = np.zeros((ldab, m), dt, order="F")
    tau = np.empty(m, dt)
    query = np.empty(1, dt)

    def sy2sb(work: np.ndarray, lwork: int) -> None:
        routines.sy2sb(uplo, _ref(m), _ref(kd), A.ctypes, _ref(m), AB.ctypes, _ref(ldab), tau.ctypes,
                       work.ctypes, _ref(lwork), ctypes.byref(info), _LEN(1))
        _check(routines, "sytrd_sy2sb", info.value)

    sy2sb(query, -1)  # workspace query
    sy2sb(np.empty(max(1, int(query[0])), dt), max(1, int(query[0])))

    d, e = np.empty(m, dt), np.empty(max(m - 1, 1), dt)
    hous_query = np.empty(1, dt)

    def sb2st(hous: np.ndarray, lhous: int, work: np.ndarray, lwork: int) -> None:
        # STAGE1='Y': AB is the band ?sytrd_sy2sb produced; VECT='N': no Householder vectors kept.
        routines.sb2st(b"Y", b"N", uplo, _ref(m), _ref(kd), AB.ctypes, _ref(ldab), d.ctypes, e.ctypes,
                       hous.ctypes, _ref(lhous), work.ctypes, _ref(lwork), ctypes.byref(info),
                       _LEN(1), _LEN(1), _LEN(1))
        _check(routines, "sytrd_sb2st", info.value)

    sb2st(hous_query, -1, query, -1)
    lhous, lwork = max(1, int(hous_query[0])), max(1, int(query[0]))
    sb2st(np.empty(lhous, dt), lhous, np.empty(lwork, dt), lwork)

    routines.sterf(_ref(m), d.ctypes, e.ctypes, ctypes.byref(info))
    if info.value > 0:
        raise np.linalg.LinAlgError(f"{routines.prefix}sterf: {info.value} off-diagonal elements did not converge")
    _check(routines, "sterf", info.value)
    return d


def _check(routines: Routines, name: str, info: int) -> None:
    if info != 0:  # an illegal argument: a bug in this module, never in the input
        raise RuntimeError(f"{routines.prefix}{name} rejected argument {-info} (info={info})")
