"""The default leaderboard on really trained nets of one shape (issue 13's "Must show"): every randomly
initialised model ranks below every trained one, barely trained included.

Six small conv nets of the conv zoo's architecture (pipelines/proof/zoo_cnn.py), trained for seconds in the
zoo's pinned processes: 0 epochs (the random initialisation), 1 epoch (barely trained) and 6 epochs, two seeds
each; analysed by the library and stored as a scan stores them; ranked by catalogs/catalog.py `leaderboard`.
tests/catalogs/test_catalog_tiers.py holds the same on planted spectra, where the rule before the
pre-registered split (pipelines/proof/PREREGISTRATION.md) fails.
"""

from __future__ import annotations

import pytest

from catalogs import catalog
from pipelines.proof import zoo_cnn
from pipelines.proof.zoo import build_zoo
from pipelines.proof.zoo_spec import Sweep

GRID = zoo_cnn.ConvGrid(channels=(8, 16, 32), hidden=64, train_size=600, base_epochs=6,
                        sweeps=(Sweep("epochs", "epochs", (0, 1, 6)),), seeds=(0, 1))


@pytest.fixture(scope="module")
def ranked(tmp_path_factory, store_models):
    root = tmp_path_factory.mktemp("random-last")
    build_zoo(root / "zoo", grid=GRID, workers=2)
    specs = GRID.specs()
    store_models(root / "data", [root / "zoo" / s.name for s in specs], workers=1)
    con = catalog.connect(str(root / "data"))
    try:
        cols, rows = catalog.leaderboard(con)
    finally:
        con.close()
    epochs = {s.name: s.epochs for s in specs}
    return [(epochs[r[cols.index("repo_id")]], r[cols.index("rank")], r[cols.index("tier")]) for r in rows]


def test_every_random_init_model_ranks_below_every_trained_one(ranked):
    default = ranked
    assert len(default) == 6
    random_ranks = [rank for ep, rank, _ in default if ep == 0]
    trained_ranks = [rank for ep, rank, _ in default if ep > 0]
    assert len(random_ranks) == 2 and max(trained_ranks) < min(random_ranks), default
    assert {tier for ep, _, tier in default if ep == 0} == {4}  # random-like, with the reason in the row

