-- revision_changes: each stored revision of a model next to the one analysed before it (same options),
-- with the change of every metric (delta_<metric> = this - previous; metric list from metrics.py).
CREATE OR REPLACE VIEW revision_changes AS
WITH r AS (
    SELECT
        *,
        lag(revision) OVER w AS previous_revision,
        lag(analyzed_at) OVER w AS previous_analyzed_at,
        {{metric_lags}}
    FROM models
    WINDOW w AS (PARTITION BY owner, repo_id, options_hash ORDER BY analyzed_at, revision)
)
SELECT
    repo_id, options_hash, owner, previous_revision, revision, previous_analyzed_at, analyzed_at,
    {{metric_deltas}}
FROM r
WHERE previous_revision IS NOT NULL;
