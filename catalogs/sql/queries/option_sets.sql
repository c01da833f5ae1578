-- option_sets: every option set the store holds (over models_latest): its options_hash, options_json (the
-- label is made from it in catalogs/catalog.py) and how many models it has; the largest set first.
SELECT options_hash, arg_max(options_json, analysed_at) AS options_json, count(*) AS n_models
FROM models_latest
GROUP BY options_hash
ORDER BY n_models DESC, options_hash
