"""The family leaderboard: fine-tunes, adapters and copies of one base model ranked by their update against it.

A scan analyses a fine-tune's delta W - W_base and an adapter's update (lora_alpha / r) B A as layer rows
marked by `delta_kind` (ww_spectral/columns.py). Raw-weight metrics of fine-tunes mostly rank their base;
the metrics of the update tell fine-tunes of one base apart. The view family_deltas
(catalogs/sql/61_family_deltas.sql) puts each latest model revision in its base family with per-model
aggregates of its update rows; queries/family_leaderboard.sql ranks them within each family and adds the
revisions linked to a member (same weight bytes, not analysed again: catalogs/sql/60_model_links.sql).

`ww-spectral leaderboard --family BASE` (catalogs/cli.py) calls `family_leaderboard`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import SEED_ROOT, _render, _session, _sql, query, ranked_options_hash
from .errors import CatalogError
from .store import LINKS_SEED, ResultStore, glob_escape


@dataclass(frozen=True)
class DeltaMetric:
    """A family_deltas column a family leaderboard ranks on; order ASC: lower first."""

    column: str
    order: str
    doc: str


# Lower first for every alpha, as WeightWatcher reads alpha; the norms and stable rank of an update say how
# large and how spread the change is (smaller first: the least disruptive update ranks first).
DELTA_METRICS = {m.column: m for m in (
    DeltaMetric("delta_alpha", "ASC", "median alpha of the update's layers"),
    DeltaMetric("delta_alpha_weighted", "ASC", "mean alpha_weighted of the update's layers"),
    DeltaMetric("delta_log_norm", "ASC", "mean log10 Frobenius norm^2 of the update's layers"),
    DeltaMetric("delta_log_spectral_norm", "ASC", "mean log10 spectral norm^2 of the update's layers"),
    DeltaMetric("delta_stable_rank", "ASC", "median stable rank of the update's layers"),
)}
DEFAULT_DELTA_METRIC = "delta_alpha"


def get_delta_metric(name: str | None) -> DeltaMetric:
    """The metric of that name (default DEFAULT_DELTA_METRIC); CatalogError listing the names otherwise."""
    metric = DELTA_METRICS.get(name or DEFAULT_DELTA_METRIC)
    if metric is None:
        raise CatalogError(f"--metric {name!r} does not rank a family; use one of {', '.join(DELTA_METRICS)}")
    return metric


def link_globs(store: ResultStore) -> list[str]:
    """The link files a query reads: the in-memory links seed (so the list always matches a file and every
    column exists) and the store's link files, glob-escaped."""
    seeds = ResultStore(SEED_ROOT)
    seeds.ensure_seeds()
    return [glob_escape(seeds.url(LINKS_SEED)), *(glob_escape(store.url(rel)) for rel in store.link_files())]


def family_leaderboard_sql(metric: str | None = None) -> str:
    """The query text (catalogs/sql/queries/family_leaderboard.sql) for one delta metric."""
    m = get_delta_metric(metric)
    return _render(_sql("queries/family_leaderboard.sql"), metric=m.column, order=m.order)


def family_leaderboard(con, family: str | None, *, metric: str | None = None, top: int | None = None,
                       options_hash: str | None = None,
                       storage_options: dict | None = None) -> tuple[list[str], list[tuple]]:
    """(columns, rows) of the family leaderboard of base `family` (a repo_id; None: every family).

    Columns: family, rank (1 = first by `metric`; NULL for members without update rows: the base itself,
    quantised or derived copies, links), repo_id, kind (base | fine-tune | adapter | quantised | derived |
    link), linked_to (a link's "repo@revision"), quant_format, n_delta_layers, delta_alpha,
    delta_alpha_weighted, delta_log_norm, delta_log_spectral_norm, delta_stable_rank, alpha (the model's
    own), base_ref, revision.
    One option set: options_hash, default ranked_options_hash(con). `top`: ranks <= top per family.
    """
    if top is not None and (not isinstance(top, int) or top < 1):
        raise CatalogError(f"--top must be a positive integer, got {top!r}")
    data_root = _session(con, "data_root")[0][0]
    store = ResultStore(data_root, storage_options=storage_options)
    params = {"family": family, "options_hash": options_hash or ranked_options_hash(con),
              "links": link_globs(store), "top": top or 2**63 - 1}
    return query(con, family_leaderboard_sql(metric), params)
