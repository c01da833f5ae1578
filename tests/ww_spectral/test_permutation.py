"""permute (ww_spectral/permutation.py): an exact uniform random permutation, compiled, on both paths (one
Fisher-Yates pass; the two-level bucket shuffle, with recursion), reproducible from the generator's state."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import scipy.stats

from ww_spectral.permutation import _kernels, permute, seed_state
from ww_spectral.randomize import shuffle_rng


@pytest.mark.parametrize("two_level", [False, True], ids=["fisher-yates", "two-level"])
def test_every_order_is_equally_likely(two_level):
    # 4 entries: all 24 orders, chi-square on 6000 draws (bucket=1, min_size=0: 4 buckets of 1 on average)
    rng = np.random.default_rng(0)
    options = {"bucket": 1, "min_size": 0} if two_level else {}
    seen = Counter(tuple(permute(np.arange(4), rng, **options).tolist()) for _ in range(6000))
    assert len(seen) == 24 and scipy.stats.chisquare(list(seen.values())).pvalue > 1e-4


def test_recursive_buckets_lose_position_and_order():
    # 2100 entries in 256 buckets of 8 on average (larger ones are split again): an entry from any block of
    # 100 positions lands in any block alike, and the order of entries is lost
    rng = np.random.default_rng(1)
    moves = np.zeros((21, 21))
    for _ in range(200):
        out = permute(np.arange(2100), rng, bucket=1, min_size=0)
        np.add.at(moves, (out // 100, np.arange(2100) // 100), 1)
        assert abs(scipy.stats.spearmanr(out, np.arange(2100)).statistic) < 5 / math.sqrt(2100)
        assert np.array_equal(np.sort(out), np.arange(2100))
    assert scipy.stats.chisquare(moves.ravel()).pvalue > 1e-4


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.uint64])
def test_draws_depend_on_the_size_only_so_positions_replay_them(dtype):
    # what randomize's trap location relies on: the same generator state permutes values and positions alike
    W = np.random.default_rng(2).standard_normal((300, 250)).astype(np.float32).astype(dtype)
    for options in ({"bucket": 1000, "min_size": 0}, {}):
        flat = permute(W.ravel(), shuffle_rng(1, "x", 0, 0), **options)
        positions = permute(np.arange(W.size), shuffle_rng(1, "x", 0, 0), **options)
        assert np.array_equal(flat, W.ravel()[positions]) and not np.array_equal(flat, W.ravel())
    original = W.copy()
    permute(W.ravel(), shuffle_rng(1, "x", 0, 0))
    assert np.array_equal(W, original)  # the input is never modified


_MASK64 = (1 << 64) - 1


class _Xoshiro:
    """xoshiro256** in Python integers, from its authors' reference C code: the words the kernels must draw."""

    def __init__(self, state):
        self.s = [int(x) for x in state]

    def next64(self) -> int:
        s = self.s
        rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & _MASK64  # noqa: E731
        result = (rotl((s[1] * 5) & _MASK64, 7) * 9) & _MASK64
        t = (s[1] << 17) & _MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result


def _reference_fisher_yates(a: list, gen: _Xoshiro) -> None:
    spare = None
    for i in range(len(a) - 1, 0, -1):
        bound = i + 1
        while True:
            if spare is not None:
                word, spare = spare, None
            else:
                r = gen.next64()
                word, spare = r & 0xFFFFFFFF, r >> 32
            m = word * bound
            if (m & 0xFFFFFFFF) >= (1 << 32) % bound:  # Lemire: reject the few low halves below 2^32 mod bound
                break
        j = m >> 32
        a[i], a[j] = a[j], a[i]


def _reference_permute(n: int, state, bucket: int, min_size: int) -> list:
    gen = _Xoshiro(state)

    def perm(items: list) -> list:
        buckets = 256
        while buckets > 1 and len(items) // buckets < bucket:
            buckets //= 2
        if buckets < 2 or len(items) < min_size:
            out = list(items)
            _reference_fisher_yates(out, gen)
            return out
        labels = []
        while len(labels) < len(items):
            r = gen.next64()
            labels += [(r >> (8 * b)) & (buckets - 1) for b in range(8)]
        groups = [[x for x, lab in zip(items, labels) if lab == g] for g in range(buckets)]
        out = []
        for g in groups:
            if len(g) > 8 * bucket:
                out += perm(g)
            else:
                _reference_fisher_yates(g, gen)
                out += g
        return out

    return perm(list(range(n)))


@pytest.mark.parametrize(("n", "bucket", "min_size"), [(1, 1, 0), (2, 8, 1 << 30), (37, 8, 1 << 30), (1000, 2, 0),
                                                       (2100, 1, 0), (5000, 64, 0)])
def test_the_kernels_draw_exactly_the_reference_algorithm(n, bucket, min_size):
    # xoshiro256** seeded from the generator, Lemire's bounded draws with rejection, the labels (one byte per
    # entry, drawn twice in the kernel), the buckets in order, recursion: the same permutation as a plain
    # Python reading of the docstring
    rng = np.random.default_rng(n)
    state = seed_state(np.random.default_rng(n))
    ours = permute(np.arange(n), rng, bucket=bucket, min_size=min_size)
    assert ours.tolist() == _reference_permute(n, state, bucket, min_size)


def test_rejection_redraws_with_the_next_word():
    # A state whose first output is 0x7FFFFFFF_00000000: the first word is 0, which Lemire's method rejects for
    # bound 3 (low half 0 < 2^32 mod 3 = 1); the next word (0x7FFFFFFF) then gives j = 0x7FFFFFFF * 3 >> 32 = 1.
    first = 0x7FFFFFFF << 32
    inv = lambda odd: pow(odd, -1, 1 << 64)  # noqa: E731
    x = (first * inv(9)) & _MASK64
    s1 = ((((x >> 7) | (x << 57)) & _MASK64) * inv(5)) & _MASK64
    state = np.array([1, s1, 2, 3], dtype=np.uint64)
    assert _Xoshiro(state).next64() == first
    fisher_yates, _, _ = _kernels()
    a = np.arange(3)
    fisher_yates(a, state.copy())
    expected = list(range(3))
    _reference_fisher_yates(expected, _Xoshiro(state))
    # i = 2 swaps with j = 1 (not 0, which accepting the zero word would give), and i = 1 never touches a[2]
    assert a.tolist() == expected and a[2] == 1
    assert seed_state(np.random.Generator(np.random.PCG64(0))).dtype == np.uint64


def test_out_receives_the_same_permutation():
    flat = np.random.default_rng(4).standard_normal(5000).astype(np.float32)
    for options in ({}, {"bucket": 64, "min_size": 0}):
        buf = np.full(5000, np.nan, np.float32)
        got = permute(flat, shuffle_rng(2, "o", 0, 0), out=buf, **options)
        assert got is buf and np.array_equal(buf, permute(flat, shuffle_rng(2, "o", 0, 0), **options))
    for bad in (np.empty(4999, np.float32), np.empty(5000, np.float64), np.empty(10000, np.float32)[::2], flat):
        with pytest.raises(ValueError, match="out must be"):
            permute(flat, np.random.default_rng(0), out=bad)


def test_not_1d_is_refused():
    with pytest.raises(ValueError):
        permute(np.zeros((2, 2)), np.random.default_rng(0))
