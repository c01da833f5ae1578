-- family_deltas: every latest model revision (models_latest, one per repo_id and option set) with its base
-- family and the metrics of its update against the base, for the family leaderboard
-- (queries/family_leaderboard.sql, `ww-spectral leaderboard --family BASE`).
--   family          the base model's repo_id: the base of its delta rows (base_ref 'repo@revision'), else the
--                   hub's base_model, else its own repo_id (a base model heads its own family)
--   kind            base (no base model) | fine-tune (base_delta rows: W - W_base) | adapter (lora_update /
--                   lora_merged rows) | quantised (dequantised own rows, no delta rows) | derived (names a
--                   base, no delta rows: e.g. the base could not be read)
--   quant_format    the dequantisation format of its own rows ('' for full-precision weights; gguf_* for GGUF)
--   n_delta_layers, n_delta_fitted   update rows (base_delta, lora_update) and those with a fit
--   delta_alpha     median alpha of the update rows (lower: a more heavy-tailed, more correlated update, the
--                   direction WeightWatcher reads alpha in)
--   delta_alpha_weighted, delta_log_norm, delta_log_spectral_norm: means over the update rows
--   delta_stable_rank: median stable rank of the update rows
--   base_ref        the base revision the deltas were taken against ('' without delta rows)
--   alpha           the model's own summary alpha (its own rows), for reference
-- Update rows are those with delta_kind base_delta or lora_update (ww_spectral/columns.py); lora_merged rows
-- (W_base + dW) are counted for `kind` only.
CREATE OR REPLACE VIEW family_deltas AS
WITH d AS (
    SELECT
        record_key,
        max(nullif(base_ref, '')) AS base_ref,
        bool_or(delta_kind = 'base_delta') AS has_base_delta,
        bool_or(delta_kind IN ('lora_update', 'lora_merged')) AS has_lora,
        max(nullif(quant_format, '')) FILTER (WHERE coalesce(delta_kind, '') = '') AS quant_format,
        count(*) FILTER (WHERE delta_kind IN ('base_delta', 'lora_update')) AS n_delta_layers,
        count(*) FILTER (WHERE delta_kind IN ('base_delta', 'lora_update') AND status = 'success') AS n_delta_fitted,
        median(alpha) FILTER (WHERE delta_kind IN ('base_delta', 'lora_update') AND status = 'success')
            AS delta_alpha,
        avg(alpha_weighted) FILTER (WHERE delta_kind IN ('base_delta', 'lora_update') AND status = 'success')
            AS delta_alpha_weighted,
        avg(log_norm) FILTER (WHERE delta_kind IN ('base_delta', 'lora_update') AND status = 'success')
            AS delta_log_norm,
        avg(log_spectral_norm) FILTER (WHERE delta_kind IN ('base_delta', 'lora_update') AND status = 'success')
            AS delta_log_spectral_norm,
        median(stable_rank) FILTER (WHERE delta_kind IN ('base_delta', 'lora_update') AND status = 'success')
            AS delta_stable_rank
    FROM layers
    WHERE record_key IN (SELECT record_key FROM models_latest)
    GROUP BY record_key
)
SELECT
    coalesce(split_part(d.base_ref, '@', 1), m.base_model, m.repo_id) AS family,
    m.repo_id, m.revision,
    CASE
        WHEN d.has_lora THEN 'adapter'
        WHEN d.has_base_delta THEN 'fine-tune'
        WHEN coalesce(d.quant_format, '') <> '' THEN 'quantised'
        WHEN m.base_model IS NOT NULL AND m.base_model <> m.repo_id THEN 'derived'
        ELSE 'base'
    END AS kind,
    coalesce(d.quant_format, '') AS quant_format,
    coalesce(d.n_delta_layers, 0) AS n_delta_layers,
    coalesce(d.n_delta_fitted, 0) AS n_delta_fitted,
    d.delta_alpha, d.delta_alpha_weighted, d.delta_log_norm, d.delta_log_spectral_norm, d.delta_stable_rank,
    coalesce(d.base_ref, '') AS base_ref,
    m.alpha, m.options_hash, m.record_key, m.owner
FROM models_latest m
LEFT JOIN d ON d.record_key = m.record_key;
