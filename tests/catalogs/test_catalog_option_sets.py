"""A store holding several option sets side by side (issue 10): models_latest keeps the latest revision per
(repo_id, options_hash), a leaderboard ranks ONE set (default: the default analysis's), `show` picks one
set and lists them all; bad choices fail with the stored sets named."""

from __future__ import annotations

import json

import pytest
from support.catalog_data import run_cli, write

from catalogs.catalog import (
    DEFAULT_OPTIONS_HASH,
    choose_options_hash,
    connect,
    leaderboard,
    option_sets,
    query,
    ranked_options_hash,
    show_model,
)
from catalogs.errors import CatalogError
from catalogs.store import ResultStore
from ww_spectral.records import AnalysisOptions

FP = AnalysisOptions().fingerprint()
MP = AnalysisOptions(mp_fit=True)
FP_MP = MP.fingerprint()
MP_JSON = json.dumps(MP.identity())


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    store = ResultStore(root)
    default_json = json.dumps(AnalysisOptions().identity())
    write(store, "org/a", [3.0, 3.0], revision="r1", options_hash=FP, minutes=0, options_json=default_json)
    write(store, "org/a", [4.0, 4.0], revision="r2", options_hash=FP, minutes=5, options_json=default_json)
    # analysed last, in another option set: must not hide org/a@r2 from the default leaderboard
    write(store, "org/a", [2.5, 2.5], revision="r1", options_hash=FP_MP, minutes=10, options_json=MP_JSON,
          mp_softrank=0.5)
    write(store, "org/b", [5.0, 5.0], revision="r1", options_hash=FP, minutes=1, options_json=default_json)
    write(store, "org/b", [2.2, 2.2], revision="r1", options_hash=FP_MP, minutes=2, options_json=MP_JSON,
          mp_softrank=0.25)
    write(store, "lab/only-mp", [3.3], revision="r9", options_hash=FP_MP, minutes=3, options_json=MP_JSON)
    return str(root)


@pytest.fixture
def con(root):
    c = connect(root)
    yield c
    c.close()


def test_models_latest_is_latest_per_repo_and_option_set(con):
    _, rows = query(con, "SELECT repo_id, options_hash, revision FROM models_latest ORDER BY ALL")
    assert rows == sorted([("org/a", FP, "r2"), ("org/a", FP_MP, "r1"), ("org/b", FP, "r1"), ("org/b", FP_MP, "r1"),
                           ("lab/only-mp", FP_MP, "r9")])  # fmt: skip


def test_each_leaderboard_ranks_its_own_option_set(con):
    assert DEFAULT_OPTIONS_HASH == FP and ranked_options_hash(con) == FP
    cols, rows = leaderboard(con, metric="alpha")
    got = [(r[cols.index("repo_id")], r[cols.index("revision")], r[cols.index("alpha")]) for r in rows]
    assert got == [("org/a", "r2", 4.0), ("org/b", "r1", 5.0)]  # default rows only, org/a's latest default
    cols, rows = leaderboard(con, metric="alpha", options_hash=FP_MP)
    got = [(r[cols.index("repo_id")], r[cols.index("alpha")]) for r in rows]
    assert got == [("org/b", 2.2), ("org/a", 2.5), ("lab/only-mp", 3.3)]
    _, tiered = leaderboard(con, options_hash=FP_MP, where="mp_softrank IS NOT NULL")
    assert sorted(r[1] for r in tiered) == ["org/a", "org/b"]
    assert leaderboard(con, options_hash="0" * 16)[1] == []


