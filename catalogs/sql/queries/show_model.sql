-- show_model: one model's latest (or given) revision: its summary row with layer aggregates.
-- Parameters: $repo_id, $revision (NULL = latest); $model_files/$model_cfiles and
-- $layer_files/$layer_cfiles: the files of the model's owner= folder (all / compacted, seed included).
WITH agg AS (
    SELECT
        record_key,
        count(*) AS n_layer_rows,
        min(alpha) AS alpha_min,
        max(alpha) AS alpha_max,
        count(*) FILTER (WHERE alpha_lt_2) AS n_alpha_lt_2,
        count(*) FILTER (WHERE alpha_gt_6) AS n_alpha_gt_6,
        count(*) FILTER (WHERE is_correlation_trap_candidate) AS n_trap_candidates
    FROM layers_in($layer_files, $layer_cfiles)
    WHERE repo_id = $repo_id
    GROUP BY record_key
)
SELECT m.* EXCLUDE (is_latest), agg.* EXCLUDE (record_key)
FROM models_in($model_files, $model_cfiles) m
LEFT JOIN agg USING (record_key)
WHERE m.repo_id = $repo_id
  AND (m.revision = $revision OR ($revision IS NULL AND m.is_latest))
ORDER BY m.analyzed_at DESC
LIMIT 1
