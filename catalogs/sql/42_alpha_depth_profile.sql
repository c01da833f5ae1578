-- alpha_depth_profile: alpha of each analysed layer by depth, per model revision
-- (filter on repo_id for one model: WHERE owner = 'org' AND repo_id = 'org/name').
-- depth_index: 1-based position among the analysed layers in depth order: layer_id, which ww_spectral
--   numbers in depth order (ww_spectral/model.py depth_order: block 2 before block 10, embeddings first,
--   the head last), then slice_id (pool=False kernel positions);
-- relative_depth: depth_index / number of analysed layers, in (0, 1];
-- block, role, role_group, expert, part: where the matrix sits (ww_spectral/roles.py; one row per expert
--   of a mixture-of-experts stack, expert = its index).
CREATE OR REPLACE VIEW alpha_depth_profile AS
SELECT
    repo_id, revision, options_hash, owner, layer_id, tensor_name, layer_type, alpha, alpha_weighted,
    block, role, role_group, expert, part, slice_id,
    row_number() OVER w AS depth_index,
    row_number() OVER w / count(*) OVER (PARTITION BY owner, repo_id, record_key) AS relative_depth
FROM layers
WHERE is_success
WINDOW w AS (PARTITION BY owner, repo_id, record_key ORDER BY layer_id, slice_id NULLS FIRST);
