"""Randomized ESD of a layer (WeightWatcher 0.7.7's `randomize=True`) and its correlation traps.

Definitions (read from weightwatcher 0.7.7: WeightWatcher.apply_random_esd, random_eigenvalues,
apply_mp_fit(random=True), RMT_Util.jensen_shannon_distance):

- The randomized matrix of a slice W: its entries uniformly permuted (a uniform random permutation of
  the flattened matrix, drawn by an exact, compiled, cache-friendly shuffle: ww_spectral/permutation.py
  `permute`; it keeps every value, so the Frobenius norm). Its ESD is taken like the layer's
  (eigenvalues of the smaller Gram matrix, conv2d slices pooled and scaled by 0.5; the one-stage reduction
  runs on the Gram's lower triangle and is kept for the trap vectors: spectrum.eigenvalues_and_reduction).
- replicas: 5 independent shuffles of every slice when the layer has fewer than 100 eigenvalues
  (WW: num_components < 100), else 1. rand_evals: all replicas pooled, ascending (WW's `rand_evals`,
  what get_ESD(random=True) returns).
- max_rand_eval = max(rand_evals).
- rand_distance = Jensen-Shannon distance between the layer's ESD and one randomized draw, both
  as ascending vectors of the same length treated as (unnormalised) distributions over their index:
  m = (p + q) / 2; JSD = (KL(p/sum p || m/sum m) + KL(q/sum q || m/sum m)) / 2 (natural log);
  rand_distance = sqrt(JSD) (scipy.stats.entropy semantics, as WW calls it).
- ww_softrank = max(draw) / max(evals); ww_maxdist = max(evals) - max(draw).
- rand_num_spikes, rand_sigma_mp, rand_mp_softrank, rand_W_scale, rand_bulk_max, rand_bulk_min: the
  Marchenko-Pastur fit (ww_spectral/mp_fit.py) of rand_evals with the layer's N and M.
- num_traps = rand_num_spikes: randomized eigenvalues beyond the MP bulk edge + Tracy-Widom pad.
  Shuffling destroys correlations, so such a spike comes from a few unusually large elements
  (a "correlation trap").

One deliberate difference: WW draws a second, separate shuffle for rand_distance / ww_softrank /
ww_maxdist; here they use the first replica's draw (every draw has the same distribution, and the
extra Gram + eigensolve would cost a third of the randomized analysis).

Where the traps are (ours; WW reports only the count): the spikes of every (replica, slice) draw
beyond the edge are that draw's k largest eigenvalues; for each, the draw's singular vectors (u, v)
give the entry of the randomized matrix with the largest term |u_i Wr_ij v_j| of the singular value
(searched among the 8 rows and columns where |u| and |v| are largest: `_trap_entry`), mapped back to its position
(row, col) in the original slice: the one entry with the same bits, or, where several share them, through
the permutation itself (replayed from the draw's seed). A trap made by one large element has
|u_i v_j| ~ 1 there (`localization`). One row per trap: num_traps rows per layer.

Reproducibility: each layer's permutations come from numpy's PCG64 seeded by SeedSequence(entropy=
[seed, the eight little-endian 32-bit words of SHA-256(tensor name as UTF-8)], spawn_key=(replica,
slice)) - never Python's hash() - whose first four raw outputs seed the shuffle's own generator
(xoshiro256**, ww_spectral/permutation.py), so the same seed gives the same permutations on any host, in
any layer order and with any number of workers (numpy's stream-compatibility policy holds within a numpy
version; constraints.txt pins it). The eigenvalues then carry the float round-off of one-stage LAPACK.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
from scipy.special import rel_entr

from .errors import OptionError
from .mp_fit import MPFit, mp_fit
from .permutation import permute
from .spectrum import Tridiagonal, eigenvalues, eigenvalues_and_reduction, gram, noise_floor

SMALL_LAYER_EVALS = 100  # WW: num_components < 100 -> several replicas ...
SMALL_LAYER_REPLICAS = 5  # ... of the shuffle, pooled
_COMPUTE_DTYPES = {"float32": np.float32, "float64": np.float64}
SCRATCH_MAX_BYTES = 64 * 2**20  # per thread and dtype: shuffles up to this size reuse one buffer (_scratch)
_THREAD_SCRATCH = threading.local()
KEEP_SHUFFLED_BYTES = 64 * 2**20  # a layer of several draws keeps its shuffled matrices up to this size in all
_DENSE_TRAPS = 1024  # up to this smaller side, trap singular vectors come from a dense eigensolve
_TRAP_CANDIDATES = 8  # rows and columns searched for a trap's entry (_trap_entry)

RAND_COLUMNS = ("max_rand_eval", "rand_distance", "ww_softrank", "ww_maxdist", "rand_num_spikes",
                "num_traps", "rand_sigma_mp", "rand_mp_softrank", "rand_W_scale", "rand_bulk_max",
                "rand_bulk_min")


def _name_words(tensor_name: str) -> list[int]:
    digest = hashlib.sha256(tensor_name.encode("utf-8")).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 32, 4)]


def shuffle_rng(seed: int, tensor_name: str, replica: int, slice_index: int) -> np.random.Generator:
    """The generator of one shuffle: a function of (seed, tensor name, replica, slice) only."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise OptionError(f"seed={seed!r} is not allowed; use a non-negative integer")
    ss = np.random.SeedSequence(entropy=[int(seed), *_name_words(tensor_name)],
                                spawn_key=(int(replica), int(slice_index)))
    return np.random.Generator(np.random.PCG64(ss))


