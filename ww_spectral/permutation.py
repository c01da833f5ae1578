"""Uniform random permutations of large 1-D arrays, fast: the shuffle behind `randomize` (ww_spectral/randomize.py).

`permute(flat, rng)` returns a new array holding flat's entries in a uniformly random order (flat is not
modified). It is exact (every order equally likely, given uniform random words from `rng`) and a function of
(flat.size, the generator's state) only, never of the values or their dtype: permuting np.arange(flat.size)
with a generator in the same state gives the positions, out = flat[those].

How (compiled with numba, because the work is one data-dependent swap or store per entry, which numpy can only
do one call per entry; measured here at 13 ns per entry for numpy's Generator.shuffle in cache and 35 ns per
entry for our earlier numpy two-level shuffle on an 11.7 M entry embedding, against about 3 and 5 ns compiled):

- Fisher-Yates from the last entry down: swap entry i with entry j, j uniform in [0, i], drawn from 32-bit
  words by Lemire's multiply-shift with rejection (exactly uniform: a word whose low product half falls
  below 2^32 mod (i+1) is rejected and the next word used).
- Arrays larger than the CPU cache (`TWO_LEVEL_MIN` entries and up): Rao and Sandelius' two-level shuffle.
  Every entry draws one of B = 256 buckets (a power of two <= 256, about `BUCKET_ENTRIES` entries each)
  independently and uniformly; a counting sort groups the entries by bucket, keeping their order (one
  sequential read, B sequential write streams); then every bucket is shuffled by Fisher-Yates (recursively
  two-level while a bucket is still larger than 8 * BUCKET_ENTRIES). Given the bucket sizes, each bucket holds
  a uniform random subset in a uniform random order: exactly a uniform permutation, with the random accesses
  of each bucket's shuffle inside the cache.

Random words: the generator's raw 64-bit outputs (`random_raw`), each split into two 32-bit words (low half
first), drawn per bucket, so at most a bucket's worth of words (plus a few for rejections) is held at once.
Bucket labels: one byte of those words per entry, masked to log2(B) bits. The order of draws is fixed (labels, then the buckets in
order, each bucket's words before its recursion), so one seed gives one permutation on every host.

The compiled kernels are built on first use (numba, `cache=True`: later processes load them from numba's
cache) and accept float32, float64, int32, int64 and uint64 arrays.
"""

from __future__ import annotations

from functools import cache

import numpy as np

BUCKET_ENTRIES = 1 << 15  # entries per bucket on average (128 KiB of float32: fits in L2)
TWO_LEVEL_MIN = 1 << 21  # smaller arrays: one Fisher-Yates pass (8 MiB of float32 mostly stays in cache)
MAX_BUCKETS = 256
_SPARE_WORDS = 64  # words drawn beyond one per swap, for rejections (refilled if ever used up)


@cache
def _kernels():
    """The numba kernels (compiled on first call; numba's on-disk cache makes later processes fast)."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def fisher_yates(a, top, words):  # pragma: no cover - compiled
        """Shuffle a[0:top+1] in place from index `top` down; returns the index reached: 0 when done, else the
        index whose draw ran out of words (the caller continues there with fresh words)."""
        used = 0
        n_words = words.size
        i = top
        while i > 0:
            s = np.uint64(i + 1)
            if used >= n_words:
                return i
            m = np.uint64(words[used]) * s
            used += 1
            low = m & np.uint64(0xFFFFFFFF)
            if low < s:
                threshold = (np.uint64(1 << 32) - s) % s
                while low < threshold:
                    if used >= n_words:
                        return i  # this index draws again from fresh words
                    m = np.uint64(words[used]) * s
                    used += 1
                    low = m & np.uint64(0xFFFFFFFF)
            j = np.int64(m >> np.uint64(32))
            tmp = a[i]
            a[i] = a[j]
            a[j] = tmp
            i -= 1
        return 0

    @numba.njit(cache=True, nogil=True)
    def group(flat, labels, buckets, out):  # pragma: no cover - compiled
        """Stable counting sort of flat by labels (each < buckets) into out; returns the bucket sizes."""
        counts = np.zeros(buckets, dtype=np.int64)
        for k in range(labels.size):
            counts[labels[k]] += 1
        starts = np.zeros(buckets, dtype=np.int64)
        for b in range(1, buckets):
            starts[b] = starts[b - 1] + counts[b - 1]
        for k in range(flat.size):
            b = labels[k]
            out[starts[b]] = flat[k]
            starts[b] += 1
        return counts

    return fisher_yates, group


def _words(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` (rounded up to even) uniform 32-bit words: the generator's raw 64-bit outputs, low half first."""
    return rng.bit_generator.random_raw((count + 1) // 2).view("<u4")


def _shuffle_in_place(part: np.ndarray, rng: np.random.Generator) -> None:
    """Fisher-Yates on part (1-D, contiguous), words from rng."""
    fisher_yates, _ = _kernels()
    top = part.size - 1
    while top > 0:
        # With rejection, Fisher-Yates needs `top` words plus a few: the spare ones almost always suffice.
        top = fisher_yates(part, top, _words(rng, top + _SPARE_WORDS))


def permute(flat: np.ndarray, rng: np.random.Generator, *, bucket: int = BUCKET_ENTRIES,
            min_size: int = TWO_LEVEL_MIN) -> np.ndarray:
    """A uniformly random permutation of the 1-D array `flat`, as a new array (see the module docstring).

    flat: 1-D float32/float64/int32/int64/uint64 array; rng: consumed; bucket, min_size: the two-level
    shuffle's average bucket size and the size from which it is used (entries).
    Memory: the result plus, above min_size, one byte per entry (the labels) and a bucket's words at a time.
    """
    if flat.ndim != 1:
        raise ValueError(f"permute needs a 1-D array, got shape {flat.shape}")
    n = flat.size
    buckets = MAX_BUCKETS
    while buckets > 1 and n // buckets < bucket:
        buckets //= 2
    if buckets < 2 or n < min_size:
        out = np.array(flat, copy=True, order="C")
        _shuffle_in_place(out, rng)
        return out
    # Bucket labels: one random byte per entry, masked to log2(buckets) bits (uniform: buckets is a power of 2).
    labels = _words(rng, (n + 3) // 4).view(np.uint8)[:n]
    labels &= np.uint8(buckets - 1)
    out = np.empty_like(flat)
    _, group = _kernels()
    counts = group(np.ascontiguousarray(flat), labels, buckets, out)
    del labels
    ends = np.cumsum(counts)
    for stop, size in zip(ends.tolist(), counts.tolist()):
        part = out[stop - size:stop]
        if size > 8 * bucket:
            part[...] = permute(part, rng, bucket=bucket, min_size=min_size)
        else:
            _shuffle_in_place(part, rng)
    return out
