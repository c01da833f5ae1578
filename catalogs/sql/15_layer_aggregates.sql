-- layer_aggregates_in(files, repo): per stored model revision (record_key), aggregates of its layer rows:
-- counts of out-of-band alphas and correlation-trap candidates, alpha range. repo (optional): only the
-- rows of that repo_id (a drill-down; NULL = every model). Used by model_summaries and `show`.
CREATE OR REPLACE MACRO layer_aggregates_in(files, repo := NULL) AS TABLE
SELECT
    record_key,
    count(*) AS n_layer_rows,
    min(alpha) AS alpha_min,
    max(alpha) AS alpha_max,
    count(*) FILTER (WHERE alpha_lt_2) AS n_alpha_lt_2,
    count(*) FILTER (WHERE alpha_gt_6) AS n_alpha_gt_6,
    count(*) FILTER (WHERE is_correlation_trap_candidate) AS n_trap_candidates
FROM layers_in(files)
WHERE repo IS NULL OR repo_id = repo
GROUP BY record_key;
