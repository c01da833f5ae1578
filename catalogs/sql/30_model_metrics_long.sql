-- model_metrics_long: one row per (latest model of an option set, metric) with a non-NULL value; the metric
-- columns come from catalogs/metrics.py (placeholder metric_columns, filled in at build time). options_hash
-- says which option set (models_latest holds each set side by side).
CREATE OR REPLACE VIEW model_metrics_long AS
UNPIVOT (
    SELECT repo_id, revision, record_key, owner, architecture, model_type, param_bucket, pipeline_tag,
           family, library, options_hash, {{metric_columns}}
    FROM models_latest
) ON {{metric_columns}} INTO NAME metric VALUE value;
