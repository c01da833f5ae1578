-- models_latest: the latest analysed revision of each repo_id; what leaderboards rank (one row per model).
CREATE OR REPLACE VIEW models_latest AS
SELECT * FROM models WHERE is_latest;
