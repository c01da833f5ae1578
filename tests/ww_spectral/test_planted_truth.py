"""Planted truth: eigenvalues with a Pareto tail of exponent 2.5 and 4.0 (n = 500), seeds 0-99.

The mean estimate must be within 0.05 of the planted exponent and >= 95% of the estimates within 0.4,
for the fitter on the samples directly and through a matrix with those singular values (the whole
spectrum path: float32 Gram + eigensolve + fit).
"""

from __future__ import annotations

import numpy as np
import pytest
from support.planted_models import orthonormal, pareto_eigenvalues
from threadpoolctl import threadpool_limits

from ww_spectral.fit import fit_power_law
from ww_spectral.spectrum import eigenvalues

pytestmark = pytest.mark.slow

N_EVALS = 500
SEEDS = range(100)


@pytest.fixture(scope="module")
def basis():
    rng = np.random.default_rng(20240601)
    with threadpool_limits(1):
        return orthonormal(rng, N_EVALS, N_EVALS), orthonormal(rng, 2 * N_EVALS, N_EVALS)


def _check(estimates: np.ndarray, alpha: float) -> None:
    assert abs(estimates.mean() - alpha) <= 0.05, estimates.mean()
    assert np.mean(np.abs(estimates - alpha) <= 0.4) >= 0.95


@pytest.mark.parametrize("alpha", [2.5, 4.0])
def test_fitter_recovers_planted_exponent(alpha):
    est = np.array([fit_power_law(pareto_eigenvalues(np.random.default_rng(s), N_EVALS, alpha)).alpha
                    for s in SEEDS])
    _check(est, alpha)


@pytest.mark.parametrize("alpha", [2.5, 4.0])
def test_matrix_with_planted_singular_values(alpha, basis):
    V, U = basis  # W (1000 x 500) = U diag(sqrt(lambda)) V^T: its ESD is exactly lambda
    est, direct = [], []
    with threadpool_limits(1):
        for s in SEEDS:
            lam = pareto_eigenvalues(np.random.default_rng(s), N_EVALS, alpha)
            W = ((U * np.sqrt(lam)) @ V.T).astype(np.float32)
            ev = eigenvalues(W, precision="float32")
            np.testing.assert_allclose(ev, np.sort(lam), rtol=0, atol=2e-5 * lam.max())
            est.append(fit_power_law(ev).alpha)
            direct.append(fit_power_law(lam).alpha)
    _check(np.array(est), alpha)
    # float32 round-off moves the estimate far less than the sampling noise
    assert np.max(np.abs(np.array(est) - np.array(direct))) < 1e-3
