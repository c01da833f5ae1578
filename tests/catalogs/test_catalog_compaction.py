"""Compaction keeps every query's result, keeps has_model, and is safe at each crash point;
files of an older schema version (fewer columns) still query, before and after compaction."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.catalog_data import fail, killed_after, write

from catalogs import catalog
from catalogs.compact import compact
from catalogs.schema import LAYERS_SCHEMA, MODELS_SCHEMA, SCHEMA_VERSION
from catalogs.store import ResultStore

VIEWS = ("layers", "models", "failures", "scans", "models_latest", "model_summaries", "rankings",
         "rankings_by_group", "layers_alpha_out_of_range", "correlation_trap_candidates", "alpha_depth_profile",
         "revision_changes")  # fmt: skip


def _fill(store: ResultStore) -> None:
    for i in range(6):
        owner = "org" if i % 2 else "lab"
        write(
            store,
            f"{owner}/m{i}",
            [1.5 + i, 2.5 + i, 3.0],
            model_type="llama" if i < 3 else "gpt2",
            parameter_count=10 ** (7 + i),
        )
    write(store, "org/m1", [2.2, 2.4, 2.6], revision="r2", minutes=10)
    fail(store, "org/bad", attempt=1)
    fail(store, "org/bad", attempt=2)
    store.write_scan({"scan_id": "s1", "source": "folder", "counts": {"done": 7}})
    store.write_scan({"scan_id": "s2", "source": "hub", "counts": {"done": 0}})


def _results(root) -> dict[str, list]:
    con = catalog.connect(root)
    try:
        out = {}
        for v in VIEWS:
            cols, rows = catalog.query(con, f"SELECT * FROM {v}")
            out[v] = sorted(tuple(str(x) for x in r) for r in rows)
            out[v + ".columns"] = cols
        out["leaderboard"] = catalog.leaderboard(con, group_by="model_type")
        out["show"] = catalog.show_model(con, "org/m1")
        return out
    finally:
        con.close()


def _data_files(root: Path, kind: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"{kind}-*.parquet") if "_seed" not in str(p))


def test_compaction_preserves_results_and_has_model(tmp_path):
    store = ResultStore(tmp_path)
    _fill(store)
    before = _results(tmp_path)
    assert len(before["models"]) == 7 and len(before["layers"]) == 21
    stats = compact(tmp_path)
    assert _data_files(tmp_path, "m") == []  # all per-model files merged ...
    c_files = _data_files(tmp_path, "c")
    # ... into one file per (table, partition): layers/models/failures x {lab, org} minus empty + scans month
    assert stats.files_written == len(c_files) == 2 + 2 + 1 + 1
    assert stats.files_merged == 7 + 7 + 2 + 2
    assert _results(tmp_path) == before
    assert store.has_model("org/m1", "r2", "opt0") and store.has_model("lab/m0", "r1", "opt0")
    # writing after compaction: a re-run of a compacted model is a no-op; a new one lands as a per-model file
    assert not write(store, "org/m1", [9.0], revision="r2")
    assert write(store, "org/new", [2.0, 3.0])
    after_new = _results(tmp_path)
    assert len(after_new["models"]) == 8
    compact(tmp_path)  # a second compaction adds one more compacted file to the org partitions
    assert _results(tmp_path) == after_new


def test_crash_between_write_and_delete_shows_no_duplicates(tmp_path):
    """State a crash after step 3 leaves: compacted file present AND the per-model files still there."""
    root, backup = tmp_path / "store", tmp_path / "backup"
    store = ResultStore(root)
    _fill(store)
    before = _results(root)
    shutil.copytree(root, backup)
    compact(root)
    for rel in _data_files(backup, "m"):  # put the merged per-model files back: both copies exist now
        shutil.copy2(backup / rel, root / rel)
    assert _data_files(root, "m") and _data_files(root, "c")
    assert _results(root) == before  # each record read exactly once (compacted copy wins)
    stats = compact(root)  # the next run only cleans the leftovers, writes nothing new
    assert stats.files_written == 0 and stats.leftovers_deleted == len(_data_files(backup, "m"))
    assert _data_files(root, "m") == []
    assert _results(root) == before


def test_crash_while_writing_compacted_file_is_invisible(tmp_path):
    """State a crash during step 3 leaves: a partial temp file that no read glob matches."""
    store = ResultStore(tmp_path)
    _fill(store)
    before = _results(tmp_path)
    part = tmp_path / "layers" / "owner=org"
    (part / ".c-20260101T000000-deadbeef.parquet.1234abcd.tmp").write_bytes(b"PAR1 half a file")
    assert _results(tmp_path) == before
    compact(tmp_path)
    assert _results(tmp_path) == before


def test_compaction_lock_refuses_a_second_run(tmp_path):
    store = ResultStore(tmp_path)
    _fill(store)
    (tmp_path / "_compact.lock").touch()
    with pytest.raises(Exception, match="another compaction"):
        compact(tmp_path)


def _old_version_file(path: Path, table_schema: pa.Schema, row: dict, drop: tuple[str, ...]) -> None:
    """A file as an older writer made it: same layout, fewer columns."""
    schema = pa.schema([f for f in table_schema if f.name not in drop])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([{k: row[k] for k in schema.names}], schema=schema), path)


def test_older_schema_version_files_still_query(tmp_path):
    store = ResultStore(tmp_path)
    write(store, "org/new", [3.0, 4.0], parameter_count=10**9, model_type="llama")
    new_model = store.read("models").to_pylist()[0]
    new_layer = store.read("layers").to_pylist()[0]
    # version-0 files: no hill_alpha / stable_rank in layers; no likes/base_model/hill_alpha in models
    old_key = store.model_key("org/old", "r1", "opt0")
    m_row = {
        **new_model,
        "repo_id": "org/old",
        "record_key": old_key,
        "schema_version": 0,
        "alpha": 2.5,
        "alpha_weighted": 2.5,
    }
    l_row = {**new_layer, "repo_id": "org/old", "record_key": old_key, "schema_version": 0}
    _old_version_file(
        tmp_path / f"models/owner=org/m-old.{old_key}.parquet",
        MODELS_SCHEMA,
        m_row,
        ("likes", "base_model", "hill_alpha", "hill_alpha_median"),
    )
    _old_version_file(
        tmp_path / f"layers/owner=org/m-old.{old_key}.parquet",
        LAYERS_SCHEMA,
        l_row,
        ("hill_alpha", "stable_rank"),
    )
    con = catalog.connect(tmp_path)
    try:
        _, rows = catalog.query(
            con, "SELECT repo_id, schema_version, hill_alpha FROM layers ORDER BY repo_id, layer_id"
        )
        assert rows[0] == ("org/new", SCHEMA_VERSION, 3.0) and rows[-1] == ("org/old", 0, None)
        assert [r[1] for r in catalog.leaderboard(con)[1]] == ["org/old", "org/new"]
        summary, layers = catalog.show_model(con, "org/old")
        assert summary[1][0][summary[0].index("likes")] is None and len(layers[1]) == 1
    finally:
        con.close()
    before = _results_small(tmp_path)
    compact(tmp_path)  # the old file's rows gain NULL columns in the compacted file, results unchanged
    assert _results_small(tmp_path) == before


def _results_small(root):
    con = catalog.connect(root)
    try:
        return {
            v: sorted(map(str, catalog.query(con, f"SELECT * FROM {v}")[1])) for v in ("layers", "models")
        }
    finally:
        con.close()


_KILLED_COMPACTION = """
import time
from catalogs import store as st
from catalogs.compact import compact

