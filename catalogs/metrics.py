"""The one metric table (each model-level metric a leaderboard may rank by, with its direction) and the
default ranking's tier rule, with its thresholds.

Rankings take the sort order from `direction` here, never from a hard-coded DESC. The `column` is a
column of the `models` view (catalogs/sql/); `range` is the typical range of the value, for docs and
sanity checks, not a hard bound.

Directions follow WeightWatcher's reading of heavy-tailed self-regularisation: smaller (mean) alpha and
alpha_weighted predict better generalisation within comparable models (2 <= alpha <= 6 is the well-trained
band, below 2 is over-trained); smaller log norms likewise; a larger share of layers inside 2-6 is better.
stable_rank is "lower is better" in the sense that heavily-correlated (well-trained) layers concentrate
energy in few directions; treat it as a secondary diagnostic.

The default ranking (TIER_RULE below; `leaderboard` without --metric): a metric alone cannot tell a
trained model from a random one. alpha_weighted = alpha * log10(lambda_max) rewards small weights, and
freshly initialised or barely trained weights are small: a randomly initialised 64-512-512-256-10 MLP
(the demo zoo's, pipelines/proof/) gets alpha_weighted 0.9-1.8, the same MLP trained for 3-40 epochs
(95-98 % test accuracy on the digits) 1.9-2.4, so alpha_weighted alone ranks the random ones first. The
default first sorts models into tiers by what WeightWatcher itself warns about, and only then by a metric:

  tier 1  well trained      share of analysed layers with 2 <= alpha <= 6 at least 0.75
  tier 2  mixed             analysable, none of the other tiers (e.g. many layers below 2)
  tier 3  under-trained     median layer alpha > 6 (WW labels such a layer "under-trained")
  tier 4  random-like       at least half of the analysed layers look like random matrices (below)
  tier 5  no analysable layer

(tested in the order 5, 4, 3, 1, 2: a model whose layers look random is tier 4 whatever its alphas.)
Within tiers 1-3, models are ranked by DEFAULT_METRIC (alpha_weighted, lower is better). Within tier 4
WeightWatcher's directions do not apply - its layers have no heavy tail to read - and alpha_weighted
would put the smallest weights, the untouched initialisations, first; there models are ranked by
RANDOM_LIKE_ORDER: the share of layers that look random, lower first, then log_spectral_norm, HIGHER
first (a top eigenvalue grown further above a random matrix's: training moved the weights further from
their initialisation), then the metric. Rows without a value come last within their tier (tiered_order).
`--metric NAME` ranks by that metric alone, in its own direction, as WeightWatcher does.

PRE-REGISTERED 2026-11-27 (pipelines/proof/PREREGISTRATION.md): tiers 3 and 4 split (they were one tier,
"random-like or under-trained", ordered by alpha_weighted, which put random initialisations at its top)
and RANDOM_LIKE_ORDER, committed before the third zoo that validates it was trained. The thresholds are
unchanged. The split was chosen after seeing the MLP and transformer zoos, so only the third zoo tests it.

A layer looks random (ww_spectral/metrics.py `looks_random`; TW_PAD and RAND_DISTANCE_MIN live in ww_spectral/bands.py;
computed when a model is analysed and stored in its models row as n_layers_random_like / share_random_like,
so the tier reads the models table alone; the catalog's per-layer flag, catalogs/sql/05_layer_flags.sql, is
rendered with the same constants) when either
  (a) its largest eigenvalue is inside the Marchenko-Pastur bulk of a random matrix of the same shape and
      Frobenius norm, up to Tracy-Widom fluctuations: lambda_max <= edge * (1 + TW_PAD * s), with
      edge = (norm / num_evals) * (1 + sqrt(M / N))^2 (the bulk edge of an N x M matrix with i.i.d.
      entries of that variance) and s = (1/sqrt(N) + 1/sqrt(M))^(1/3) / (sqrt(N) + sqrt(M)) (Johnstone's
      Tracy-Widom scale relative to the edge). TW_PAD = 4: over about 5,000 random Gaussian and uniform
      matrices (8 <= M <= 768, 1 or 9 pooled conv slices) the largest value of (lambda_max/edge - 1)/s
      was 3.96 (99th percentile <= 3.1). The trained MLP's layers sit at 1.11-3.4 x edge (the pad of its
      512x64 first layer ends at 1.07), its random init at 0.93-1.01.
      This test is ours: the power-law fit alone cannot tell small random matrices apart - random
      matrices of 32x16 to 256x32 get alpha inside 2-6 in 56-100 % of draws (WW's warning fits large
      layers: random 512x512 matrices get alpha > 6 in 83 % of draws, 2048x512 in all).
  (b) it was analysed with randomize and its ESD is within RAND_DISTANCE_MIN = 0.01 (Jensen-Shannon
      distance, WW's rand_distance) of the ESD of its own shuffled entries: nothing in it is more than
      what random values give (random layers of 256x32 and larger: <= 0.009; the MLP's trained for 3+
      epochs: >= 0.015).
      Small random layers reach 0.13 (16x8), so (b) only ever adds layers, never clears one that (a) flags.

Why these thresholds: 2-6 is WeightWatcher's band (its `warning` column says 'under-trained' above 6 and
'over-trained' below 2); a median above 6 means most layers carry that warning. The 0.75 and 0.5 shares
are ours: a well-trained model may have a quarter of its layers outside the band (first layers of small
nets stay near their initialisation), and a model is called random-like only when most of its layers are.
Measured on the MLP above (seeds 3000, 3001; with and without randomize): random init (9-12 % test
accuracy) looks random (tier 4), 1 epoch (71-82 %, 3 of 4 layers alpha > 6) is under-trained (tier 3),
3-40 epochs (95-98 %) land in tier 1.
tests/catalogs/test_catalog_tiers.py holds the same on planted spectra of one shape (trained, barely
trained, random init) and checks each threshold at its boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

from ww_spectral.bands import RAND_DISTANCE_MIN, TW_PAD, WW_BAND

from .errors import CatalogError


@dataclass(frozen=True)
class Metric:
    name: str  # what --metric takes
    column: str  # column of the `models` view
    direction: str  # "lower" | "higher": which is better
    range: str
    doc: str

    @property
    def sql_order(self) -> str:
        return "ASC" if self.direction == "lower" else "DESC"

    @property
    def sign(self) -> int:
        """+1 when lower is better, -1 when higher is better: rank by sign * value ascending."""
        return 1 if self.direction == "lower" else -1


METRICS: tuple[Metric, ...] = (
    Metric("alpha_weighted", "alpha_weighted", "lower", "0..15",
           "mean over layers of alpha*log10(lambda_max); WW's headline quality predictor (default)"),
    Metric("alpha", "alpha", "lower", "1.5..8",
           "mean layer alpha, as WW's get_summary()['alpha']"),
    Metric("alpha_median", "alpha_median", "lower", "1.5..8", "median layer alpha (robust to outlier layers)"),
    Metric("alpha_weighted_median", "alpha_weighted_median", "lower", "0..15", "median of layer alpha_weighted"),
    Metric("log_norm", "log_norm", "lower", "-2..6", "mean layer log10 Frobenius norm^2"),
    Metric("log_spectral_norm", "log_spectral_norm", "lower", "-2..4", "mean layer log10 lambda_max"),
    Metric("log_alpha_norm", "log_alpha_norm", "lower", "-2..20", "mean layer log10(sum lambda^alpha)"),
    Metric("stable_rank", "stable_rank", "lower", "1..M", "mean layer Frobenius^2 / spectral^2"),
    Metric("hill_alpha", "hill_alpha", "lower", "1..10", "mean Hill-estimator alpha (tail k = n/2), not in WW"),
    Metric("hill_alpha_median", "hill_alpha_median", "lower", "1..10", "median Hill-estimator alpha"),
    Metric("share_alpha_2_6", "share_alpha_2_6", "higher", "0..1",
           "fraction of analysed layers with 2 <= alpha <= 6 (well-trained band)"),
)  # fmt: skip

DEFAULT_METRIC = "alpha_weighted"  # the metric of the default ranking, within a tier
_BY_NAME = {m.name: m for m in METRICS}


def get_metric(name: str) -> Metric:
    """The metric called `name`; CatalogError listing the allowed names otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise CatalogError(f"unknown metric {name!r}; choose one of: {', '.join(_BY_NAME)}") from None


