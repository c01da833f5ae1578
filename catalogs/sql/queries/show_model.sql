-- show_model: one model's latest (or given) revision: its summary row with layer aggregates and tier
-- (model_summaries_in, 20_model_summaries.sql).
-- Parameters: $repo_id; $revision (NULL = latest; else the revision or a prefix of it, e.g. the 12
-- characters a table shows: an exact match wins, then the latest analysed); $files: a STRUCT like
-- store_files() (00_store_files.sql) with the layers and models files of the model's owner= folder, seed included.
SELECT * EXCLUDE (is_latest)
FROM model_summaries_in($files, repo := $repo_id)
WHERE repo_id = $repo_id
  AND (starts_with(revision, $revision) OR ($revision IS NULL AND is_latest))
ORDER BY revision = $revision DESC NULLS LAST, analysed_at DESC
LIMIT 1
