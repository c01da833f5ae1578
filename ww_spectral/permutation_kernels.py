"""The compiled kernels of ww_spectral/permutation.py (numba; see that module for what they compute and why).

A module of their own, imported on first use, so `import ww_spectral` does not import numba, and defined at
module level, so numba's on-disk cache (`cache=True`) finds them again in the next process: kernels built
inside a function were compiled anew by every process (about 1.3 s).
"""

import numba
import numpy as np

u64 = numba.uint64  # the kernels' word type
mask32 = np.uint64(0xFFFFFFFF)  # the low 32-bit half of a word


@numba.njit(cache=True, inline="always")
def rotl(x, k):  # pragma: no cover - compiled
    return (x << u64(k)) | (x >> u64(64 - k))


@numba.njit(cache=True, inline="always")
def step(s0, s1, s2, s3):  # pragma: no cover - compiled
    """xoshiro256**: (output, next state)."""
    result = rotl(s1 * u64(5), 7) * u64(9)
    t = s1 << u64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = rotl(s3, 45)
    return result, s0, s1, s2, s3


@numba.njit(cache=True, nogil=True)
def fisher_yates(a, state):  # pragma: no cover - compiled
    """Shuffle a (1-D) in place from its last index down; state (uint64[4]) is advanced."""
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    spare = u64(0)
    have_spare = False
    i = a.size - 1
    while i > 0:
        bound = u64(i + 1)
        while True:
            if have_spare:
                word = spare
                have_spare = False
            else:
                r, s0, s1, s2, s3 = step(s0, s1, s2, s3)
                word = r & mask32
                spare = r >> u64(32)
                have_spare = True
            m = word * bound
            low = m & mask32
            if low >= bound or low >= (u64(0x100000000) - bound) % bound:
                break  # accepted (low >= bound already implies low >= 2^32 mod bound)
        j = np.int64(m >> u64(32))
        tmp = a[i]
        a[i] = a[j]
        a[j] = tmp
        i -= 1
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3


@numba.njit(cache=True, nogil=True)
def group(flat, out, state, buckets):  # pragma: no cover - compiled
    """Stable counting sort of flat into out by one random label per entry (each < buckets, a power of two:
    byte b of the k-th output labels entry 8k + b); returns the bucket sizes; state is advanced past the
    labels. The labels are drawn twice from the same state (count, then place) rather than stored."""
    n = flat.size
    lab_mask = u64(buckets - 1)
    counts = np.zeros(buckets, dtype=np.int64)
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    k = 0
    while k < n:
        r, s0, s1, s2, s3 = step(s0, s1, s2, s3)
        for b in range(min(8, n - k)):
            counts[(r >> u64(8 * b)) & lab_mask] += 1
        k += 8
    starts = np.zeros(buckets, dtype=np.int64)
    for b in range(1, buckets):
        starts[b] = starts[b - 1] + counts[b - 1]
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    k = 0
    while k < n:
        r, s0, s1, s2, s3 = step(s0, s1, s2, s3)
        for b in range(min(8, n - k)):
            lab = (r >> u64(8 * b)) & lab_mask
            out[starts[lab]] = flat[k + b]
            starts[lab] += 1
        k += 8
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3
    return counts


@numba.njit(cache=True, nogil=True)
def shuffle_buckets(out, counts, first, state, largest, line):  # pragma: no cover - compiled
    """Fisher-Yates on each bucket of out (sizes `counts`, laid out in order) from bucket `first` on; stops
    at a bucket larger than `largest` entries and returns (its index, or len(counts) when all are done;
    a checksum). Each bucket is read once in order first (one entry per `line` entries: a cache line),
    which the hardware prefetches, so the random swaps that follow hit the cache: the counting sort left
    the bucket in memory (11.7 M float32 entries: 33 ms -> 18 ms)."""
    start = 0
    for b in range(first):
        start += counts[b]
    touched = 0.0
    for b in range(first, counts.size):
        if counts[b] > largest:
            return b, touched
        part = out[start:start + counts[b]]
        for q in range(0, part.size, line):
            touched += part[q]
        fisher_yates(part, state)
        start += counts[b]
    return counts.size, touched
