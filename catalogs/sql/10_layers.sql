-- layers: one row per tensor of every stored model revision, typed, with diagnostic flags (05_layer_flags.sql).
-- Only complete revisions: a layer row shows when a models row has its record_key. The writer stores the
-- layers file before the models file (catalogs/store.py), so a writer killed between the two leaves layer
-- rows that no view shows until a re-run completes the revision.
-- lambda_max_over_mp_edge: lambda_max / mp_edge (about 1 or below for a random matrix).
-- layers_in(files): the same over the files of a store_files() STRUCT (see 00_store_files.sql).
CREATE OR REPLACE MACRO layers_in(files) AS TABLE
SELECT
    *,
    coalesce(status = 'success', false) AS is_success,
    alpha_in_band(status, alpha) AS alpha_in_2_6,
    alpha_below_band(status, alpha) AS alpha_lt_2,
    alpha_above_band(status, alpha) AS alpha_gt_6,
    looks_random(status, lambda_max, norm, num_evals, N, M, rand_distance) AS looks_random,
    lambda_max / mp_edge(norm, num_evals, N, M) AS lambda_max_over_mp_edge,
    is_trap_candidate(status, num_fingers, lambda_max, norm, num_evals, N, M) AS is_correlation_trap_candidate
FROM raw_layers_in(files)
WHERE record_key IN (SELECT record_key FROM read_parquet(files['models']));

CREATE OR REPLACE VIEW layers AS FROM layers_in(store_files());
