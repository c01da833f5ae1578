-- model_summaries_in(files, repo): every stored model revision (models_in) with its tier in the default
-- ranking (16_model_tier.sql) and the aggregates of its layers (15_layer_aggregates.sql):
--   tier, tier_name          see catalogs/metrics.py; computed from the models row alone
--   share_random_like        share of the analysed layers that look like a random matrix (stored with
--                            n_layers_random_like when the model was analysed, ww_spectral/summary.py)
-- Files written before schema version 4 (catalogs/schema.py) lack those two columns: for those models
-- only (`counted`), they are counted from the layer rows with the same rule (05_layer_flags.sql); when no
-- models row lacks them the semi-join is empty and no layer row is aggregated for it.
-- repo (optional): only that repo_id's layer rows are aggregated (a drill-down, `show`).
-- model_summaries: the latest revision of each model; what the default leaderboard ranks. A query that
-- uses none of the layer aggregates' columns (the leaderboard) reads no layer file: DuckDB drops the
-- unused LEFT JOIN of layer_aggregates_in (benchmarks/bench_catalog.py times it).
CREATE OR REPLACE MACRO model_summaries_in(files, repo := NULL) AS TABLE
WITH m AS (
    SELECT * FROM models_in(files)
),
counted AS (
    SELECT record_key,
           count(*) FILTER (WHERE looks_random(status, lambda_max, norm, num_evals, N, M, rand_distance))
               AS n_random_like
    FROM raw_layers_in(files)
    WHERE record_key IN (SELECT record_key FROM m WHERE n_layers_random_like IS NULL)
      AND (repo IS NULL OR repo_id = repo)
    GROUP BY record_key
),
r AS (
    SELECT m.* REPLACE (
        coalesce(m.n_layers_random_like, c.n_random_like) AS n_layers_random_like,
        CASE WHEN m.n_layers_analysed > 0
             THEN coalesce(m.share_random_like, c.n_random_like / m.n_layers_analysed) END AS share_random_like)
    FROM m LEFT JOIN counted c USING (record_key)
),
s AS (
    SELECT
        r.*,
        agg.* EXCLUDE (record_key),
        model_tier(r.n_layers_analysed, r.share_alpha_2_6, r.share_random_like, r.alpha_median) AS tier
    FROM r
    LEFT JOIN layer_aggregates_in(files, repo := repo) agg USING (record_key)
)
SELECT repo_id, revision, tier, tier_name(tier) AS tier_name, share_alpha_2_6, share_random_like,
       * EXCLUDE (repo_id, revision, tier, share_alpha_2_6, share_random_like)
FROM s;

CREATE OR REPLACE VIEW model_summaries AS
SELECT * EXCLUDE (is_latest) FROM model_summaries_in(store_files()) WHERE is_latest;
