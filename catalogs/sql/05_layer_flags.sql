-- Per-layer flags, as scalar macros over a layer row's columns: the layers view (10_layers.sql) shows
-- them and the per-model aggregates of a drill-down (15_layer_aggregates.sql, `show`) count them. The
-- default ranking's tiers (16_model_tier.sql) do not read them: they use the count of random-looking
-- layers stored in the models row (ww_spectral/metrics.py looks_random, the same rule in Python), except
-- for models written before it was stored (20_model_summaries.sql). The thresholds are catalogs/metrics.py
-- TIER_RULE (whose defaults are ww_spectral/metrics.py's constants), filled in when the catalog is built
-- ({{band_low}}, ...); tests/catalogs/test_catalog_tiers.py checks the SQL and Python flags agree.
-- Every flag is a NULL-safe boolean: false when the fit failed or the tensor was skipped.

-- WeightWatcher's well-trained band and its warnings ('over-trained' below, 'under-trained' above).
CREATE OR REPLACE MACRO alpha_in_band(status, alpha) AS
    coalesce(status = 'success' AND alpha BETWEEN {{band_low}} AND {{band_high}}, false);
CREATE OR REPLACE MACRO alpha_below_band(status, alpha) AS coalesce(status = 'success' AND alpha < {{band_low}}, false);
CREATE OR REPLACE MACRO alpha_above_band(status, alpha) AS coalesce(status = 'success' AND alpha > {{band_high}}, false);

-- mp_edge: the Marchenko-Pastur bulk edge of a random N x M matrix (i.i.d. entries) with the layer's
-- Frobenius norm, in the layer's eigenvalue units: (norm / num_evals) * (1 + sqrt(M / N))^2
-- (norm / num_evals is the mean eigenvalue, N * sigma^2 for such a matrix). NULL without a spectrum.
CREATE OR REPLACE MACRO mp_edge(norm, num_evals, n, m) AS
    CASE WHEN num_evals > 0 AND norm > 0 AND least(n, m) > 0
         THEN (norm / num_evals) * pow(1 + sqrt(least(n, m) / greatest(n, m)), 2) END;

-- looks_random: nothing in the spectrum is more than a random matrix gives (catalogs/metrics.py):
-- lambda_max within {{tw_pad}} Tracy-Widom scale units of the MP edge, s = (1/sqrt(N) + 1/sqrt(M))^(1/3) /
-- (sqrt(N) + sqrt(M)) relative to the edge; or, for layers analysed with randomize, a Jensen-Shannon
-- distance below {{rand_distance_min}} from the ESD of the shuffled matrix (rand_distance, NULL otherwise).
CREATE OR REPLACE MACRO looks_random(status, lambda_max, norm, num_evals, n, m, rand_distance) AS
    coalesce(status = 'success' AND (
        lambda_max <= mp_edge(norm, num_evals, n, m)
            * (1 + {{tw_pad}} * pow(1 / sqrt(least(n, m)) + 1 / sqrt(greatest(n, m)), 1.0 / 3)
                   / (sqrt(n) + sqrt(m)))
        OR rand_distance < {{rand_distance_min}}), false);

-- is_correlation_trap_candidate: WW detects correlation traps by randomising W and looking for a
-- lambda_max far above the Marchenko-Pastur bulk. Without the randomised spectrum we flag a layer when
--   (a) fix_fingers clipped eigenvalues (num_fingers > 0), or
--   (b) lambda_max > 10 x the MP bulk edge of a random matrix with the same Frobenius norm (mp_edge).
-- It is a candidate list to inspect, not a verdict.
CREATE OR REPLACE MACRO is_trap_candidate(status, num_fingers, lambda_max, norm, num_evals, n, m) AS
    coalesce(coalesce(num_fingers, 0) > 0
             OR (status = 'success' AND lambda_max > 10 * mp_edge(norm, num_evals, n, m)), false);
