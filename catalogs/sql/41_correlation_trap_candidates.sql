-- correlation_trap_candidates: layers flagged by is_correlation_trap_candidate (definition in 10_layers.sql),
-- with the evidence: clipped fingers and lambda_max relative to the Marchenko-Pastur bulk edge.
CREATE OR REPLACE VIEW correlation_trap_candidates AS
SELECT
    repo_id, revision, options_hash, owner, layer_id, tensor_name, alpha, num_fingers, lambda_max,
    lambda_max_over_mp_edge,
    CASE WHEN coalesce(num_fingers, 0) > 0 THEN 'fingers clipped' ELSE 'lambda_max > 10x MP edge' END AS reason
FROM layers
WHERE is_correlation_trap_candidate;
