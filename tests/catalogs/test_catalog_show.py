"""`show` reads only the files that can hold one model; names that collide after sanitising stay apart."""

from __future__ import annotations

from support.catalog_data import write

from catalogs import catalog
from catalogs.compact import compact
from catalogs.store import ResultStore, safe_name


def test_show_with_colliding_file_names_before_and_after_compaction(tmp_path):
    store = ResultStore(tmp_path)
    # local sources (not 'org/name' hub ids) share the _local partition; these two collide on disk names
    assert safe_name("my models/a b") == safe_name("my_models_a_b") == "my_models_a_b"
    write(store, "my models/a b", [2.0])
    write(store, "my_models_a_b", [3.0, 3.0])
    write(store, "org/a_b", [3.0, 3.0])
    write(store, "org/a_b.v2", [4.0, 4.0, 4.0])  # its file name starts with "m-a_b." too
    expected = {"my models/a b": 1, "my_models_a_b": 2, "org/a_b": 2, "org/a_b.v2": 3}
    for compacted in (False, True):
        if compacted:
            compact(tmp_path, min_files=1)
        con = catalog.connect(tmp_path)
        try:
            for repo, n in expected.items():
                (cols, rows), (_, layers) = catalog.show_model(con, repo)
                assert rows[0][cols.index("repo_id")] == repo and len(layers) == n, (repo, compacted)
        finally:
            con.close()
