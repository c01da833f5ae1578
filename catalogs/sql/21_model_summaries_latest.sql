-- model_summaries_latest: model_tiers_in (20_model_summaries.sql) for the rows of models_latest: the latest
-- revision of each (repo_id, options_hash), with tiers; what the tiered leaderboard ranks, one option set at
-- a time (queries/leaderboard.sql filters on options_hash). It joins no per-layer aggregate, so a ranking
-- reads the models files only (the per-layer counts are in model_summaries and `show`).
CREATE OR REPLACE VIEW model_summaries_latest AS
SELECT * EXCLUDE (is_latest) FROM model_tiers_in(store_files())
WHERE record_key IN (SELECT record_key FROM models_latest);
