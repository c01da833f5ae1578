-- layer_aggregates_in(files, repo): per stored model revision (record_key), counts of its layer rows by
-- the flags of 05_layer_flags.sql (in the band, below, above, random-like, correlation-trap candidates)
-- and the alpha range. repo (optional): only the rows of that repo_id (a drill-down; NULL = every model).
-- Reads the raw rows (no completeness filter): every user joins the result to a models row on record_key.
-- Used by model_summaries and `show` (20_model_summaries.sql).
CREATE OR REPLACE MACRO layer_aggregates_in(files, repo := NULL) AS TABLE
SELECT
    record_key,
    count(*) AS n_layer_rows,
    count(*) FILTER (WHERE status = 'success') AS n_fitted,
    min(alpha) AS alpha_min,
    max(alpha) AS alpha_max,
    count(*) FILTER (WHERE alpha_in_band(status, alpha)) AS n_alpha_in_2_6,
    count(*) FILTER (WHERE alpha_below_band(status, alpha)) AS n_alpha_lt_2,
    count(*) FILTER (WHERE alpha_above_band(status, alpha)) AS n_alpha_gt_6,
    count(*) FILTER (WHERE looks_random(status, lambda_max, norm, num_evals, N, M, rand_distance))
        AS n_random_like,
    count(*) FILTER (WHERE is_trap_candidate(status, num_fingers, lambda_max, norm, num_evals, N, M))
        AS n_trap_candidates
FROM raw_layers_in(files)
WHERE repo IS NULL OR repo_id = repo
GROUP BY record_key;
