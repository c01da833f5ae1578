"""Leaderboards on hand-made data: expected orders, direction per metric, groups, latest revision."""

from __future__ import annotations

import pytest
from support.catalog_data import write

from catalogs import catalog
from catalogs.errors import CatalogError
from catalogs.metrics import METRICS, get_metric
from catalogs.store import ResultStore

# repo: (alphas, facts). Means: a 3.0, b 5.0, c 1.8, d 5.0; share in [2,6]: a 1, b 2/3, c 1/3, d 1.
MODELS = {
    "org/a": ([2.5, 3.0, 3.5], dict(model_type="llama", parameter_count=7_000_000_000,
                                    pipeline_tag="text-generation", log_norm=3.0)),
    "org/b": ([2.0, 4.0, 9.0], dict(model_type="llama", parameter_count=8_000_000_000,
                                    pipeline_tag="text-generation", log_norm=1.0)),
    "org/c": ([1.5, 1.8, 2.1], dict(model_type="gpt2", parameter_count=120_000_000,
                                    pipeline_tag="fill-mask", log_norm=2.0)),
    "x/d": ([4.0, 5.0, 6.0], dict(model_type="gpt2", parameter_count=300_000_000, base_model="org/c",
                                  pipeline_tag="text-generation", log_norm=0.5)),
}  # fmt: skip


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    root = tmp_path_factory.mktemp("rank")
    store = ResultStore(root)
    # An older revision of org/a with a much better alpha: must not be ranked (not the latest).
    write(store, "org/a", [1.0, 1.0, 1.0], revision="r0", minutes=-60, model_type="llama", log_norm=-5.0)
    for i, (repo, (alphas, facts)) in enumerate(MODELS.items()):
        write(store, repo, alphas, minutes=i, **facts)
    c = catalog.connect(root)
    yield c
    c.close()


def _order(con, **kw):
    cols, rows = catalog.leaderboard(con, **kw)
    return [tuple(r[cols.index(k)] for k in ("rank", "repo_id")) for r in rows]


def test_alpha_lower_is_better_with_ties(con):
    assert _order(con, metric="alpha") == [(1, "org/c"), (2, "org/a"), (3, "org/b"), (3, "x/d")]


def test_default_ranking_is_tier_then_alpha_weighted(con):
    cols, rows = catalog.leaderboard(con)
    assert cols == ["rank", "repo_id", "tier", "tier_name", "share_alpha_2_6", "share_random_like",
                    "alpha_weighted", "revision"]  # fmt: skip
    # a, d: every layer in 2..6 -> tier 1; b (2 of 3) and c (1 of 3) -> tier 2 (mixed)
    assert [(r[0], r[1], r[2]) for r in rows] == [(1, "org/a", 1), (2, "x/d", 1), (3, "org/c", 2), (4, "org/b", 2)]
    # alpha_weighted alone ranks c (mean alpha 1.8, over-trained layers) first: the default does not
    assert _order(con, metric="alpha_weighted") == _order(con, metric="alpha")  # lambda_max = 10 everywhere
    assert _order(con, metric="alpha_weighted")[0] == (1, "org/c")


def test_tiered_with_another_metric_and_groups(con):
    cols, rows = catalog.leaderboard(con, metric="log_norm", tiered=True)
    assert cols[-2:] == ["log_norm", "revision"]
    assert [r[1] for r in rows] == ["x/d", "org/a", "org/b", "org/c"]  # tier 1 by log_norm, then tier 2
    cols, rows = catalog.leaderboard(con, group_by="model_type")
    assert [(r[0], r[1], r[2]) for r in rows] == [("gpt2", 1, "x/d"), ("gpt2", 2, "org/c"),
                                                  ("llama", 1, "org/a"), ("llama", 2, "org/b")]  # fmt: skip
    _, rows = catalog.leaderboard(con, where="tier = 2")
    assert [r[1] for r in rows] == ["org/c", "org/b"]


def test_share_alpha_2_6_higher_is_better(con):
    assert get_metric("share_alpha_2_6").direction == "higher"
    assert _order(con, metric="share_alpha_2_6") == [(1, "org/a"), (1, "x/d"), (3, "org/b"), (4, "org/c")]


def test_log_norm_uses_latest_revision_only(con):
    # org/a's old revision had log_norm -5 (would rank first); its latest has 3.0 (ranks last).
    assert _order(con, metric="log_norm") == [(1, "x/d"), (2, "org/b"), (3, "org/c"), (4, "org/a")]


@pytest.mark.parametrize("metric", [m.name for m in METRICS])
def test_every_metric_follows_its_direction(con, metric):
    m = get_metric(metric)
    cols, rows = catalog.leaderboard(con, metric=metric)
    values = [r[cols.index(m.column)] for r in rows]
    assert values == sorted(values, reverse=(m.direction == "higher"))
    # the rankings view agrees with the leaderboard query
    _, view = catalog.query(
        con, "SELECT repo_id, rank FROM rankings WHERE metric = ? ORDER BY rank, repo_id", [m.column]
    )
    assert [(r, repo) for repo, r in view] == [(r[0], r[1]) for r in rows]


def test_group_by_model_type_ranks_within_groups(con):
    cols, rows = catalog.leaderboard(con, metric="alpha", group_by="model_type")
    assert cols[:3] == ["model_type", "rank", "repo_id"]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("gpt2", 1, "org/c"),
        ("gpt2", 2, "x/d"),
        ("llama", 1, "org/a"),
        ("llama", 2, "org/b"),
    ]


def test_group_by_param_bucket_and_family(con):
    _, rows = catalog.leaderboard(con, metric="alpha", group_by="param_bucket")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("100M-1B", 1, "org/c"),
        ("100M-1B", 2, "x/d"),
        ("1B-10B", 1, "org/a"),
        ("1B-10B", 2, "org/b"),
    ]
    _, rows = catalog.leaderboard(con, metric="alpha", group_by="family")
    assert ("org/c", 2, "x/d") in [(r[0], r[1], r[2]) for r in rows]  # the fine-tune joins its base's family


def test_where_and_top(con):
    assert _order(con, metric="alpha", where="pipeline_tag = 'text-generation'") == [
        (1, "org/a"),
        (2, "org/b"),
        (2, "x/d"),
    ]
    _, rows = catalog.leaderboard(con, metric="alpha", group_by="model_type", top=1)
    assert [(r[0], r[2]) for r in rows] == [("gpt2", "org/c"), ("llama", "org/a")]


def test_rankings_by_group_view(con):
    _, rows = catalog.query(
        con,
        "SELECT group_value, rank, repo_id FROM rankings_by_group WHERE metric = 'alpha' "
        "AND group_by = 'pipeline_tag' ORDER BY group_value, rank, repo_id",
    )
    assert rows == [
        ("fill-mask", 1, "org/c"),
        ("text-generation", 1, "org/a"),
        ("text-generation", 2, "org/b"),
        ("text-generation", 2, "x/d"),
    ]


def test_unknown_metric_or_group_lists_allowed(con):
    with pytest.raises(CatalogError, match="unknown metric 'bogus'; choose one of: alpha_weighted, alpha"):
        catalog.leaderboard(con, metric="bogus")
    with pytest.raises(CatalogError, match="unknown group 'color'.*model_type"):
        catalog.leaderboard(con, group_by="color")


def test_where_cannot_smuggle_a_second_statement(con):
    with pytest.raises(CatalogError):
        catalog.leaderboard(con, where="TRUE); DROP VIEW models; SELECT (1")
