"""permute (ww_spectral/permutation.py): an exact uniform random permutation, compiled, on both paths (one
Fisher-Yates pass; the two-level bucket shuffle, with recursion), reproducible from the generator's state."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import scipy.stats

from ww_spectral.permutation import _kernels, permute
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


def test_fisher_yates_continues_where_its_words_ran_out():
    # The kernel stops at the index whose draw had no word left; continuing there with the remaining words
    # gives exactly the shuffle of one call with all of them.
    fisher_yates, _ = _kernels()
    words = np.random.default_rng(3).integers(0, 2**32, 200, dtype=np.uint32)
    whole = np.arange(100)
    assert fisher_yates(whole, 99, words) == 0
    pieces = np.arange(100)
    reached = fisher_yates(pieces, 99, words[:40])
    assert reached == 59  # 40 words: indices 99..60 drew (none of these words is rejected)
    assert fisher_yates(pieces, reached, words[40:]) == 0
    assert np.array_equal(whole, pieces)
    # Rejection: with i + 1 = 3, the word whose low product half is below 2**32 mod 3 = 1 is redrawn.
    a = np.arange(3)
    assert fisher_yates(a, 2, np.array([0, 2**31, 0], dtype=np.uint32)) == 0  # word 0: low half 0 < 1 -> next
    # i = 2: 2**31 * 3 >> 32 = 1, swap a[2] and a[1] -> [0, 2, 1]; i = 1: 0 * 2 >> 32 = 0 (2**32 mod 2 = 0:
    # nothing rejected), swap a[1] and a[0] -> [2, 0, 1]
    assert a.tolist() == [2, 0, 1]


def test_not_1d_is_refused():
    with pytest.raises(ValueError):
        permute(np.zeros((2, 2)), np.random.default_rng(0))
