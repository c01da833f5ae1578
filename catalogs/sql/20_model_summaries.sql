-- model_summaries_in(files, repo): every stored model revision (models_in) with the aggregates of its
-- layers (15_layer_aggregates.sql) and its tier in the default ranking (16_model_tier.sql):
--   tier, tier_name          see catalogs/metrics.py
--   share_random_like        n_random_like / n_fitted (layers that look like a random matrix)
-- repo (optional): only that repo_id's layer rows are aggregated (a drill-down, `show`).
-- model_summaries: the latest revision of each model; what the default leaderboard ranks. It reads
-- every layer file once (one pass, aggregated per record_key).
CREATE OR REPLACE MACRO model_summaries_in(files, repo := NULL) AS TABLE
WITH s AS (
    SELECT
        m.*,
        agg.* EXCLUDE (record_key),
        model_tier(agg.n_fitted, agg.n_alpha_in_2_6, agg.n_random_like, m.alpha_median) AS tier,
        agg.n_random_like / nullif(agg.n_fitted, 0) AS share_random_like
    FROM models_in(files) m
    LEFT JOIN layer_aggregates_in(files, repo := repo) agg USING (record_key)
)
SELECT repo_id, revision, tier, tier_name(tier) AS tier_name, share_alpha_2_6, share_random_like,
       * EXCLUDE (repo_id, revision, tier, share_alpha_2_6, share_random_like)
FROM s;

CREATE OR REPLACE VIEW model_summaries AS
SELECT * EXCLUDE (is_latest) FROM model_summaries_in(store_files()) WHERE is_latest;
