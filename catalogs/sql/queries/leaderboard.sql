-- leaderboard: latest model revisions of ONE option set ranked within a comparable group. Filled in by
-- catalogs/catalog.py leaderboard_sql(), identifiers only:
--   source: model_summaries_latest (the default, tiered ranking: tier first, catalogs/metrics.py) or
--           models_latest (one metric alone, as WeightWatcher ranks); both hold the latest revision of each
--           (repo_id, options_hash)
--   order: the ORDER BY of the rank: the metric column ASC | DESC from its direction; tiered: catalogs/metrics.py
--           tiered_order (tier, within the random-like tier its own keys, then the metric)
--   columns: what each row shows besides rank, repo_id and revision: [tier, tier_name, share_alpha_2_6,
--           share_random_like,] the metric (why the row stands where it does)
--   keep: which rows are ranked (a metric alone: those with a value; tiered: every model, tier 5 last)
--   group: the group column (NULL without grouping: one group; the column is dropped from the result)
--   where: the user's filter over the source's columns (TRUE when none; it runs on the sandboxed connection)
-- Parameters: $top, the largest rank kept within each group; $options_hash, the option set ranked
-- (AnalysisOptions.fingerprint(); the default analysis's unless the user chose another).
SELECT
    {{group}} AS group_value,
    rank() OVER (PARTITION BY {{group}} ORDER BY {{order}}) AS rank,
    repo_id,
    {{columns}},
    revision
FROM {{source}}
WHERE options_hash = $options_hash AND {{keep}} AND ({{where}})
QUALIFY rank <= $top
ORDER BY group_value NULLS LAST, rank, repo_id
