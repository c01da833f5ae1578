-- model_tier(...): the default ranking's tier of a model revision (catalogs/metrics.py TIER_RULE and TIERS;
-- the thresholds are filled in when the catalog is built), from columns of its models row alone (stored
-- when the model was analysed, ww_spectral/summary.py): the number of analysed layers, the shares of them
-- in the band and looking random (ww_spectral/metrics.py looks_random), and the median layer alpha:
--   5 no analysable layer; 4 random-like: at least {{random_like_share}} of the analysed layers look random;
--   3 under-trained: median alpha > {{under_trained_median}}; 1 well trained: at least {{well_trained_share}}
--   of them in the band; 2 mixed: the rest. Tested in that order. tier_name(tier): its words.
-- Within a tier the leaderboard orders by catalogs/metrics.py tiered_order (tier 4 by RANDOM_LIKE_ORDER).
CREATE OR REPLACE MACRO model_tier(n_analysed, share_in_band, share_random_like, alpha_median) AS
    CASE
        WHEN coalesce(n_analysed, 0) = 0 THEN 5
        WHEN share_random_like >= {{random_like_share}} THEN 4
        WHEN alpha_median > {{under_trained_median}} THEN 3
        WHEN share_in_band >= {{well_trained_share}} THEN 1
        ELSE 2
    END;

CREATE OR REPLACE MACRO tier_name(tier) AS CASE tier {{tier_names}} END;
