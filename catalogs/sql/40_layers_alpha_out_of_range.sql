-- layers_alpha_out_of_range: analysed layers outside WW's well-trained band 2 <= alpha <= 6.
CREATE OR REPLACE VIEW layers_alpha_out_of_range AS
SELECT
    repo_id, revision, options_hash, owner, layer_id, tensor_name, layer_type, alpha, alpha_weighted, D,
    CASE WHEN alpha < 2 THEN 'over-trained (alpha<2)' ELSE 'under-trained (alpha>6)' END AS diagnosis
FROM layers
WHERE alpha_lt_2 OR alpha_gt_6;
