-- scans: one row per scan run, with the filters parsed as JSON.
CREATE OR REPLACE VIEW scans AS
SELECT
    * EXCLUDE (repo_id, revision),
    TRY_CAST(filters_json AS JSON) AS filters
FROM raw_scans_in(store_files());
