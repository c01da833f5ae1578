-- alpha_depth_profile: alpha of each analysed layer by depth, per model revision
-- (filter on repo_id for one model: WHERE owner = 'org' AND repo_id = 'org/name').
-- depth_index: 1-based position among the analysed layers in checkpoint order;
-- relative_depth: depth_index / number of analysed layers, in (0, 1].
CREATE OR REPLACE VIEW alpha_depth_profile AS
SELECT
    repo_id, revision, options_hash, owner, layer_id, tensor_name, layer_type, alpha, alpha_weighted,
    row_number() OVER w AS depth_index,
    row_number() OVER w / count(*) OVER (PARTITION BY owner, repo_id, record_key) AS relative_depth
FROM layers
WHERE is_success
WINDOW w AS (PARTITION BY owner, repo_id, record_key ORDER BY layer_id);
