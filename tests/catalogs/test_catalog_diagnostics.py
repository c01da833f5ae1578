"""Layer-level diagnostic views on planted data: out-of-band alphas, correlation-trap candidates, the
depth profile of one model, revision-to-revision change, failures and scans views."""

from __future__ import annotations

import math

import pytest
from support.catalog_data import fail, layer_rows, prov, summary, write

from catalogs import catalog
from catalogs.store import ResultStore


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    root = tmp_path_factory.mktemp("diag")
    store = ResultStore(root)
    # org/a: alphas by depth 1.5 (over-trained), 3, skipped, 7 (under-trained)
    write(store, "org/a", [1.5, 3.0, None, 7.0], revision="r1", minutes=0)
    write(store, "org/a", [2.5, 3.0, None, 5.0], revision="r2", minutes=10)
    # org/t: N=64, M=32 -> Q=2; MP edge for mean eigenvalue norm/M: (norm/32) * (1 + 1/sqrt(2))^2.
    # layer 0: lambda_max 100, norm 64 -> mean 2, edge 2 * 2.914 = 5.83, ratio 17.2 > 10 -> candidate
    # layer 1: lambda_max 10, norm 64 -> ratio 1.7 -> not; layer 2: fingers clipped -> candidate
    rows = (
        layer_rows([3.0], lambda_max=100.0, norm=64.0)
        + layer_rows([3.0], lambda_max=10.0, norm=64.0)
        + layer_rows([3.0], lambda_max=10.0, norm=64.0, num_fingers=2)
    )
    for i, r in enumerate(rows):
        r["layer_id"] = i
        r["tensor_name"] = f"t{i}"
    store.write_model(model=summary([3.0, 3.0, 3.0]), layers=rows, provenance=prov("org/t"))
    fail(store, "org/a", revision="r2", stage="download", error_type="TransientHubError", message="503")
    fail(store, "org/x", revision="r9", message="bad header", attempt=1)
    fail(store, "org/x", revision="r9", message="bad header", attempt=2)
    store.write_scan({"scan_id": "s1", "source": "hub", "filters": {"author": "org"}, "counts": {"done": 2}})
    c = catalog.connect(root)
    yield c
    c.close()


def test_alpha_out_of_range(con):
    _, rows = catalog.query(
        con,
        "SELECT revision, layer_id, alpha, diagnosis FROM layers_alpha_out_of_range "
        "ORDER BY revision, layer_id",
    )
    assert rows == [("r1", 0, 1.5, "over-trained (alpha<2)"), ("r1", 3, 7.0, "under-trained (alpha>6)")]


def test_correlation_trap_candidates(con):
    _, rows = catalog.query(
        con,
        "SELECT tensor_name, reason, lambda_max_over_mp_edge FROM "
        "correlation_trap_candidates WHERE repo_id = 'org/t' ORDER BY layer_id",
    )
    assert [(r[0], r[1]) for r in rows] == [("t0", "lambda_max > 10x MP edge"), ("t2", "fingers clipped")]
    edge = 2.0 * (1 + 1 / math.sqrt(2)) ** 2
    assert rows[0][2] == pytest.approx(100.0 / edge)
    _, flags = catalog.query(
        con,
        "SELECT count(*) FILTER (WHERE is_correlation_trap_candidate) FROM layers WHERE repo_id = 'org/a'",
    )
    assert flags == [(0,)]


def test_alpha_depth_profile_of_one_model(con):
    _, rows = catalog.query(
        con,
        "SELECT revision, layer_id, alpha, depth_index, relative_depth FROM "
        "alpha_depth_profile WHERE owner = 'org' AND repo_id = 'org/a' AND revision = 'r2' "
        "ORDER BY depth_index",
    )
    # the skipped tensor (layer 2) is not in the profile
    assert [r[1:4] for r in rows] == [(0, 2.5, 1), (1, 3.0, 2), (3, 5.0, 3)]
    assert [r[4] for r in rows] == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_revision_changes(con):
    cols, rows = catalog.query(con, "SELECT * FROM revision_changes")
    assert len(rows) == 1
    r = dict(zip(cols, rows[0]))
    assert (r["previous_revision"], r["revision"]) == ("r1", "r2")
    # mean alpha 3.8333 -> 3.5; share in [2, 6] 1/3 -> 1
    assert r["delta_alpha"] == pytest.approx(3.5 - (1.5 + 3.0 + 7.0) / 3)
    assert r["delta_share_alpha_2_6"] == pytest.approx(1 - 1 / 3)


def test_model_summaries_counts(con):
    _, rows = catalog.query(
        con,
        "SELECT repo_id, revision, n_alpha_lt_2, n_alpha_gt_6, n_trap_candidates, "
        "n_layers_skipped FROM model_summaries ORDER BY repo_id",
    )
    assert rows == [("org/a", "r2", 0, 0, 0, 1), ("org/t", "r1", 0, 0, 2, 0)]


def test_failures_view(con):
    _, rows = catalog.query(
        con, "SELECT repo_id, attempt, is_last_attempt, resolved FROM failures ORDER BY repo_id, attempt"
    )
    assert rows == [("org/a", 1, True, True), ("org/x", 1, False, False), ("org/x", 2, True, False)]


def test_scans_view(con):
    _, rows = catalog.query(con, "SELECT scan_id, source, n_done, filters->>'author' FROM scans")
    assert rows == [("s1", "hub", 2, "org")]


def test_show_latest_and_given_revision(con):
    (cols, rows), (lcols, layers) = catalog.show_model(con, "org/a")
    assert rows[0][cols.index("revision")] == "r2" and [r[lcols.index("alpha")] for r in layers][:2] == [
        2.5,
        3.0,
    ]
    (cols, rows), (lcols, layers) = catalog.show_model(con, "org/a@r1")
    assert rows[0][cols.index("revision")] == "r1" and layers[0][lcols.index("alpha")] == 1.5
    assert rows[0][cols.index("n_alpha_lt_2")] == 1 and len(layers) == 4  # skipped tensor listed too
