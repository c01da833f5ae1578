-- family_leaderboard: the members of base families ranked by the metrics of their update against the base
-- (catalogs/sql/61_family_deltas.sql family_deltas). Filled in by catalogs/family.py, identifiers only:
--   metric: the family_deltas column ranked on; order: ASC | DESC (catalogs/family.py DELTA_METRICS)
-- Parameters: $family (a base repo_id, or NULL: every family with at least one ranked member),
-- $options_hash (one option set), $links (the link-file globs: catalogs/sql/60_model_links.sql),
-- $top (the largest rank kept within a family; members without an update rank are always shown).
-- Rows: members with update rows ranked (rank 1 first); then the family's other members unranked (the base
-- itself, quantised or derived copies without deltas); then revisions linked to a member (kind 'link', the
-- member's metrics, linked_to naming it).
WITH f AS (
    SELECT * FROM family_deltas
    WHERE options_hash = $options_hash AND ($family IS NULL OR family = $family)
),
ranked AS (
    SELECT
        f.*,
        CASE WHEN f.{{metric}} IS NOT NULL
             THEN rank() OVER (PARTITION BY f.family, f.{{metric}} IS NULL ORDER BY f.{{metric}} {{order}})
        END AS rank,
        NULL::VARCHAR AS linked_to
    FROM f
),
links AS (
    SELECT
        r.family, l.repo_id, l.revision, 'link' AS kind, r.quant_format, r.n_delta_layers, r.n_delta_fitted,
        r.delta_alpha, r.delta_alpha_weighted, r.delta_log_norm, r.delta_log_spectral_norm, r.delta_stable_rank,
        r.base_ref, r.alpha, l.options_hash, r.record_key, l.owner, NULL::BIGINT AS rank,
        r.repo_id || '@' || r.revision AS linked_to
    FROM model_links_in($links) l
    JOIN ranked r ON r.repo_id = l.linked_repo_id AND r.revision = l.linked_revision
    WHERE l.options_hash = $options_hash
)
SELECT family, rank, repo_id, kind, linked_to, quant_format, n_delta_layers, delta_alpha, delta_alpha_weighted,
       delta_log_norm, delta_log_spectral_norm, delta_stable_rank, alpha, base_ref, revision
FROM (SELECT * FROM ranked WHERE rank IS NULL OR rank <= $top UNION ALL BY NAME SELECT * FROM links)
ORDER BY family, rank NULLS LAST, CASE kind WHEN 'link' THEN 1 ELSE 0 END, repo_id
