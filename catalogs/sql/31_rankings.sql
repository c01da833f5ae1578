-- rankings: every latest model ranked by every metric, over all models of one option set (ranks never mix
-- option sets: filter on options_hash, e.g. the default analysis's, AnalysisOptions().fingerprint()).
-- Direction comes from the `metrics` table (catalogs/metrics.py): sign = +1 lower is better, -1 higher is better.
CREATE OR REPLACE VIEW rankings AS
SELECT
    l.metric,
    rank() OVER (PARTITION BY l.metric, l.options_hash ORDER BY mt.sign * l.value) AS rank,
    count(*) OVER (PARTITION BY l.metric, l.options_hash) AS n_ranked,
    l.repo_id, l.revision, l.value, mt.direction,
    l.owner, l.architecture, l.model_type, l.param_bucket, l.pipeline_tag, l.family, l.library, l.options_hash
FROM model_metrics_long l
JOIN metrics mt ON mt.column_name = l.metric;
