-- model_summaries: the latest revision of each model with layer-level aggregates beside its summary
-- (counts of out-of-band alphas and correlation-trap candidates, alpha range).
CREATE OR REPLACE VIEW model_summaries AS
WITH agg AS (
    SELECT
        record_key,
        count(*) AS n_layer_rows,
        min(alpha) AS alpha_min,
        max(alpha) AS alpha_max,
        count(*) FILTER (WHERE alpha_lt_2) AS n_alpha_lt_2,
        count(*) FILTER (WHERE alpha_gt_6) AS n_alpha_gt_6,
        count(*) FILTER (WHERE is_correlation_trap_candidate) AS n_trap_candidates
    FROM layers
    GROUP BY record_key
)
SELECT m.*, agg.* EXCLUDE (record_key)
FROM models_latest m
LEFT JOIN agg USING (record_key);