def jensen_shannon_distance(p: np.ndarray, q: np.ndarray) -> float:
    """WW's RMT_Util.jensen_shannon_distance: sqrt of the JS divergence (natural log) of p and q.

    p, q: non-negative vectors of equal length (normalised here, as scipy.stats.entropy does).
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"p and q need the same shape, got {p.shape} and {q.shape}")
    m = (p + q) / 2
    pn, qn, mn = p / np.sum(p), q / np.sum(q), m / np.sum(m)
    divergence = (float(np.sum(rel_entr(pn, mn))) + float(np.sum(rel_entr(qn, mn)))) / 2
    return math.sqrt(max(divergence, 0.0))


@dataclass(frozen=True)
class CorrelationTrap:
    """One spike of the randomized ESD and the weight element behind it (one row per trap).

    trap: 0-based index within the layer, largest eigenvalue first; replica, slice: which shuffle
    and which matrix of the layer (slice = kernel position kh_i * kw + kw_j for conv2d, 0 for dense);
    rand_eval: the randomized eigenvalue (units of the ESD); row, col: position of the element in the
    original slice (out x in as stored); weight: its value; weight_z: (weight - mean) / std over the
    slice; localization: |u_i v_j| of the trap's singular vectors there (about 1: one element).
    """

    trap: int
    replica: int
    slice: int
    rand_eval: float
    row: int
    col: int
    weight: float
    weight_z: float
    localization: float

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(frozen=True, eq=False)
class RandomizedESD:
    """A layer's randomized ESD, its statistics (WW's column names) and its correlation traps."""

    seed: int
    replicas: int
    rand_evals: np.ndarray
    max_rand_eval: float
    rand_distance: float
    ww_softrank: float
    ww_maxdist: float
    mp: MPFit
    traps: tuple[CorrelationTrap, ...]

    @property
    def num_traps(self) -> int | None:
        return self.mp.num_spikes

    def columns(self) -> dict:
        """The randomize columns of WW's details table (RAND_COLUMNS), for one layer row."""
        out = {"max_rand_eval": self.max_rand_eval, "rand_distance": self.rand_distance,
               "ww_softrank": self.ww_softrank, "ww_maxdist": self.ww_maxdist,
               "num_traps": self.num_traps}
        out.update(self.mp.columns(prefix="rand_"))
        return {c: out[c] for c in RAND_COLUMNS}

    def trap_rows(self, **extra) -> list[dict]:
        """One dict per trap (CorrelationTrap fields), each with `extra` (e.g. tensor_name, layer_id)."""
        return [{**extra, **t.as_dict()} for t in self.traps]


