-- leaderboard: latest model revisions ranked by one metric (direction from catalogs/metrics.py),
-- within a comparable group. Filled in by catalogs/catalog.py leaderboard_sql(), identifiers only:
--   metric: the metric column; order: ASC | DESC from the metric's direction; group: the group column
--   (NULL without grouping: one group; the column is dropped from the result); where: the user's
--   filter over the models_latest columns (TRUE when none; it runs on the sandboxed connection).
-- Parameter: $top, the largest rank kept within each group.
SELECT
    {{group}} AS group_value,
    rank() OVER (PARTITION BY {{group}} ORDER BY {{metric}} {{order}}) AS rank,
    repo_id,
    {{metric}},
    revision
FROM models_latest
WHERE {{metric}} IS NOT NULL AND ({{where}})
QUALIFY rank <= $top
ORDER BY group_value NULLS LAST, rank, repo_id