st._CHUNK_BYTES = 512
def slow(n):  # a compacted file is half-written: block until the parent kills us (it reads this line)
    print("chunk", n, flush=True)
    time.sleep(600)

compact({root!r}, on_progress=slow)
print("finished", flush=True)
"""


def test_killed_compaction_changes_nothing_and_is_resumed(tmp_path):
    store = ResultStore(tmp_path)
    _fill(store)
    before = _results(tmp_path)

    def mid_write():
        assert list(tmp_path.rglob("*.tmp"))  # a compacted file is half-written

    assert killed_after(_KILLED_COMPACTION.format(root=str(tmp_path)), check=mid_write)[0].startswith("chunk")
    assert (tmp_path / "_compact.lock").exists()  # left behind by the killed process
    assert _results(tmp_path) == before  # no partial file read, nothing lost or doubled
    stats = compact(tmp_path)  # the stale lock (dead pid) is taken over
    assert stats.files_written > 0 and _data_files(tmp_path, "m") == []
    assert _results(tmp_path) == before
    assert not (tmp_path / "_compact.lock").exists()


def _as_version_1(root: Path, repo_id: str) -> None:
    """Rewrite a model's files as a version-1 writer made them: the column was called analyzed_at."""
    for path in root.glob(f"*/owner=*/m-{repo_id.split('/')[1]}.*.parquet"):
        t = pq.read_table(path)
        t = t.rename_columns(["analyzed_at" if n == "analysed_at" else n for n in t.column_names])
        t = t.set_column(t.schema.get_field_index("schema_version"), "schema_version",
                         pa.array([1] * t.num_rows, pa.int32()))  # fmt: skip
        pq.write_table(t, path)


