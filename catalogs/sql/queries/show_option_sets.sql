-- show_option_sets: every option set stored for one model: its options_hash, options_json (the label is
-- made from it in catalogs/catalog.py), how many revisions, and the latest one.
-- Parameters: $repo_id; $files (as in show_model.sql).
SELECT
    options_hash,
    arg_max(options_json, analysed_at) AS options_json,
    count(*) AS n_revisions,
    arg_max(revision, analysed_at) AS latest_revision,
    max(analysed_at) AS analysed_at
FROM models_in($files)
WHERE repo_id = $repo_id
GROUP BY options_hash
ORDER BY max(analysed_at) DESC, options_hash
