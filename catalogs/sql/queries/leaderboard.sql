-- leaderboard: latest model revisions ranked by one metric (direction from catalogs/metrics.py),
-- optionally within a comparable group. Placeholders filled in by catalogs/catalog.py leaderboard_sql():
--   group_select: 'col, ' or ''; partition: 'PARTITION BY col' or ''; metric: the metric column;
--   order: ASC | DESC from the metric's direction; where: user filter (default TRUE); top: max rank.
SELECT
    {{group_select}}
    rank() OVER ({{partition}} ORDER BY {{metric}} {{order}}) AS rank,
    repo_id,
    {{metric}},
    revision
FROM models_latest
WHERE {{metric}} IS NOT NULL AND ({{where}})
QUALIFY rank <= {{top}}
ORDER BY {{group_order}} rank, repo_id
