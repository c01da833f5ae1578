"""What the store holds, as the proof reads it: the latest revision of each model and its layer rows.

The one place the proof queries the catalog's views (catalogs/catalog.py `connect`): the report, the
`plot` command for a stored model, the demo and validation all read through `latest_models` /
`latest_layers`. Models come from the `model_summaries` view (the latest revision of each model with
its layer aggregates and its tier in the default ranking) with `default_rank` added: the model's rank
in the default leaderboard (catalogs/catalog.py `leaderboard` without a metric: tier first, then (the
random-like tier by its own keys)
catalogs/metrics.py DEFAULT_METRIC within a tier), so the proof validates exactly what users see.
"""

from __future__ import annotations

import pandas as pd

from catalogs.catalog import connect, leaderboard

DEFAULT_RANK = "default_rank"  # the column latest_models adds: 1 = the default leaderboard's top model

# The latest revision of each repo_id, and the layer rows of exactly those model rows (one revision may
# have been analysed with several option sets: the join is on the whole provenance key).
_MODELS_SQL = "SELECT * FROM model_summaries WHERE repo_id = coalesce($repo_id, repo_id)"
_LAYERS_SQL = (
    "SELECT l.* FROM layers l JOIN (SELECT repo_id, revision, options_hash FROM models WHERE is_latest "
    "AND repo_id = coalesce($repo_id, repo_id)) m USING (repo_id, revision, options_hash) "
    "ORDER BY l.repo_id, l.layer_id"
)


def latest_models(data_root: str, *, repo_id: str | None = None):
    """The latest row of every repo_id (or of `repo_id` only) of the `model_summaries` view, with
    `default_rank` (module docstring), as a DataFrame in default-leaderboard order."""
    con = connect(data_root)
    try:
        models = con.execute(_MODELS_SQL, {"repo_id": repo_id}).df()
        cols, rows = leaderboard(con)  # the default ranking, over every latest model of the store
    finally:
        con.close()
    ranks = pd.DataFrame(rows, columns=cols)[["repo_id", "revision", "rank"]].rename(columns={"rank": DEFAULT_RANK})
    models = models.merge(ranks, on=["repo_id", "revision"], how="left", sort=False)
    return models.sort_values([DEFAULT_RANK, "repo_id"], na_position="last").reset_index(drop=True)


def latest_layers(data_root: str, *, repo_id: str | None = None):
    """The layer rows of those latest model rows, by repo_id then depth (layer_id), as a DataFrame."""
    con = connect(data_root)
    try:
        return con.execute(_LAYERS_SQL, {"repo_id": repo_id}).df()
    finally:
        con.close()


def model_layers(layers, row):
    """The rows of `layers` (latest_layers) that belong to one `models` row (same provenance key)."""
    keep = (layers["repo_id"] == row["repo_id"]) & (layers["revision"] == row["revision"]) \
        & (layers["options_hash"] == row["options_hash"])
    return layers[keep]
