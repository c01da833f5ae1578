"""The default ranking's tiers (catalogs/metrics.py): random-init models never above trained ones.

The store holds models of one shape, analysed by the library and written as a scan writes them:
trained (heavy-tailed planted spectra), barely trained (random init plus a weak low-rank tail) and
randomly initialised (i.i.d. Gaussian, std 0.02). alpha_weighted alone ranks the random ones first
(small weights give a negative log10 lambda_max): that is the failure the tiers exist for, and the
proof that the main test can fail. The rule before the pre-registered split (pipelines/proof/
PREREGISTRATION.md: under-trained and random-like were one tier ordered by alpha_weighted) put the random
ones above the barely trained ones; the main test checks every random-init model is below every trained
one, barely trained included (tests/proof/test_proof_random_last.py does the same on really trained nets).
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.catalog_data import (
    barely_trained,
    layer_rows,
    prov,
    random_init,
    run_cli,
    summary,
    trained,
    write_analysed,
)
from threadpoolctl import threadpool_limits

from catalogs import catalog
from catalogs.metrics import TIER_RULE, TIERS
from catalogs.store import ResultStore
from ww_spectral.metrics import looks_random
from ww_spectral.records import AnalysisOptions

SEEDS = (0, 1, 2)
RANDOMIZE = AnalysisOptions(randomize=True).fingerprint()  # the option set of the *-randomize models


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiers")
    store = ResultStore(root)
    with threadpool_limits(limits=1):  # building orthonormal bases: BLAS threads only contend on 2 cores
        for s in SEEDS:
            write_analysed(store, f"trained/t{s}", trained(s))
            write_analysed(store, f"barely/b{s}", barely_trained(100 + s, strength=0.7))
            write_analysed(store, f"random/r{s}", random_init(200 + s))
        # the same kinds analysed with randomize: rand_distance joins the random-likeness test
        write_analysed(store, "trained/t-randomize", trained(7), randomize=True)
        write_analysed(store, "random/r-randomize", random_init(207), randomize=True)
    return str(root)


@pytest.fixture(scope="module")
def con(root):
    c = catalog.connect(root)
    yield c
    c.close()


def _kind(repo_id: str) -> str:
    return repo_id.split("/")[0]


def _ranks(con, **kw) -> dict[str, int]:
    cols, rows = catalog.leaderboard(con, **kw)
    return {r[cols.index("repo_id")]: r[cols.index("rank")] for r in rows}


def test_default_leaderboard_puts_every_random_init_model_below_every_trained_one(con):
    ranks = _ranks(con)
    trained_ranks = [r for repo, r in ranks.items() if _kind(repo) == "trained"]
    random_ranks = [r for repo, r in ranks.items() if _kind(repo) == "random"]
    barely_ranks = [r for repo, r in ranks.items() if _kind(repo) == "barely"]
    assert len(trained_ranks) == len(random_ranks) == len(barely_ranks) == len(SEEDS)  # the default set only
    assert max(trained_ranks) < min(random_ranks), ranks
    assert max(barely_ranks) < min(random_ranks), ranks  # barely trained is trained: above every random init
    randomized = _ranks(con, options_hash=RANDOMIZE)  # the randomize option set is ranked on its own
    assert randomized["trained/t-randomize"] < randomized["random/r-randomize"], randomized
    assert max(trained_ranks) < min(barely_ranks), ranks  # most layers alpha > 6: under-trained
    cols, rows = catalog.leaderboard(con)
    tiers = {r[cols.index("repo_id")]: r[cols.index("tier")] for r in rows}
    assert {tiers[repo] for repo in tiers if _kind(repo) == "trained"} == {1}
    assert {tiers[repo] for repo in tiers if _kind(repo) == "random"} == {4}  # random-like
    assert {tiers[repo] for repo in tiers if _kind(repo) == "barely"} <= {3, 4}  # under-trained or random-like


def test_alpha_weighted_alone_ranks_a_random_init_model_above_a_trained_one(con):
    # the failure the tiers fix; it also shows that the test above can fail
    ranks = _ranks(con, metric="alpha_weighted")
    best_random = min(r for repo, r in ranks.items() if _kind(repo) == "random")
    worst_trained = max(r for repo, r in ranks.items() if _kind(repo) == "trained")
    assert best_random < worst_trained, ranks
    assert min(ranks, key=ranks.get).startswith("random/")  # a random init is even first


def test_why_each_row_stands_where_it_does(con):
    cols, rows = catalog.leaderboard(con)
    r = {row[cols.index("repo_id")]: dict(zip(cols, row)) for row in rows}
    assert r["random/r0"]["tier_name"] == TIERS[4] == "random-like" and r["random/r0"]["share_random_like"] == 1.0
    assert r["trained/t0"]["tier_name"] == TIERS[1] and r["trained/t0"]["share_alpha_2_6"] >= 0.75
    cols_r, rows_r = catalog.leaderboard(con, options_hash=RANDOMIZE)
    tier_r = {row[cols_r.index("repo_id")]: row[cols_r.index("tier")] for row in rows_r}
    assert tier_r == {"random/r-randomize": 4, "trained/t-randomize": 1}
    # within a tier: alpha_weighted, lower first
    tier1 = sorted((v["rank"], v["alpha_weighted"]) for v in r.values() if v["tier"] == 1)
    assert [aw for _, aw in tier1] == sorted(aw for _, aw in tier1)


def test_show_explains_the_flags_in_words(root, capsys):
    assert run_cli(["show", "random/r1", "--data", root]) == 0
    out = capsys.readouterr().out
    assert "tier 4 (random-like)" in out
    assert "4 of 4 analysed layers look like a random matrix" in out
    assert "ranked below every well-trained, mixed and under-trained model" in out
    assert run_cli(["show", "barely/b1", "--data", root]) == 0  # 1 of 4 layers random-like, median alpha > 6
    out = capsys.readouterr().out
    assert "tier 3 (under-trained)" in out
    assert "the median layer alpha is" in out and "(WeightWatcher: under-trained)" in out
    assert run_cli(["show", "trained/t0", "--data", root, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["explanation"][0].startswith("tier 1 (well trained)")
    assert doc["summary"]["tier"] == 1 and doc["summary"]["n_random_like"] == 0


# ---------------------------------------------------------------------------- the rule's boundaries
N, M = 64, 32


def _edge(norm: float) -> float:
    """The Marchenko-Pastur edge of a random N x M matrix of that squared Frobenius norm, here in Python."""
    return norm / M * (1 + math.sqrt(M / N)) ** 2


def _pad() -> float:
    s = (1 / math.sqrt(M) + 1 / math.sqrt(N)) ** (1 / 3) / (math.sqrt(N) + math.sqrt(M))
    return 1 + TIER_RULE.tw_pad * s


@pytest.fixture(scope="module")
def rule_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rule")
    store = ResultStore(root)
    norm = float(M)  # mean eigenvalue 1

    def put(repo, alphas, ratios, rand=None, scale=1.0):
        rows = []
        for i, (a, q) in enumerate(zip(alphas, ratios)):
            row = layer_rows([a], lambda_max=q * _edge(norm * scale), norm=norm * scale, N=N, M=M,
                             rand_distance=rand)[0]
            rows.append({**row, "layer_id": i, "tensor_name": f"l{i}"})
        fitted = [a for a in alphas if a is not None]
        ok = [r for r in rows if r["status"] == "success"]
        means = {k: sum(r[k] for r in ok) / len(ok) for k in ("alpha_weighted", "log_spectral_norm")} if ok else {}
        store.write_model(model=summary(fitted, **means) if fitted else {}, layers=rows, provenance=prov(repo))

    inside, outside = 0.5 * (1 + _pad()), _pad() + 0.05  # just within / beyond the Tracy-Widom pad
    put("x/band-75", [3, 3, 3, 7], [3, 3, 3, 3])  # 3 of 4 in band: tier 1
    put("x/band-50", [3, 3, 7, 1.5], [3, 3, 3, 3])  # 2 of 4: mixed
    put("x/half-random", [3, 3, 3, 3], [inside, inside, outside, 3])  # 2 of 4 look random: tier 4
    put("x/one-random", [3, 3, 3, 3], [inside, 3, 3, 3])  # 1 of 4: still tier 1
    put("x/median-7", [7, 7, 3, 3, 7], [3] * 5)  # median alpha 7 > 6: tier 3
    put("x/median-7-random", [7, 7, 7, 7], [inside] * 4)  # both: random-like (tier 4) wins
    put("x/rand-distance", [3, 3, 3, 3], [3] * 4, rand=TIER_RULE.rand_distance_min / 2)  # shuffled = same
    # every layer random-like, weights 10 x larger (log_spectral_norm + 1): above x/rand-distance in tier 4
    put("x/all-random-grown", [3, 3, 3, 3], [inside] * 4, scale=10.0)
    put("x/all-random", [2.5, 2.5, 2.5, 2.5], [inside] * 4)  # smaller alpha_weighted, same share
    put("x/far-from-shuffled", [3, 3, 3, 3], [3] * 4, rand=TIER_RULE.rand_distance_min * 2)
    put("x/nothing", [None, None], [3, 3])  # every tensor skipped: tier 5
    return root


@pytest.fixture(scope="module")
def rule_con(rule_root):
    c = catalog.connect(rule_root)
    yield c
    c.close()


_STORED = ("n_layers_random_like", "share_random_like")


def test_sql_and_python_flag_the_same_layers(rule_con):
    """The catalog's per-layer flag (05_layer_flags.sql) is the library's looks_random on every row."""
    cols = ["status", "lambda_max", "norm", "num_evals", "N", "M", "rand_distance"]
    _, rows = catalog.query(rule_con, f"SELECT looks_random, {', '.join(cols)} FROM layers")
    assert len(rows) > 20
    python = looks_random(*(np.array([r[i + 1] for r in rows], dtype=object) for i in range(len(cols))))
    assert [r[0] for r in rows] == python.tolist() and 0 < sum(python) < len(rows)


def test_the_tier_is_read_from_the_models_row(rule_root, rule_con):
    """The count is stored when the model is written, so the tier follows the stored value: a models row
    that says every layer looks random is tier 3 whatever its layers say."""
    _, rows = catalog.query(rule_con, "SELECT repo_id, n_layers_random_like, share_random_like FROM models "
                                      "WHERE repo_id IN ('x/half-random', 'x/one-random', 'x/nothing')")  # fmt: skip
    assert sorted(rows) == [("x/half-random", 2, 0.5), ("x/nothing", 0, None), ("x/one-random", 1, 0.25)]


def _rewrite_models(root, change) -> None:
    """Every per-model models file of the store at `root`, rewritten as change(table) returns it."""
    for f in (root / "models").rglob("m-*.parquet"):
        pq.write_table(change(pq.read_table(f)), f)


def test_files_without_the_stored_count_get_the_same_tiers(rule_root, tmp_path):
    """Models files written before schema version 4 lack the stored count: the catalog counts their layers
    (and only theirs), with the same result; a store mixing old and new files ranks the same."""
    want = _on(rule_root, catalog.leaderboard)
    old = tmp_path / "old"
    shutil.copytree(rule_root, old)
    _rewrite_models(old, lambda t: t.drop_columns(list(_STORED)))
    assert _on(old, catalog.leaderboard) == want
    _, rows = _on(old, lambda c: catalog.query(c, "SELECT repo_id, n_layers_random_like FROM model_summaries "
                                                  "WHERE repo_id = 'x/half-random'"))  # fmt: skip
    assert rows == [("x/half-random", 2)]
    # a new-format row is believed (not recounted): planting a wrong stored count moves the tier
    liar = tmp_path / "liar"
    shutil.copytree(rule_root, liar)
    _rewrite_models(liar, lambda t: t.set_column(t.schema.get_field_index("share_random_like"),
                                                 "share_random_like", pa.array([1.0] * len(t), pa.float64())))
    tiers = {r[1]: r[2] for r in _on(liar, catalog.leaderboard)[1]}
    assert tiers["x/band-75"] == 4 and tiers["x/nothing"] == 5


def _on(root, run):
    """run(connection) on a fresh connection to the store at `root`, closed after."""
    c = catalog.connect(str(root))
    try:
        return run(c)
    finally:
        c.close()


def test_looks_random_follows_the_documented_formula(rule_con):
    _, rows = catalog.query(rule_con, "SELECT tensor_name, looks_random, lambda_max_over_mp_edge FROM layers "
                                      "WHERE repo_id = 'x/half-random' ORDER BY layer_id")  # fmt: skip
    assert [r[1] for r in rows] == [True, True, False, False]
    assert rows[0][2] == pytest.approx(0.5 * (1 + _pad()))


def test_tier_boundaries(rule_con):
    cols, rows = catalog.leaderboard(rule_con)
    tier = {r[cols.index("repo_id")]: r[cols.index("tier")] for r in rows}
    assert tier == {"x/band-75": 1, "x/band-50": 2, "x/half-random": 4, "x/one-random": 1, "x/median-7": 3,
                    "x/median-7-random": 4, "x/rand-distance": 4, "x/far-from-shuffled": 1,
                    "x/all-random-grown": 4, "x/all-random": 4, "x/nothing": 5}  # fmt: skip
    assert [tier[r] for r in (row[cols.index("repo_id")] for row in rows)] == sorted(tier.values())
    assert rows[-1][cols.index("repo_id")] == "x/nothing"  # no analysable layer: last, with its reason
    assert rows[-1][cols.index("tier_name")] == "no analysable layer"
    plain = [r[1] for r in catalog.leaderboard(rule_con, metric="alpha_weighted")[1]]
    assert "x/nothing" not in plain and len(plain) == len(rows) - 1  # a metric alone: models with a value


def test_random_like_tier_order(rule_con):
    """Within the random-like tier (catalogs/metrics.py RANDOM_LIKE_ORDER): fewer random-looking layers first,
    then the larger log_spectral_norm, whatever alpha_weighted says; the other tiers keep the metric's order."""
    cols, rows = catalog.leaderboard(rule_con)
    tier4 = [r[cols.index("repo_id")] for r in rows if r[cols.index("tier")] == 4]
    assert tier4[0] == "x/half-random"  # share 0.5 before the shares of 1.0
    assert tier4.index("x/all-random-grown") < tier4.index("x/all-random")
    _, aw = catalog.query(rule_con, "SELECT repo_id, alpha_weighted, log_spectral_norm FROM models "
                                    "WHERE repo_id IN ('x/all-random-grown', 'x/all-random') ORDER BY repo_id")
    (_, aw_all, lsn_all), (_, aw_grown, lsn_grown) = aw
    assert aw_grown > aw_all and lsn_grown > lsn_all  # alpha_weighted alone would order them the other way
    tiered = catalog.leaderboard(rule_con, metric="alpha", tiered=True)
    assert [r[2] for r in tiered[1]] == sorted(r[2] for r in tiered[1])  # --tiered keeps the tiers first
