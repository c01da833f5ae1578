"""Each metric on eigenvalues whose values are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ww_spectral.metrics import (
    RAND_DISTANCE_MIN,
    TW_PAD,
    entropy,
    layer_metrics,
    looks_random,
    matrix_rank,
    mp_edge,
)


def test_dense_metrics_from_known_singular_values():
    sv = np.array([0.5, 1.0, 2.0, 4.0])
    lam = sv**2  # 0.25, 1, 4, 16
    m = layer_metrics([lam], N=10, alpha=2.0, precision="float64")
    assert m["norm"] == pytest.approx(21.25)
    assert m["log_norm"] == pytest.approx(math.log10(21.25))
    assert m["spectral_norm"] == m["lambda_max"] == 16.0
    assert m["log_spectral_norm"] == pytest.approx(math.log10(16))
    assert m["alpha_weighted"] == pytest.approx(2.0 * math.log10(16))
    assert m["log_alpha_norm"] == pytest.approx(math.log10(0.25**2 + 1 + 16 + 256))
    assert m["stable_rank"] == pytest.approx(21.25 / 16)
    assert m["sv_max"] == 4.0 and m["sv_min"] == 0.5
    assert m["matrix_rank"] == 4 and m["rank_loss"] == 0 and m["weak_rank_loss"] == 0
    p = lam / lam.sum() + 1e-10
    assert m["entropy"] == pytest.approx(-np.sum(p * np.log(p)) / math.log(4 + 1e-10))


def test_rank_columns_with_exact_zeros():
    lam = np.array([0.0, 0.0, 5e-7, 1.0, 9.0])
    m = layer_metrics([lam], N=7, alpha=3.0, precision="float64")
    # sigma > sigma_max * N * eps(float64): 5e-7 -> sigma 7e-4 counts; exact zeros do not
    assert m["matrix_rank"] == 3 and m["rank_loss"] == 2
    assert m["weak_rank_loss"] == 3  # lambda < 1e-6
    assert m["sv_min"] == 0.0


def test_float32_round_off_counts_as_zero_for_rank():
    lam = np.array([3e-7, 2.0, 50.0, 100.0])  # 3e-7 is below float32 round-off of lambda_max=100
    m32 = layer_metrics([lam], N=4, alpha=3.0, precision="float32")
    m64 = layer_metrics([lam], N=4, alpha=3.0, precision="float64")
    assert m64["matrix_rank"] == 4 and m32["matrix_rank"] == 3
    assert m32["rank_loss"] == 1 and m32["weak_rank_loss"] == 1


def test_conv_slices_follow_ww_per_slice_rules():
    a = np.array([1.0, 4.0])  # slice minima: sqrt(1)=1 and sqrt(0.25)=0.5
    b = np.array([0.25, 9.0])
    m = layer_metrics([a, b], N=3, alpha=2.0, precision="float64")
    assert m["sv_min"] == 1.0  # WW: the largest of the slices' smallest singular values
    assert m["sv_max"] == 3.0
    assert m["norm"] == pytest.approx(14.25)
    assert m["matrix_rank"] == 4


def test_failed_alpha_gives_nan_alpha_columns():
    m = layer_metrics([np.array([1.0, 2.0, 3.0])], N=3, alpha=math.nan)
    assert math.isnan(m["alpha_weighted"]) and math.isnan(m["log_alpha_norm"])
    assert m["norm"] == 6.0


def test_all_zero_layer():
    m = layer_metrics([np.zeros(5)], N=8, alpha=math.nan)
    assert m["norm"] == 0 and m["matrix_rank"] == 0 and m["rank_loss"] == 5 and m["weak_rank_loss"] == 5
    assert math.isnan(m["log_norm"]) and math.isnan(m["stable_rank"]) and math.isnan(m["entropy"])


def test_helpers():
    assert matrix_rank(np.array([]), 3) == 0
    assert matrix_rank(np.array([1.0, 1.0]), 2, floor=2.0) == 0
    assert math.isnan(entropy(np.zeros(3), 0))
    # uniform spectrum of rank r has entropy ~1
    assert entropy(np.ones(16), 16) == pytest.approx(1.0, abs=1e-6)


def test_looks_random_against_a_random_matrix_and_a_spike():
    """A Gaussian N x M matrix's lambda_max sits at the Marchenko-Pastur edge (inside the Tracy-Widom pad);
    the same matrix with one planted rank-1 spike does not; rand_distance alone can flag a layer; a
    skipped or failed layer, or a missing spectrum, never looks random."""
    rng = np.random.default_rng(5)
    n, m = 400, 100
    w = rng.standard_normal((n, m))
    spiked = w + 3.0 * np.outer(rng.standard_normal(n), rng.standard_normal(m)) / math.sqrt(m)
    rows = []
    for x in (w, spiked):
        lam = np.linalg.eigvalsh(x.T @ x)
        rows.append((float(lam.max()), float(lam.sum()), lam.size))
    lam_max, norm, k = (np.array(c) for c in zip(*rows))
    edge = mp_edge(norm, k, n, m)
    assert edge[0] == pytest.approx(norm[0] / m * (1 + math.sqrt(m / n)) ** 2)
    flags = looks_random(["success"] * 2, lam_max, norm, k, n, m, [math.nan] * 2)
    assert flags.tolist() == [True, False]
    near = RAND_DISTANCE_MIN / 2  # the shuffled spectrum is the same: random whatever lambda_max says
    assert looks_random("success", lam_max[1], norm[1], k[1], n, m, near)
    assert not looks_random("success", lam_max[1], norm[1], k[1], n, m, 2 * RAND_DISTANCE_MIN)
    assert not looks_random("skipped", lam_max[0], norm[0], k[0], n, m, near)
    assert not looks_random("success", math.nan, math.nan, 0, n, m, math.nan)
    pad = (1 / math.sqrt(m) + 1 / math.sqrt(n)) ** (1 / 3) / (math.sqrt(n) + math.sqrt(m))
    at = edge[0] * (1 + TW_PAD * pad)  # the boundary itself counts as random, just above does not
    assert looks_random("success", at, norm[0], k[0], n, m, None)
    assert not looks_random("success", at * 1.001, norm[0], k[0], n, m, None)
