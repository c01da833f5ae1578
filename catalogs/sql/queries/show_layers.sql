-- show_layers: the layer rows of one stored model revision (record_key from show_model), depth order,
-- with the flags the tier counts (05_layer_flags.sql): warning (WW's label by alpha), looks_random.
-- Parameters: $repo_id, $record_key, $files (as in show_model.sql).
SELECT
    layer_id, tensor_name, layer_type, shape, status, alpha, alpha_weighted, warning, looks_random,
    lambda_max_over_mp_edge, D, num_pl_spikes, log_norm, log_spectral_norm, stable_rank, hill_alpha,
    fit_status, skip_reason
FROM layers_in($files)
WHERE repo_id = $repo_id AND record_key = $record_key
ORDER BY layer_id
