"""Randomized ESD of a layer (WeightWatcher 0.7.7's `randomize=True`) and its correlation traps.

Definitions (read from weightwatcher 0.7.7: WeightWatcher.apply_random_esd, random_eigenvalues,
apply_mp_fit(random=True), RMT_Util.jensen_shannon_distance):

- The randomized matrix of a slice W: its entries uniformly permuted (a uniform random permutation of
  the flattened matrix, drawn by an exact, compiled, cache-friendly shuffle: ww_spectral/permutation.py
  `permute`; it keeps every value, so the Frobenius norm). Its ESD is taken exactly like the
  layer's (eigenvalues of the smaller Gram matrix, conv2d slices pooled and scaled by 0.5).
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
give the entry of the randomized matrix where |u_i v_j| is largest, mapped back through the
permutation to its position (row, col) in the original slice. A trap made by one large element has
|u_i v_j| ~ 1 there (`localization`). One row per trap: num_traps rows per layer.

Reproducibility: each layer's permutations come from numpy's PCG64 seeded by SeedSequence(entropy=
[seed, the eight little-endian 32-bit words of SHA-256(tensor name as UTF-8)], spawn_key=(replica,
slice)) - never Python's hash() - so the same
seed gives the same permutations on any host, in any layer order and with any number of workers
(numpy's stream-compatibility policy holds within a numpy version; constraints.txt pins it). The
eigenvalues then carry the float round-off of the default analysis (same Gram + eigensolver).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
from scipy.special import rel_entr

from .errors import OptionError
from .mp_fit import MPFit, mp_fit
from .permutation import permute
from .spectrum import eigenvalues, gram, noise_floor

SMALL_LAYER_EVALS = 100  # WW: num_components < 100 -> several replicas ...
SMALL_LAYER_REPLICAS = 5  # ... of the shuffle, pooled
_COMPUTE_DTYPES = {"float32": np.float32, "float64": np.float64}
_DENSE_TRAPS = 1024  # up to this smaller side, trap singular vectors come from a dense eigensolve

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


def _shuffle(W: np.ndarray, rng: np.random.Generator, dtype) -> np.ndarray:
    """W (in the compute dtype) with its entries uniformly permuted (`permute`), same shape."""
    return permute(np.ascontiguousarray(W, dtype=dtype).ravel(), rng).reshape(W.shape)


def _replay(W: np.ndarray, rng: np.random.Generator, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(the shuffled matrix `_shuffle` made with a generator in this state, positions): positions[p] is the
    original flat index of the shuffled entry p. Only for layers with traps.

    float32: one permutation of 64-bit words (position << 32 | the value's bits) gives both without a random
    gather; float64: the positions are permuted, then the values gathered."""
    n = W.size
    if dtype == np.float32 and n < 2**31:
        words = np.arange(n, dtype="<u8")
        words <<= np.uint64(32)
        words |= np.ascontiguousarray(W, dtype="<f4").ravel().view("<u4")
        halves = permute(words, rng).view("<u4")
        values = np.ascontiguousarray(halves[0::2]).view("<f4")
        return values.reshape(W.shape), halves[1::2]
    positions = permute(np.arange(n, dtype=np.int32 if n < 2**31 else np.int64), rng)
    return np.ascontiguousarray(W, dtype=dtype).ravel()[positions].reshape(W.shape), positions


def _floored(evals: np.ndarray, mats: Sequence[np.ndarray], precision: str) -> np.ndarray:
    """The default analysis' float32 round-off rule (ww_spectral/analysis.py): values below the noise
    floor of the pooled lambda_max count as zero."""
    if precision != "float32" or not evals.size:
        return evals
    floor = noise_floor(float(evals[-1]), max(min(W.shape) for W in mats), "float32")
    return np.where(evals > floor, evals, 0.0)


def _top_singular_vectors(Wr: np.ndarray, k: int, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """The k leading singular vector pairs (u: rows x k, v: cols x k) of Wr, largest first.

    Eigenvectors of the smaller Gram matrix: dense (LAPACK ?syevr on the top k) up to _DENSE_TRAPS,
    Lanczos (ARPACK, fixed start vector: deterministic) on the implicit Gram above it, where forming
    W^T W would cost as much as the randomized ESD itself.
    """
    rows, cols = Wr.shape
    m = min(rows, cols)
    if m <= _DENSE_TRAPS or k >= m // 2:
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


def _trap_elements(W: np.ndarray, Wr: np.ndarray, positions: np.ndarray, k: int,
                   precision: str) -> list[tuple[int, int, float, float, float]]:
    """(row, col, weight, weight_z, localization) behind the k largest singular values of Wr, the shuffled
    W; positions[p] is the original flat index of the shuffled entry p."""
    orig = np.ascontiguousarray(W, dtype=Wr.dtype).ravel()
    cols = Wr.shape[1]
    u, v = _top_singular_vectors(Wr, k, precision)
    mean, std = float(np.mean(orig, dtype=np.float64)), float(np.std(orig, dtype=np.float64))
    out = []
    for t in range(k):
        i, j = int(np.argmax(np.abs(u[:, t]))), int(np.argmax(np.abs(v[:, t])))
        r, c = divmod(int(positions[i * cols + j]), cols)
        w = float(orig[r * cols + c])
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
) -> RandomizedESD:
    """Randomized ESD statistics and correlation traps of one layer (see the module docstring).

    mats: the layer's matrices (ww_spectral.layers.layer_matrices), not modified; evals: the layer's
    ESD as the fit sees it (ascending float64, num_evals values); N, M: the layer's sides (as in its
    row); seed: non-negative int; tensor_name: the checkpoint key (part of the seed); scale,
    backend, precision, device: as for spectrum.layer_spectrum (scale 0.5 for conv2d);
    locate_traps: find the elements behind the traps (a slice with a trap is shuffled again, with the same
    draws, to learn where its entries came from; without it only the count is reported).
    Memory beyond the caller's matrices (float32): at most 9 bytes per entry of the slice being shuffled and
    its Gram formed (a float32 copy if the weights are stored otherwise, the shuffled copy, 1-byte bucket
    labels above permute's min_size); up to 16 bytes per entry while the traps of a slice are located.
    """
    evals = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    if not evals.size or not mats:
        raise ValueError(f"{tensor_name}: no eigenvalues / matrices to randomize")
    dtype = _COMPUTE_DTYPES[precision]
    replicas = SMALL_LAYER_REPLICAS if evals.size < SMALL_LAYER_EVALS else 1
    draws: list[_Draw] = []
    for r in range(replicas):
        for s, W in enumerate(mats):
            Wr = _shuffle(W, shuffle_rng(seed, tensor_name, r, s), dtype)
            ev = eigenvalues(Wr, backend=backend, precision=precision, device=device)
            del Wr
            if scale != 1.0:
                ev *= scale
            draws.append(_Draw(r, s, ev))
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
                Wr, positions = _replay(W, shuffle_rng(seed, tensor_name, d.replica, d.slice), dtype)
                elements = _trap_elements(W, Wr, positions, spikes.size, precision)
                found += [(float(ev), d.replica, d.slice, el) for ev, el in zip(spikes, elements)]
        found.sort(key=lambda t: (-t[0], t[1], t[2]))
        traps = [CorrelationTrap(trap=i, replica=rep, slice=sl, rand_eval=ev, row=el[0], col=el[1], weight=el[2],
                                 weight_z=el[3], localization=el[4])
                 for i, (ev, rep, sl, el) in enumerate(found)]
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
