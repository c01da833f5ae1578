-- model_summaries: the latest revision of each model with layer-level aggregates beside its summary
-- (15_layer_aggregates.sql).
CREATE OR REPLACE VIEW model_summaries AS
SELECT m.*, agg.* EXCLUDE (record_key)
FROM models_latest m
LEFT JOIN layer_aggregates_in(store_files()) agg USING (record_key);