@dataclass(frozen=True)
class _Draw:
    replica: int
    slice: int
    evals: np.ndarray  # ascending, scaled like the layer's ESD
    shuffled: np.ndarray | None  # the shuffled matrix, kept for trap location (None: shuffled again if needed)
    reduction: Tridiagonal | None  # its Gram's reduction, kept for the trap's singular vectors (None: recomputed)


def _scratch(size: int, dtype) -> np.ndarray | None:
    """This thread's reusable buffer of `size` entries of dtype, or None above SCRATCH_MAX_BYTES. Reused from
    layer to layer (and model to model), so a shuffle writes into memory already faulted in rather than into
    fresh pages (the kernel zeroes each on first touch: measurable beside a shuffle of ~2 ns per entry)."""
    dtype = np.dtype(dtype)
    if size * dtype.itemsize > SCRATCH_MAX_BYTES:
        return None
    buffers = _THREAD_SCRATCH.__dict__.setdefault("buffers", {})
    buf = buffers.get(dtype)
    if buf is None or buf.size < size:
        buf = buffers[dtype] = np.empty(size, dtype)
    return buf[:size]


def _shuffle(W: np.ndarray, rng: np.random.Generator, dtype, *, scratch: bool = False) -> np.ndarray:
    """W (in the compute dtype) with its entries uniformly permuted (`permute`), same shape; scratch: written
    into this thread's scratch buffer (valid until the next scratch shuffle) where it is small enough."""
    flat = np.ascontiguousarray(W, dtype=dtype).ravel()
    return permute(flat, rng, out=_scratch(flat.size, dtype) if scratch else None).reshape(W.shape)


def _positions(size: int, rng: np.random.Generator) -> np.ndarray:
    """positions[p]: the original flat index of entry p of the matrix `_shuffle` makes with a generator in this
    state (the draws depend on the size only: ww_spectral/permutation.py)."""
    return permute(np.arange(size, dtype=np.int32 if size < 2**31 else np.int64), rng)


def _floored(evals: np.ndarray, mats: Sequence[np.ndarray], precision: str) -> np.ndarray:
    """The default analysis' float32 round-off rule (ww_spectral/analysis.py): values below the noise
    floor of the pooled lambda_max count as zero."""
    if precision != "float32" or not evals.size:
        return evals
    floor = noise_floor(float(evals[-1]), max(min(W.shape) for W in mats), "float32")
    return np.where(evals > floor, evals, 0.0)


