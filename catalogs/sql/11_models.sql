-- models: one row per stored model revision (+ options). Columns in reading order: repo_id, revision,
-- the metrics of catalogs/metrics.py ({{metric_columns}}), the layer counts and model facts, the
-- comparable-group columns, then provenance ({{provenance_columns}}, owner):
--   param_bucket  parameter-count bucket (<100M, 100M-1B, 1B-10B, 10B-100B, >=100B, unknown)
--   family        base model family: base_model when the model is a fine-tune, else its own repo_id
--   is_latest     the most recently analysed revision of this repo_id (any options)
-- models_in(files): the same over the files of a store_files() STRUCT (see 00_store_files.sql).
CREATE OR REPLACE MACRO models_in(files) AS TABLE
WITH m AS (
    SELECT
        *,
        CASE
            WHEN parameter_count IS NULL THEN 'unknown'
            WHEN parameter_count < 100000000 THEN '<100M'
            WHEN parameter_count < 1000000000 THEN '100M-1B'
            WHEN parameter_count < 10000000000 THEN '1B-10B'
            WHEN parameter_count < 100000000000 THEN '10B-100B'
            ELSE '>=100B'
        END AS param_bucket,
        coalesce(base_model, repo_id) AS family,
        row_number() OVER (PARTITION BY owner, repo_id ORDER BY analysed_at DESC, revision DESC, options_hash) = 1
            AS is_latest
    FROM raw_models_in(files)
)
SELECT
    repo_id, revision, {{metric_columns}},
    * EXCLUDE (repo_id, revision, {{metric_columns}}, {{provenance_columns}}, owner),
    {{provenance_columns}}, owner
FROM m;

CREATE OR REPLACE VIEW models AS FROM models_in(store_files());
