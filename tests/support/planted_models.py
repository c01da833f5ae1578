"""Matrices and small "trained-looking" models with planted spectra, for parity and truth tests.

Heavy-tailed weights are built as W = U diag(s) V^T with U, V random orthonormal and s^2 drawn from a
Pareto law (density ~ x^-alpha above 1, scaled), so the ESD has a power-law tail of known exponent.
"""

from __future__ import annotations

import numpy as np


def orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n x k matrix with orthonormal columns (k <= n)."""
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


def pareto_eigenvalues(rng: np.random.Generator, n: int, alpha: float, scale: float = 1.0) -> np.ndarray:
    """n samples with density proportional to x^-alpha on [scale, inf) (tail exponent alpha)."""
    return scale * (rng.pareto(alpha - 1.0, size=n) + 1.0)


def matrix_with_singular_values(rng: np.random.Generator, rows: int, cols: int, s: np.ndarray) -> np.ndarray:
    """rows x cols matrix whose singular values are s (len(s) == min(rows, cols)), float64."""
    m = min(rows, cols)
    assert len(s) == m
    U = orthonormal(rng, rows, m)
    V = orthonormal(rng, cols, m)
    return (U * np.asarray(s, dtype=np.float64)) @ V.T


def heavy_tailed(rng: np.random.Generator, rows: int, cols: int, alpha: float = 3.0) -> np.ndarray:
    """A trained-looking weight: a bulk of moderate singular values plus a Pareto tail (alpha)."""
    m = min(rows, cols)
    lam = pareto_eigenvalues(rng, m, alpha, scale=0.05)
    return matrix_with_singular_values(rng, rows, cols, np.sqrt(lam)).astype(np.float32)


def dense_model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sd = {}
    for i, (r, c, a) in enumerate([(192, 96, 2.5), (96, 192, 3.5), (160, 160, 4.0), (257, 64, 3.0)]):
        sd[f"blocks.{i}.fc.weight"] = heavy_tailed(rng, r, c, a)
        sd[f"blocks.{i}.fc.bias"] = rng.standard_normal(r).astype(np.float32)
        sd[f"blocks.{i}.norm.weight"] = np.ones(c, dtype=np.float32)
    sd["small.weight"] = heavy_tailed(rng, 30, 12, 3.0)  # 12 eigenvalues: WW's small-n rule
    sd["tiny.weight"] = rng.standard_normal((40, 5)).astype(np.float32)  # 5 < min_evals: skipped
    return sd


def conv_model(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sd = {}
    for name, (o, i, kh, kw) in {
        "conv1": (16, 3, 3, 3),  # 27 eigenvalues
        "conv2": (64, 32, 3, 3),
        "conv3": (32, 64, 3, 3),  # out < in, odd rf
        "conv4": (24, 48, 2, 2),  # out < in, even rf: WW swaps N/M (its bug)
        "conv5": (48, 40, 1, 1),
    }.items():
        w = np.stack([heavy_tailed(rng, o, i, 3.0) for _ in range(kh * kw)], axis=-1)
        sd[f"{name}.weight"] = np.ascontiguousarray(w.reshape(o, i, kh, kw))
        sd[f"{name}.bias"] = rng.standard_normal(o).astype(np.float32)
    sd["fc.weight"] = heavy_tailed(rng, 10, 120, 3.0)
    return sd


def embedding_model(seed: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "embed_tokens.weight": heavy_tailed(rng, 1000, 64, 3.0),
        "layers.0.q_proj.weight": heavy_tailed(rng, 64, 64, 3.5),
        "layers.0.up_proj.weight": heavy_tailed(rng, 172, 64, 2.5),
        "lm_head.weight": heavy_tailed(rng, 1000, 64, 3.0),
        "big_vocab.weight": (0.02 * rng.standard_normal((50001, 8))).astype(np.float32),  # N > max_N
    }