@pytest.mark.parametrize("old", [(), ("org/old",), ("org/old", "org/new")], ids=["new", "old+new", "old"])
def test_files_with_the_old_analyzed_at_name_still_query(tmp_path, old):
    store = ResultStore(tmp_path)
    write(store, "org/old", [3.0, 4.0], minutes=1)
    write(store, "org/old", [2.0, 4.0], revision="r2", minutes=2)
    write(store, "org/new", [2.5], minutes=3)
    for repo in old:
        _as_version_1(tmp_path, repo)
    if old:  # an old store has the version-1 seed (no analysed_at) and no current one
        v1 = pa.schema([f.with_name("analyzed_at") if f.name == "analysed_at" else f for f in MODELS_SCHEMA])
        (tmp_path / "models/owner=_seed").mkdir()
        pq.write_table(v1.empty_table(), tmp_path / "models/owner=_seed/c-seed-v1.parquet")
    expected = [("org/new", "r1", 3), ("org/old", "r1", 1), ("org/old", "r2", 2)]

    def check():
        con = catalog.connect(tmp_path)
        try:
            sql = "SELECT repo_id, revision, minute(analysed_at) FROM models ORDER BY ALL"
            assert catalog.query(con, sql)[1] == expected
            sql = (
                "SELECT DISTINCT repo_id, minute(analysed_at) FROM layers WHERE revision = 'r1' ORDER BY ALL"
            )
            assert catalog.query(con, sql)[1] == [("org/new", 3), ("org/old", 1)]
            cols, rows = catalog.query(con, "SELECT * FROM revision_changes")
            assert "analyzed_at" not in cols and rows[0][cols.index("previous_analysed_at")].minute == 1
            assert [r[1] for r in catalog.leaderboard(con)[1]] == ["org/new", "org/old"]  # latest = r2
            summary, _ = catalog.show_model(con, "org/old@r1")
            assert summary[1][0][summary[0].index("analysed_at")].minute == 1
        finally:
            con.close()
        assert sorted(t.minute for t in store.read("models").column("analysed_at").to_pylist()) == [1, 2, 3]

    check()  # in-memory views
    catalog.build_catalog(tmp_path)
    check()  # the catalog file's views over the current seed
    compact(tmp_path, min_files=1)  # the values move to the current name in the compacted files
    check()
    merged = pq.read_table(next((tmp_path / "models/owner=org").glob("c-*.parquet")))
    assert "analyzed_at" not in merged.column_names and merged.column("analysed_at").null_count == 0


def test_a_store_of_files_without_the_option_columns_ranks_with_a_catalog_file(tmp_path):
    """A store written before schema 3 (layers without rand_distance and the other option columns, its
    seed of the same shape under the current version's name) still builds, ranks and shows: build_catalog
    rewrites the seed whose columns differ, so the catalog file's views see every column."""
    store = ResultStore(tmp_path)
    write(store, "org/a", [3.0, 3.0])
    write(store, "org/b", [7.0, 8.0])
    option_columns = [c for c in LAYERS_SCHEMA.names if LAYERS_SCHEMA.names.index(c) > LAYERS_SCHEMA.names.index(
        "hill_alpha")]  # fmt: skip
    assert "rand_distance" in option_columns
    for path in (tmp_path / "layers").rglob("*.parquet"):
        pq.write_table(pq.read_table(path).drop_columns([c for c in option_columns]), path)
    seed = tmp_path / "layers" / "owner=_seed" / f"c-seed-v{SCHEMA_VERSION}.parquet"
    seed.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.schema([f for f in LAYERS_SCHEMA if f.name not in option_columns]).empty_table(), seed)
    catalog.build_catalog(tmp_path)
    assert "rand_distance" in pq.read_schema(seed).names  # rewritten
    con = catalog.connect(tmp_path)
    try:
        assert con.execute("SELECT database_name FROM duckdb_views() WHERE view_name = 'layers'").fetchall() == [
            ("catalog",)]  # fmt: skip
        cols, rows = catalog.leaderboard(con)
        assert [(r[1], r[2]) for r in rows] == [("org/a", 1), ("org/b", 3)]
        assert catalog.query(con, "SELECT count(rand_distance), count(*) FROM layers")[1] == [(0, 4)]
    finally:
        con.close()