def test_show_picks_one_set_and_lists_all(root, con):
    (cols, rows), _ = show_model(con, "org/a")  # default set first, though the mp_fit row is newer
    s = dict(zip(cols, rows[0]))
    assert (s["options_hash"], s["revision"]) == (FP, "r2")
    (cols, rows), (_, layers) = show_model(con, "org/a", options_hash=FP_MP)
    s = dict(zip(cols, rows[0]))
    assert (s["options_hash"], s["revision"], s["mp_softrank"]) == (FP_MP, "r1", 0.5) and len(layers) == 2
    (cols, rows), _ = show_model(con, "org/a@r1")
    assert dict(zip(cols, rows[0]))["options_hash"] == FP
    (cols, rows), _ = show_model(con, "lab/only-mp")  # no default rows: its latest analysed set
    assert dict(zip(cols, rows[0]))["options_hash"] == FP_MP
    cols, sets = option_sets(con, "org/a")
    assert cols[:3] == ["options_hash", "options_label", "n_revisions"]
    assert [s[:3] for s in sets] == [(FP_MP, "mp_fit", 1), (FP, "default", 2)]
    with pytest.raises(CatalogError, match=f"{FP_MP} \\(mp_fit\\)"):
        show_model(con, "org/b", options_hash="f" * 16)
    with pytest.raises(CatalogError, match="not in the store"):
        show_model(con, "org/nothing")


def test_choose_options_hash():
    assert choose_options_hash() is None
    assert choose_options_hash("--mp-fit") == FP_MP and choose_options_hash("") == FP
    assert choose_options_hash(options_hash=FP_MP) == FP_MP
    with pytest.raises(CatalogError, match="16 hex"):
        choose_options_hash(options_hash="abc'; DROP")
    with pytest.raises(CatalogError, match="not both"):
        choose_options_hash("--mp-fit", FP)


def test_default_set_when_the_store_lacks_the_default_analysis(tmp_path):
    store = ResultStore(tmp_path)
    c = connect(tmp_path)
    try:
        assert ranked_options_hash(c) == FP  # empty store
    finally:
        c.close()
    write(store, "org/x", [3.0], options_hash="aaaaaaaaaaaaaaaa", options_json=MP_JSON)
    c = connect(tmp_path)
    try:
        assert ranked_options_hash(c) == "aaaaaaaaaaaaaaaa"  # its only set
        assert [r[1] for r in leaderboard(c)[1]] == ["org/x"]
    finally:
        c.close()
    write(store, "org/y", [3.0], options_hash="bbbbbbbbbbbbbbbb")
    c = connect(tmp_path)
    try:
        with pytest.raises(CatalogError, match="aaaaaaaaaaaaaaaa .*bbbbbbbbbbbbbbbb"):
            leaderboard(c)  # several non-default sets: never mixed, the user chooses
        assert [r[1] for r in leaderboard(c, options_hash="bbbbbbbbbbbbbbbb")[1]] == ["org/y"]
    finally:
        c.close()


def test_cli_chooses_the_option_set(root, capsys):
    assert run_cli(["leaderboard", "--data", root, "--format", "json", "--options=--mp-fit"]) == 0
    assert sorted(r["repo_id"] for r in json.loads(capsys.readouterr().out)) == ["lab/only-mp", "org/a", "org/b"]
    assert run_cli(["leaderboard", "--data", root, "--format", "json", "--options-hash", FP]) == 0
    assert sorted(r["repo_id"] for r in json.loads(capsys.readouterr().out)) == ["org/a", "org/b"]
    assert run_cli(["show", "org/b", "--data", root]) == 0
    out = capsys.readouterr().out
    assert FP in out and FP_MP in out and "mp_fit" in out and "default" in out
    assert run_cli(["leaderboard", "--data", root, "--options-hash", "nothex"]) == 2


def test_ranking_views_rank_within_one_option_set(con):
    _, rows = query(con, "SELECT options_hash, repo_id, rank, n_ranked FROM rankings WHERE metric = 'alpha' "
                         "ORDER BY options_hash, rank")  # fmt: skip
    assert sorted(rows) == sorted([(FP, "org/a", 1, 2), (FP, "org/b", 2, 2), (FP_MP, "org/b", 1, 3),
                                   (FP_MP, "org/a", 2, 3), (FP_MP, "lab/only-mp", 3, 3)])  # fmt: skip
    _, rows = query(con, "SELECT DISTINCT options_hash, n_in_group FROM rankings_by_group "
                         "WHERE metric = 'alpha' AND group_by = 'family' AND group_value = 'org/a'")  # fmt: skip
    assert sorted(rows) == sorted([(FP, 1), (FP_MP, 1)])
