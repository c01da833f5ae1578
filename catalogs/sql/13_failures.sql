-- failures: one row per failed attempt; is_last_attempt marks the newest attempt of a
-- (repo_id, revision, options_hash, stage); resolved = the same revision was later stored successfully.
CREATE OR REPLACE VIEW failures AS
SELECT
    f.*,
    row_number() OVER (PARTITION BY f.repo_id, f.revision, f.options_hash, f.stage ORDER BY f.attempt DESC) = 1
        AS is_last_attempt,
    m.repo_id IS NOT NULL AS resolved
FROM raw_failures_in(store_files()) f
LEFT JOIN (SELECT DISTINCT repo_id, revision FROM raw_models_in(store_files())) m
    ON m.repo_id = f.repo_id AND m.revision = f.revision;
