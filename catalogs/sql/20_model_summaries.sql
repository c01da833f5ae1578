-- model_tiers_in(files, repo): every stored model revision (models_in) with its tier in the default ranking
-- (16_model_tier.sql), computed from the models row alone:
--   tier, tier_name          see catalogs/metrics.py
--   share_random_like        share of the analysed layers that look like a random matrix (stored with
--                            n_layers_random_like when the model was analysed, ww_spectral/summary.py)
-- Files written before schema version 4 (catalogs/schema.py) lack those two columns: for those models
-- only (`counted`), they are counted from the layer rows with the same rule (05_layer_flags.sql); when no
-- models row lacks them the semi-join is empty and DuckDB's join filter skips the layer files' row groups.
-- What a ranking reads (the default leaderboard): it joins no per-layer aggregate, so it costs about what
-- the models files cost (benchmarks/bench_catalog.py).
-- repo (optional): only that repo_id's layer rows are counted (a drill-down, `show`).
CREATE OR REPLACE MACRO model_tiers_in(files, repo := NULL) AS TABLE
WITH m AS (
    SELECT * FROM models_in(files)
),
counted AS (
    -- The layer files read directly, not through raw_layers_in: its compaction de-duplication reads the
    -- record_key of every compacted layer row even when no model needs counting. A record held by both a
    -- per-model and a compacted file (mid-compaction) has identical rows there: DISTINCT counts it once.
    SELECT record_key, count(*) FILTER (WHERE is_random) AS n_random_like
    FROM (
        SELECT DISTINCT record_key, layer_id, slice_id,
               looks_random(status, lambda_max, norm, num_evals, N, M, rand_distance) AS is_random
        FROM read_parquet(files['layers'], union_by_name = true, hive_partitioning = true)
        WHERE record_key IN (SELECT record_key FROM m WHERE n_layers_random_like IS NULL)
          AND (repo IS NULL OR repo_id = repo)
    )
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
    SELECT *, model_tier(n_layers_analysed, share_alpha_2_6, share_random_like, alpha_median) AS tier FROM r
)
SELECT repo_id, revision, tier, tier_name(tier) AS tier_name, share_alpha_2_6, share_random_like,
       * EXCLUDE (repo_id, revision, tier, share_alpha_2_6, share_random_like)
FROM s;

-- model_summaries_in(files, repo): model_tiers_in with the aggregates of each revision's layers
-- (15_layer_aggregates.sql: counts in / below / above the band, random-like, trap candidates, alpha range);
-- repo (optional): only that repo_id's layer rows are aggregated (a drill-down, `show`). It reads every
-- layer file: rankings read model_tiers_in instead.
CREATE OR REPLACE MACRO model_summaries_in(files, repo := NULL) AS TABLE
SELECT t.*, agg.* EXCLUDE (record_key)
FROM model_tiers_in(files, repo := repo) t
LEFT JOIN layer_aggregates_in(files, repo := repo) agg USING (record_key);

-- model_summaries: the latest revision of each model with its tier and layer aggregates (`sql` users);
-- model_tiers: the same without the layer aggregates, what a ranking reads.
CREATE OR REPLACE VIEW model_summaries AS
SELECT * EXCLUDE (is_latest) FROM model_summaries_in(store_files()) WHERE is_latest;

CREATE OR REPLACE VIEW model_tiers AS
SELECT * EXCLUDE (is_latest) FROM model_tiers_in(store_files()) WHERE is_latest;