# Comparable groups a leaderboard may rank within: --group-by name -> column of the `models` view.
GROUPS: dict[str, str] = {
    "none": "",
    "architecture": "architecture",
    "model_type": "model_type",
    "param_bucket": "param_bucket",
    "pipeline_tag": "pipeline_tag",
    "family": "family",
    "library": "library",
    "owner": "owner",
}


def get_group(name: str | None) -> str:
    """Column of the `models` view for --group-by `name` ('' for no grouping)."""
    if name is None:
        return ""
    try:
        return GROUPS[name]
    except KeyError:
        raise CatalogError(f"unknown group {name!r}; choose one of: {', '.join(GROUPS)}") from None


def metrics_rows() -> list[tuple[str, str, str, int, str, str]]:
    """(name, column, direction, sign, range, doc) rows: the catalog's `metrics` table."""
    return [(m.name, m.column, m.direction, m.sign, m.range, m.doc) for m in METRICS]


@dataclass(frozen=True)
class TierRule:
    """The thresholds of the default ranking's tiers (see the module doc for the rule and why).

    band_low, band_high: WeightWatcher's well-trained band of layer alpha (inclusive).
    well_trained_share: tier 1 needs at least this share of analysed layers inside the band.
    random_like_share: tier 4 (random-like) when at least this share of analysed layers looks random.
    under_trained_median: tier 3 (under-trained) when the median layer alpha is above this.
    tw_pad: Tracy-Widom scale units above the Marchenko-Pastur edge still counted as random.
    rand_distance_min: a layer analysed with randomize looks random below this rand_distance.
    """

    band_low: float = WW_BAND[0]
    band_high: float = WW_BAND[1]
    well_trained_share: float = 0.75
    random_like_share: float = 0.5
    under_trained_median: float = 6.0
    tw_pad: float = TW_PAD  # the per-layer test's constants are the library's (ww_spectral/metrics.py)
    rand_distance_min: float = RAND_DISTANCE_MIN

    def sql_constants(self) -> dict[str, str]:
        """Placeholder -> SQL literal for the catalog's SQL files ({{band_low}} ... {{rand_distance_min}})."""
        return {name: repr(float(value)) for name, value in vars(self).items()}


