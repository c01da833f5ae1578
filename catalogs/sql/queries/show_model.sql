-- show_model: one model's latest (or given) revision: its summary row with layer aggregates.
-- Parameters: $repo_id, $revision (NULL = latest); $files: a STRUCT like store_files()
-- (00_store_files.sql) with the layers and models files of the model's owner= folder, seed included.
SELECT m.* EXCLUDE (is_latest), agg.* EXCLUDE (record_key)
FROM models_in($files) m
LEFT JOIN layer_aggregates_in($files, repo := $repo_id) agg USING (record_key)
WHERE m.repo_id = $repo_id
  AND (m.revision = $revision OR ($revision IS NULL AND m.is_latest))
ORDER BY m.analysed_at DESC
LIMIT 1
