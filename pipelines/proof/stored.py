"""What the store holds, as the proof reads it: the latest revision of each model and its layer rows.

The one place the proof queries the catalog's views (catalogs/catalog.py `connect`): the report, the
`plot` command for a stored model and validation all read through `latest_models` / `latest_layers`.
"""

from __future__ import annotations

from catalogs.catalog import connect

# The latest revision of each repo_id, and the layer rows of exactly those model rows (one revision may
# have been analysed with several option sets: the join is on the whole provenance key).
_MODELS_SQL = "SELECT * FROM models WHERE is_latest AND repo_id = coalesce($repo_id, repo_id)"
_LAYERS_SQL = (
    "SELECT l.* FROM layers l JOIN (SELECT repo_id, revision, options_hash FROM models WHERE is_latest "
    "AND repo_id = coalesce($repo_id, repo_id)) m USING (repo_id, revision, options_hash) "
    "ORDER BY l.repo_id, l.layer_id"
)


def _query(data_root: str, sql: str, repo_id: str | None):
    con = connect(data_root)
    try:
        return con.execute(sql, {"repo_id": repo_id}).df()
    finally:
        con.close()


def latest_models(data_root: str, *, repo_id: str | None = None):
    """The `models` view's latest row of every repo_id (or of `repo_id` only) as a DataFrame."""
    return _query(data_root, _MODELS_SQL, repo_id)


def latest_layers(data_root: str, *, repo_id: str | None = None):
    """The layer rows of those latest model rows, by repo_id then depth (layer_id), as a DataFrame."""
    return _query(data_root, _LAYERS_SQL, repo_id)


def model_layers(layers, row):
    """The rows of `layers` (latest_layers) that belong to one `models` row (same provenance key)."""
    keep = (layers["repo_id"] == row["repo_id"]) & (layers["revision"] == row["revision"]) \
        & (layers["options_hash"] == row["options_hash"])
    return layers[keep]
