"""Uniform random permutations of large 1-D arrays, fast: the shuffle behind `randomize` (ww_spectral/randomize.py).

`permute(flat, rng)` returns a new array holding flat's entries in a uniformly random order (flat is not
modified). It is exact (every order equally likely, given uniform random words) and a function of
(flat.size, the generator's state) only, never of the values or their dtype: permuting np.arange(flat.size)
with a generator in the same state gives the positions, out = flat[those].

How (compiled with numba, because the work is one data-dependent swap or store per entry, which numpy can only
do one call per entry; measured here at 13 ns per entry for numpy's Generator.shuffle in cache and 35 ns per
entry for our first numpy two-level shuffle on an 11.7 M entry embedding, against 2 and 4 ns compiled):

- Random words: xoshiro256** (Blackman and Vigna; 256-bit state, period 2^256 - 1), run inside the kernels,
  seeded with four raw 64-bit outputs of `rng` (its PCG64 stream: the seed of the draws). Each 64-bit output
  gives two 32-bit words, low half first. Generating the words in the kernel instead of drawing arrays of
  them from numpy saves a memory round trip and an allocation per bucket (about 1.5 ns per entry).
- Fisher-Yates from the last entry down: swap entry i with entry j, j uniform in [0, i], by Lemire's
  multiply-shift with rejection (exactly uniform: a word whose low product half falls below 2^32 mod (i+1)
  is rejected and the next word used).
- Arrays larger than the CPU's caches hold well (`TWO_LEVEL_MIN` entries and up): Rao and Sandelius' two-level
  shuffle. Every entry draws one of B buckets (B a power of two <= 256, about `BUCKET_ENTRIES` entries each)
  independently and uniformly: one byte of the stream per entry, masked to log2(B) bits. A counting sort
  groups the entries by bucket, keeping their order (the labels are drawn twice from the same state, once
  to count and once to place, instead of being stored: one sequential read, B sequential write streams);
  then every bucket is shuffled by Fisher-Yates (a bucket still larger than 8 * BUCKET_ENTRIES by the
  two-level shuffle again). Given the bucket sizes, each bucket holds a uniform random subset in a uniform
  random order: exactly a uniform permutation, with the random accesses of each bucket's shuffle inside
  the cache.

The order of draws is fixed (the labels, then the buckets in order, each bucket's draws before the next's),
so one seed gives one permutation on every host. The kernels are built on first use (numba, `cache=True`:
later processes load them from numba's cache) and accept float32, float64, int32, int64 and uint64 arrays.
"""

from __future__ import annotations

from functools import cache

import numpy as np

BUCKET_ENTRIES = 1 << 15  # entries per bucket on average (128 KiB of float32: fits in L2)
TWO_LEVEL_MIN = 1 << 21  # smaller arrays: one Fisher-Yates pass (8 MiB of float32 mostly stays in cache)
MAX_BUCKETS = 256  # one byte of the stream per label
_ZERO_STATE_FIX = 0x9E3779B97F4A7C15  # xoshiro's all-zero state is its one fixed point (chance 2^-256)


@cache
def _kernels():
    """The compiled kernels (ww_spectral/permutation_kernels.py: built once per machine, then loaded from numba's
    on-disk cache; imported on first use)."""
    from . import permutation_kernels as k

    return k.fisher_yates, k.group, k.shuffle_buckets


def seed_state(rng: np.random.Generator) -> np.ndarray:
    """The xoshiro256** state (uint64[4]) that `permute` draws from: four raw 64-bit outputs of rng."""
    state = np.asarray(rng.bit_generator.random_raw(4), dtype=np.uint64)
    if not state.any():
        state[0] = _ZERO_STATE_FIX
    return state


def _permute(flat: np.ndarray, state: np.ndarray, bucket: int, min_size: int,
             out: np.ndarray | None = None) -> np.ndarray:
    fisher_yates, group, shuffle_buckets = _kernels()
    n = flat.size
    buckets = MAX_BUCKETS
    while buckets > 1 and n // buckets < bucket:
        buckets //= 2
    if buckets < 2 or n < min_size:
        if out is None:
            out = np.array(flat, copy=True, order="C")
        else:
            out[...] = flat
        if n > 1:
            fisher_yates(out, state)
        return out
    out = np.empty_like(flat) if out is None else out
    counts = group(np.ascontiguousarray(flat), out, state, buckets)
    starts = np.concatenate(([0], np.cumsum(counts)))
    b = 0
    while b < buckets:
        b, _ = shuffle_buckets(out, counts, b, state, 8 * bucket, max(1, 64 // out.itemsize))
        if b < buckets:  # a bucket too large for the cache: two-level again, then on with the next
            part = out[starts[b]:starts[b + 1]]
            part[...] = _permute(part, state, bucket, min_size)
            b += 1
    return out


def permute(flat: np.ndarray, rng: np.random.Generator, *, bucket: int = BUCKET_ENTRIES,
            min_size: int = TWO_LEVEL_MIN, out: np.ndarray | None = None) -> np.ndarray:
    """A uniformly random permutation of the 1-D array `flat`, as a new array or in `out` (see the module docstring).

    flat: 1-D float32/float64/int32/int64/uint64 array; rng: four raw outputs are consumed (`seed_state`);
    bucket, min_size: the two-level shuffle's average bucket size and the size from which it is used (entries);
    out: where to write the result (1-D, contiguous, flat's size and dtype, not overlapping flat), e.g. a buffer
    reused from call to call (fresh memory costs a page fault per 4 KiB page on first touch).
    Memory: the result only.
    """
    if flat.ndim != 1:
        raise ValueError(f"permute needs a 1-D array, got shape {flat.shape}")
    if out is not None and (out.shape != flat.shape or out.dtype != flat.dtype or not out.flags.c_contiguous
                            or np.shares_memory(out, flat)):
        raise ValueError("out must be a contiguous array of flat's shape and dtype that does not overlap it")
    return _permute(flat, seed_state(rng), bucket, min_size, out)
