"""The one metric table: every model-level metric a leaderboard may rank by, with its direction.

Rankings take the sort order from `direction` here, never from a hard-coded DESC. The `column` is a
column of the `models` view (catalogs/sql/); `range` is the typical range of the value, for docs and
sanity checks, not a hard bound.

Directions follow WeightWatcher's reading of heavy-tailed self-regularisation: smaller (mean) alpha and
alpha_weighted predict better generalisation within comparable models (2 <= alpha <= 6 is the well-trained
band, below 2 is over-trained); smaller log norms likewise; a larger share of layers inside 2-6 is better.
stable_rank is "lower is better" in the sense that heavily-correlated (well-trained) layers concentrate
energy in few directions; treat it as a secondary diagnostic.
"""

from __future__ import annotations

from dataclasses import dataclass

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

DEFAULT_METRIC = "alpha_weighted"
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