def _top_singular_vectors(Wr: np.ndarray, k: int, precision: str,
                          reduction: Tridiagonal | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k leading singular vector pairs (u: rows x k, v: cols x k) of Wr, largest first.

    Eigenvectors of the smaller Gram matrix: from its kept reduction to tridiagonal form where the draw's
    eigensolve left one (spectrum.Tridiagonal), else dense (LAPACK ?syevr on the top k) up to _DENSE_TRAPS,
    Lanczos (ARPACK, fixed start vector: deterministic) on the implicit Gram above it, where forming
    W^T W would cost as much as the randomized ESD itself.
    """
    rows, cols = Wr.shape
    m = min(rows, cols)
    if reduction is not None:
        vals, vecs = reduction.top_eigenpairs(k)
        vals = vals[::-1]  # ascending, like the solvers below
        vecs = vecs[:, ::-1]
    elif m <= _DENSE_TRAPS or k >= m // 2:
        G = gram(Wr, precision=precision)
        vals, vecs = scipy.linalg.eigh(G, lower=False, subset_by_index=[m - k, m - 1], driver="evr",
                                       check_finite=False)
    else:
        small_right = cols <= rows
        op = scipy.sparse.linalg.LinearOperator(
            (m, m), dtype=Wr.dtype,
            matvec=(lambda v: Wr.T @ (Wr @ v)) if small_right else (lambda v: Wr @ (Wr.T @ v)))
        vals, vecs = scipy.sparse.linalg.eigsh(op, k=k, which="LA", v0=np.full(m, 1.0 / math.sqrt(m)), tol=1e-7)
    order = np.argsort(vals)[::-1]
    vecs = vecs[:, order].astype(Wr.dtype)
    sv = np.sqrt(np.maximum(vals[order], 0.0)).astype(Wr.dtype)
    sv[sv == 0] = 1
    if cols <= rows:  # the Gram W^T W holds right singular vectors
        return (Wr @ vecs) / sv, vecs
    return vecs, (Wr.T @ vecs) / sv


def _trap_entry(Wr: np.ndarray, u: np.ndarray, v: np.ndarray, candidates: int = _TRAP_CANDIDATES) -> tuple[int, int]:
    """The entry (i, j) of Wr behind a spike with singular vectors u, v: the largest term |u_i Wr_ij v_j| of
    the singular value u^T Wr v among the rows and columns where |u| and |v| are largest. (Taking
    argmax |u| and argmax |v| separately can pair the row of one planted element with the column of
    another where two near-equal spikes mix their vectors.)"""
    au, av = np.abs(u), np.abs(v)
    rows = np.argpartition(au, -min(candidates, au.size))[-candidates:]
    cols = np.argpartition(av, -min(candidates, av.size))[-candidates:]
    terms = np.abs(Wr[np.ix_(rows, cols)] * np.outer(u[rows], v[cols]))
    a, b = np.unravel_index(int(np.argmax(terms)), terms.shape)
    return int(rows[a]), int(cols[b])


def _trap_elements(W: np.ndarray, Wr: np.ndarray, replay: Callable[[], np.ndarray], k: int, precision: str,
                   reduction: Tridiagonal | None = None) -> list[tuple[int, int, float, float, float]]:
    """(row, col, weight, weight_z, localization) behind the k largest singular values of Wr, the shuffled W.

    Where an entry of Wr came from: the one entry of W with the same bits, or, where several share them (as
    in low-precision weights), `replay()`'s positions (positions[p]: the original flat index of Wr's entry p).
    """
    orig = np.ascontiguousarray(W, dtype=Wr.dtype).ravel()
    bits = orig.view(np.uint32 if orig.dtype == np.float32 else np.uint64)
    shuffled = Wr.ravel()
    cols = Wr.shape[1]
    u, v = _top_singular_vectors(Wr, k, precision, reduction)
    mean, std = float(np.mean(orig, dtype=np.float64)), float(np.std(orig, dtype=np.float64))
    positions = None
    out = []
    for t in range(k):
        i, j = _trap_entry(Wr, u[:, t], v[:, t])
        p = i * cols + j
        same = np.flatnonzero(bits == shuffled[p:p + 1].view(bits.dtype)[0]) if positions is None else ()
        if len(same) == 1:
            source = int(same[0])
        else:
            positions = replay() if positions is None else positions
            source = int(positions[p])
        r, c = divmod(source, cols)
        w = float(orig[source])
        out.append((r, c, w, (w - mean) / std if std > 0 else math.nan, abs(float(u[i, t]) * float(v[j, t]))))
    return out


def randomize_layer(
    mats: Sequence[np.ndarray],
    evals: np.ndarray,
    *,
    N: int,
    M: int,
    seed: int,
    tensor_name: str,
    scale: float = 1.0,
    backend: str = "numpy",
    precision: str = "float32",
    device: str = "cpu",
    locate_traps: bool = True,
    keep_shuffled_bytes: int = KEEP_SHUFFLED_BYTES,
) -> RandomizedESD:
    """Randomized ESD statistics and correlation traps of one layer (see the module docstring).

    mats: the layer's matrices (ww_spectral.layers.layer_matrices), not modified; evals: the layer's
    ESD as the fit sees it (ascending float64, num_evals values); N, M: the layer's sides (as in its
    row); seed: non-negative int; tensor_name: the checkpoint key (part of the seed); scale,
    backend, precision, device: as for spectrum.layer_spectrum (scale 0.5 for conv2d);
    locate_traps: find the elements behind the traps (without it only the count is reported);
    keep_shuffled_bytes: a layer of several draws (conv2d slices, small-layer replicas) keeps its shuffled
    matrices and their Grams' tridiagonal reductions for trap location while they take at most this many
    bytes in all, else a draw with a trap is shuffled again from its seed and its top singular vectors
    computed anew (a one-draw layer always keeps its own: they are alive during its eigensolve anyway).
    Memory beyond the caller's matrices (float32): 8 bytes per entry of the slice being shuffled (a float32
    copy if the weights are stored otherwise, the shuffled copy: this thread's reused scratch buffer up to
    SCRATCH_MAX_BYTES, which stays allocated for the next layer) plus its Gram matrix, and up to
    keep_shuffled_bytes of kept draws; 4 more bytes per entry where a trap's element is found by replay.
    """
    evals = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    if not evals.size or not mats:
        raise ValueError(f"{tensor_name}: no eigenvalues / matrices to randomize")
    dtype = _COMPUTE_DTYPES[precision]
    replicas = SMALL_LAYER_REPLICAS if evals.size < SMALL_LAYER_EVALS else 1
    # Keep the shuffled matrices for trap location when that costs little memory: always for one draw (it is
    # alive during its own ESD anyway), else up to keep_shuffled_bytes in all; others are shuffled again.
    draw_bytes = replicas * sum(W.size + min(W.shape) ** 2 for W in mats) * np.dtype(dtype).itemsize
    single = replicas * len(mats) == 1
    keep = locate_traps and (single or draw_bytes <= keep_shuffled_bytes)
    draws: list[_Draw] = []
    for r in range(replicas):
        for s, W in enumerate(mats):
            # One draw at a time in the scratch buffer unless several are kept for trap location.
            Wr = _shuffle(W, shuffle_rng(seed, tensor_name, r, s), dtype, scratch=single or not keep)
            if backend == "numpy":  # the same eigenvalues whether the reduction is kept or not
                ev, reduction = eigenvalues_and_reduction(Wr, precision=precision)
                reduction = reduction if keep else None
            else:
                ev, reduction = eigenvalues(Wr, backend=backend, precision=precision, device=device), None
            if scale != 1.0:
                ev *= scale
            draws.append(_Draw(r, s, ev, Wr if keep else None, reduction))
            del Wr
    rand_evals = _floored(np.sort(np.concatenate([d.evals for d in draws])), mats, precision)
    first = _floored(np.sort(np.concatenate([d.evals for d in draws if d.replica == 0])), mats, precision)
    top, rtop = float(evals[-1]), float(first[-1])
    mp = mp_fit(rand_evals, N=N, M=M)
    traps: list[CorrelationTrap] = []
    if locate_traps and mp.status == "success" and mp.num_spikes:
        found = []
        for d in draws:
            spikes = np.sort(d.evals[mp.is_spike(d.evals)])[::-1]
            if spikes.size:
                W = mats[d.slice]
                Wr = d.shuffled if d.shuffled is not None else _shuffle(
                    W, shuffle_rng(seed, tensor_name, d.replica, d.slice), dtype, scratch=True)
                replay = functools.partial(_positions, W.size, shuffle_rng(seed, tensor_name, d.replica, d.slice))
                elements = _trap_elements(W, Wr, replay, spikes.size, precision, d.reduction)
                found += [(float(ev), d.replica, d.slice, el) for ev, el in zip(spikes, elements)]
        found.sort(key=lambda t: (-t[0], t[1], t[2]))
        traps = [CorrelationTrap(trap=i, replica=rep, slice=sl, rand_eval=ev, row=el[0], col=el[1], weight=el[2],
                                 weight_z=el[3], localization=el[4])
                 for i, (ev, rep, sl, el) in enumerate(found)]
    del draws
    return RandomizedESD(
        seed=int(seed),
        replicas=replicas,
        rand_evals=rand_evals,
        max_rand_eval=float(rand_evals[-1]),
        rand_distance=jensen_shannon_distance(evals, first) if evals.shape == first.shape else math.nan,
        ww_softrank=rtop / top if top > 0 else math.nan,
        ww_maxdist=top - rtop,
        mp=mp,
        traps=tuple(traps),
    )
