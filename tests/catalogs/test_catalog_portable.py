"""A catalog file works wherever it is opened: its views hold no absolute path (catalogs/sql/00_store_files.sql).

A store and its catalog copied to another folder read the copy, in ww-spectral and in a plain DuckDB
client opened from the copy's folder or with file_search_path - never the original folder, whether it
is gone or still there with other data.
"""

from __future__ import annotations

import shutil

import duckdb
import pytest
from support.catalog_data import run_cli, write

from catalogs import catalog
from catalogs.store import ResultStore


@pytest.fixture
def copied(tmp_path):
    """(original root, copied root): the original has org/a and org/b and a built catalog; the copy was
    made after that, and then the original gained org/c (so reading the original shows in the counts)."""
    orig, copy = tmp_path / "orig", tmp_path / "elsewhere" / "copy"
    store = ResultStore(orig)
    write(store, "org/a", [2.5, 3.0, 3.5])
    write(store, "org/b", [2.0, 4.0, 9.0])
    catalog.build_catalog(orig)
    shutil.copytree(orig, copy)
    write(store, "org/c", [3.0, 3.0])
    return orig, copy


def _plain_models(db) -> list[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT repo_id FROM models ORDER BY repo_id").fetchall()]
    finally:
        con.close()


def test_plain_duckdb_reads_the_copy_after_the_original_is_deleted(copied, monkeypatch):
    orig, copy = copied
    shutil.rmtree(orig)
    monkeypatch.chdir(copy)  # `cd DATA && duckdb catalog.duckdb`
    assert _plain_models("catalog.duckdb") == ["org/a", "org/b"]
    con = duckdb.connect(str(copy / "catalog.duckdb"), read_only=True)
    try:  # the tiered summaries work in a plain client too
        rows = con.execute("SELECT repo_id, tier, tier_name FROM model_summaries ORDER BY tier, alpha_weighted")
        assert rows.fetchall() == [("org/a", 1, "well trained"), ("org/b", 2, "mixed")]
    finally:
        con.close()


def test_plain_duckdb_never_reads_the_original_folder(copied, monkeypatch, tmp_path):
    orig, copy = copied
    monkeypatch.chdir(copy)
    assert _plain_models(copy / "catalog.duckdb") == ["org/a", "org/b"]  # not org/c of the original
    monkeypatch.chdir(tmp_path)  # from elsewhere: file_search_path names the DATA folder
    con = duckdb.connect(str(copy / "catalog.duckdb"), read_only=True)
    try:
        con.execute(f"SET file_search_path = '{copy}'")
        assert con.execute("SELECT count(*) FROM models").fetchall() == [(2,)]
    finally:
        con.close()
    monkeypatch.chdir(orig)  # and the original's own catalog still reads the original
    assert _plain_models(orig / "catalog.duckdb") == ["org/a", "org/b", "org/c"]


def test_ww_spectral_uses_the_copied_catalog_file_as_current(copied, capsys):
    orig, copy = copied
    shutil.rmtree(orig)
    con = catalog.connect(copy)
    try:  # the copied file is current (no DATA root in its fingerprint): no in-memory rebuild
        assert con.execute("SELECT count(*) FROM duckdb_views() WHERE database_name = 'catalog'").fetchall()[0][0]
        assert catalog.query(con, "SELECT count(*) FROM models")[1] == [(2,)]
        (cols, rows), (_, layers) = catalog.show_model(con, "org/b")
        assert rows[0][cols.index("repo_id")] == "org/b" and len(layers) == 3
    finally:
        con.close()
    assert run_cli(["leaderboard", "--data", str(copy), "--format", "csv"]) == 0
    assert [line.split(",")[1] for line in capsys.readouterr().out.splitlines()[1:]] == ["org/a", "org/b"]


def test_catalog_build_says_how_to_open_it_in_plain_duckdb(tmp_path, capsys, monkeypatch):
    write(ResultStore(tmp_path), "org/a", [3.0])
    assert run_cli(["catalog", "build", "--data", str(tmp_path)]) == 0
    hint = capsys.readouterr().out.splitlines()[-1]
    assert hint == f"plain DuckDB: cd {tmp_path} && duckdb catalog.duckdb"
    monkeypatch.chdir(tmp_path)
    assert _plain_models("catalog.duckdb") == ["org/a"]