TIER_RULE = TierRule()

TIERS: dict[int, str] = {
    1: "well trained",
    2: "mixed",
    3: "under-trained",
    4: "random-like",
    5: "no analysable layer",
}
RANDOM_LIKE_TIER = 4  # the tier ordered by RANDOM_LIKE_ORDER instead of the metric's direction

# Within the random-like tier, before the metric: (models column, direction); module docstring for why.
RANDOM_LIKE_ORDER: tuple[tuple[str, str], ...] = (("share_random_like", "lower"), ("log_spectral_norm", "higher"))


def tiered_order(metric: Metric) -> str:
    """The ORDER BY of a tiered ranking over model_summaries_latest's columns (catalogs/sql/queries/
    leaderboard.sql): tier, then within the random-like tier RANDOM_LIKE_ORDER, then `metric` in its
    direction; a key that is NULL (every row outside the random-like tier, or a missing value) sorts last."""
    keys = ["tier"]
    for column, direction in RANDOM_LIKE_ORDER:
        keys.append(f"CASE WHEN tier = {RANDOM_LIKE_TIER} THEN {column} END "
                    f"{'ASC' if direction == 'lower' else 'DESC'} NULLS LAST")
    return ", ".join([*keys, f"{metric.column} {metric.sql_order} NULLS LAST"])


def tiers_text() -> str:
    """The tiers and the order within them in one line, for help texts and reports."""
    names = ", ".join(f"{t} {n}" for t, n in TIERS.items())
    return (f"tiers {names}; within a tier {DEFAULT_METRIC} (lower is better), except the {TIERS[RANDOM_LIKE_TIER]} "
            "tier: fewer random-looking layers, then the larger log_spectral_norm, first")


def tier_name(tier: int) -> str:
    """The short name of a tier (TIERS)."""
    return TIERS[tier]
