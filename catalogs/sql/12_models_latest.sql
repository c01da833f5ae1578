-- models_latest: the latest analysed revision of each (repo_id, options_hash): one row per model and option
-- set, so a store holds several option sets side by side. A leaderboard ranks ONE option set
-- (queries/leaderboard.sql filters on options_hash); the default is the default analysis's hash.
CREATE OR REPLACE VIEW models_latest AS
SELECT * FROM models
QUALIFY row_number() OVER (PARTITION BY owner, repo_id, options_hash ORDER BY analysed_at DESC, revision DESC) = 1;
