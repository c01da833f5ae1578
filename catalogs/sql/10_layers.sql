-- layers: one row per tensor of every stored model revision, typed, with diagnostic flags.
-- Only complete revisions: a layer row shows when a models row has its record_key. The writer stores the
-- layers file before the models file (catalogs/store.py), so a writer killed between the two leaves layer
-- rows that no view shows until a re-run completes the revision.
-- Flags are NULL-safe booleans (false when the fit failed or the tensor was skipped).
-- is_correlation_trap_candidate: WW detects correlation traps by randomising W and looking for a
-- lambda_max far above the Marchenko-Pastur bulk. Without the randomised spectrum we flag a layer when
--   (a) fix_fingers clipped eigenvalues (num_fingers > 0), or
--   (b) lambda_max > 10 x the MP bulk edge of a random matrix with the same Frobenius norm:
--       lambda_max > 10 * (norm / num_evals) * (1 + 1/sqrt(Q))^2
--       (norm / num_evals is the mean eigenvalue = sigma^2 of the equivalent random matrix).
-- It is a candidate list to inspect, not a verdict.
-- layers_in(files): the same over the files of a store_files() STRUCT (see 00_store_files.sql).
CREATE OR REPLACE MACRO layers_in(files) AS TABLE
SELECT
    *,
    coalesce(status = 'success', false) AS is_success,
    coalesce(status = 'success' AND alpha BETWEEN 2 AND 6, false) AS alpha_in_2_6,
    coalesce(status = 'success' AND alpha < 2, false) AS alpha_lt_2,
    coalesce(status = 'success' AND alpha > 6, false) AS alpha_gt_6,
    CASE WHEN num_evals > 0 AND norm > 0 AND Q >= 1
         THEN lambda_max / ((norm / num_evals) * pow(1 + 1 / sqrt(Q), 2)) END AS lambda_max_over_mp_edge,
    coalesce(
        coalesce(num_fingers, 0) > 0
        OR (status = 'success' AND num_evals > 0 AND norm > 0 AND Q >= 1
            AND lambda_max > 10 * (norm / num_evals) * pow(1 + 1 / sqrt(Q), 2)),
        false) AS is_correlation_trap_candidate
FROM raw_layers_in(files)
WHERE record_key IN (SELECT record_key FROM read_parquet(files['models']));

CREATE OR REPLACE VIEW layers AS FROM layers_in(store_files());
