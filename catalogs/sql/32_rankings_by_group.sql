-- rankings_by_group: every latest model ranked by every metric within each comparable group kind
-- (group_by in architecture, model_type, param_bucket, pipeline_tag, family); models whose group value
-- is NULL are not ranked in that grouping; within one option set (options_hash, as rankings).
CREATE OR REPLACE VIEW rankings_by_group AS
WITH g AS (
    UNPIVOT (
        SELECT repo_id, revision, options_hash, metric, value, architecture, model_type, param_bucket,
               pipeline_tag, family
        FROM model_metrics_long
    ) ON architecture, model_type, param_bucket, pipeline_tag, family INTO NAME group_by VALUE group_value
)
SELECT
    g.metric, g.group_by, g.group_value,
    rank() OVER (PARTITION BY g.metric, g.options_hash, g.group_by, g.group_value ORDER BY mt.sign * g.value) AS rank,
    count(*) OVER (PARTITION BY g.metric, g.options_hash, g.group_by, g.group_value) AS n_in_group,
    g.repo_id, g.revision, g.value, mt.direction, g.options_hash
FROM g
JOIN metrics mt ON mt.column_name = g.metric;
