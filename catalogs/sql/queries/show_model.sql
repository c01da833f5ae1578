-- show_model: one model's latest (or given) revision in one option set: its summary row with layer
-- aggregates and tier (model_summaries_in, 20_model_summaries.sql).
-- Parameters: $repo_id; $revision (NULL = latest; else the revision or a prefix of it, e.g. the 12
-- characters a table shows: an exact match wins, then the latest analysed); $options_hash (NULL = the
-- default analysis's rows when the model has them, else the latest analysed option set); $default_hash
-- (AnalysisOptions().fingerprint()); $files: a STRUCT like store_files() (00_store_files.sql) with the
-- layers and models files of the model's owner= folder, seed included.
SELECT * EXCLUDE (is_latest)
FROM model_summaries_in($files, repo := $repo_id)
WHERE repo_id = $repo_id
  AND ($options_hash IS NULL OR options_hash = $options_hash)
  AND ($revision IS NULL OR starts_with(revision, $revision))
ORDER BY revision = $revision DESC NULLS LAST, options_hash = $default_hash DESC, analysed_at DESC, revision DESC
LIMIT 1
