-- revision_changes: each stored revision of a model next to the one analysed before it (same options),
-- with the change of every metric (delta_<metric> = this - previous; metric list from catalogs/metrics.py,
-- placeholder metric_columns filled in at build time).
CREATE OR REPLACE VIEW revision_changes AS
WITH r AS (
    SELECT owner, repo_id, options_hash, revision, analysed_at, {{metric_columns}}
    FROM models
)
SELECT
    repo_id, options_hash, owner,
    lag(revision) OVER w AS previous_revision,
    revision,
    lag(analysed_at) OVER w AS previous_analysed_at,
    analysed_at,
    COLUMNS(* EXCLUDE (owner, repo_id, options_hash, revision, analysed_at))
        - lag(COLUMNS(* EXCLUDE (owner, repo_id, options_hash, revision, analysed_at))) OVER w AS 'delta_\0'
FROM r
WINDOW w AS (PARTITION BY owner, repo_id, options_hash ORDER BY analysed_at, revision)
QUALIFY previous_revision IS NOT NULL;
