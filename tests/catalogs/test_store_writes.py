"""ResultStore on a local folder: layout, has_model, re-run no-op, a killed writer leaves no partial file."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import duckdb
import pytest
from support.catalog_data import fail, killed_after, layer_rows, prov, summary, write

from catalogs.schema import writer_version
from catalogs.store import ResultStore, owner_of


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_layout_one_file_per_model_revision_per_table(tmp_path):
    store = ResultStore(tmp_path)
    assert write(store, "meta-llama/Llama-3-8B", [3.0, 4.0, None], revision="a" * 40)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    key = store.model_key("meta-llama/Llama-3-8B", "a" * 40, "opt0")
    assert files == [
        f"_markers/owner=meta-llama/Llama-3-8B.{key}.json",
        f"layers/owner=meta-llama/m-Llama-3-8B.{key}.parquet",
        f"models/owner=meta-llama/m-Llama-3-8B.{key}.parquet",
    ]
    layers = store.read("layers")
    assert layers.num_rows == 3
    assert set(layers.column("revision").to_pylist()) == {"a" * 40}
    assert layers.column("status").to_pylist() == ["success", "success", "skipped"]
    m = store.read("models").to_pylist()[0]
    assert (m["n_tensors"], m["n_layers_analysed"], m["n_layers_skipped"]) == (3, 2, 1)  # filled from layers
    assert m["ww_spectral_version"] and m["options_hash"] == "opt0" and m["analysed_at"].tzinfo


def test_owner_partition_of_hub_ids_and_local_paths():
    assert owner_of("google/gemma-2b") == "google"
    assert owner_of("/tmp/x/model.safetensors") == "_local"
    assert owner_of("just-a-name") == "_local"


def test_has_model_and_rerun_is_a_noop(tmp_path):
    store = ResultStore(tmp_path)
    assert not store.has_model("org/a", "r1", "opt0")
    assert write(store, "org/a", [3.0, 4.0])
    assert store.has_model("org/a", "r1", "opt0")
    assert not store.has_model("org/a", "r2", "opt0") and not store.has_model("org/a", "r1", "other")
    before = _snapshot(tmp_path)
    time.sleep(0.01)
    assert write(store, "org/a", [9.0, 9.0]) is False  # same revision + options: skipped, nothing written
    assert _snapshot(tmp_path) == before
    assert store.read("models").column("alpha").to_pylist() == [3.5]
    assert write(store, "org/a", [5.0], options_hash="opt1")  # other options: a new record
    assert store.read("models").num_rows == 2
    assert sorted(m["options_hash"] for m in store.list_models()) == ["opt0", "opt1"]


def test_extra_model_keys_go_to_extra_json_and_provenance_must_agree(tmp_path):
    store = ResultStore(tmp_path)
    model = {**summary([3.0]), "parameter_count": 7, "seconds_total": 1.5, "repo_id": "org/a"}
    store.write_model(model=model, layers=layer_rows([3.0]), provenance=prov("org/a"))
    row = store.read("models").to_pylist()[0]
    assert row["parameter_count"] == 7 and json.loads(row["extra_json"]) == {"seconds_total": 1.5}
    with pytest.raises(Exception, match="disagrees"):
        store.write_model(model={"repo_id": "org/zzz"}, layers=layer_rows([3.0]), provenance=prov("org/b"))


def test_failures_and_scans(tmp_path):
    store = ResultStore(tmp_path)
    a = fail(store, "org/x", message="truncated")
    again = fail(store, "org/x", message="truncated")
    fail(
        store,
        "org/x",
        revision=None,
        stage="download",
        error_type="TransientHubError",
        message="503",
        attempt=2,
    )
    assert a == again  # same attempt overwrites its own file
    f = store.read("failures").to_pylist()
    assert sorted((r["stage"], r["attempt"], r["revision"]) for r in f) == [
        ("download", 2, "unknown"),
        ("read", 1, "r"),
    ]
    rel = store.write_scan(
        {
            "source": "hub",
            "filters": {"author": "org", "limit": 3},
            "counts": {"done": 2, "skipped": 1, "failed": 0},
            "seconds": 1.25,
        }
    )
    assert rel.startswith("scans/month=")
    s = store.read("scans").to_pylist()[0]
    assert (s["n_done"], s["n_skipped"], s["n_failed"], s["seconds"]) == (2, 1, 0, 1.25)
    assert json.loads(s["filters_json"]) == {"author": "org", "limit": 3}


def test_last_failures_is_the_newest_row_per_revision_of_these_options(tmp_path):
    """One read of the failures table: per (repo_id, revision) the newest row by failed_at (then attempt),
    only rows of the options asked for, also when a compacted file and a later rewrite of its row (same
    record_key) are both on disk; repo_ids limits the read to their owners' partitions."""
    from catalogs.compact import compact

    store = ResultStore(tmp_path)
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

    def at(repo, day, error_type, *, stage="read", attempt=1, options_hash="fp", revision="r1"):
        store.write_failure(repo_id=repo, revision=revision, stage=stage, error_type=error_type, message="m",
                            attempt=attempt, options_hash=options_hash, failed_at=t0 + dt.timedelta(days=day))

    assert store.last_failures("fp") == {}  # no failures folder yet
    at("org/a", 0, "CheckpointError")
    at("org/a", 1, "TransientHubError", stage="download", attempt=4)  # a later night: the last attempt
    at("org/b", 0, "TransientHubError", attempt=2)
    at("org/b", 0, "TransientHubError", attempt=1)  # same failed_at: the higher attempt is the last
    at("org/c", 0, "NoWeightsError", options_hash="other")  # other options: not asked for
    at("solo", 0, "CheckpointError")
    compact(str(tmp_path))
    at("solo", 2, "UnsupportedDtypeError")  # rewrites the compacted row's record_key, newer
    last = store.last_failures("fp")
    assert sorted(last) == [("org/a", "r1"), ("org/b", "r1"), ("solo", "r1")]
    assert (last[("org/a", "r1")]["error_type"], last[("org/a", "r1")]["attempt"]) == ("TransientHubError", 4)
    assert last[("org/b", "r1")]["attempt"] == 2
    assert last[("solo", "r1")]["error_type"] == "UnsupportedDtypeError"
    assert last[("solo", "r1")]["ww_spectral_version"] == writer_version()
    assert sorted(store.last_failures("fp", repo_ids=["org/zzz"])) == [("org/a", "r1"), ("org/b", "r1")]
    assert store.last_failures("fp", repo_ids=["nobody/x"]) == {}


_KILLED_WRITER = """
import time
from support.catalog_data import layer_rows, prov, summary
from catalogs import store as st

st._CHUNK_BYTES = 4096
chunks = []
def slow(n):  # two chunks in the temp file: block there until the parent kills us (it reads both lines)
    print("chunk", n, flush=True)
    chunks.append(n)
    if len(chunks) == 2:
        time.sleep(600)

s = st.ResultStore({root!r}, on_chunk=slow)
alphas = [2.0 + (i % 40) / 10 for i in range(3000)]
s.write_model(model=summary(alphas), layers=layer_rows(alphas), provenance=prov("org/killed"))
print("finished", flush=True)
"""


def test_killed_writer_leaves_no_visible_partial_file(tmp_path):
    root = tmp_path / "store"
    store = ResultStore(root)
    write(store, "org/fine", [3.0, 4.0])

    def mid_write():
        tmp = list(root.rglob("*.tmp"))
        assert len(tmp) == 1 and tmp[0].stat().st_size > 0  # really mid-write

    lines = killed_after(_KILLED_WRITER.format(root=str(root)), lines=2, check=mid_write)
    assert all(line.startswith("chunk") for line in lines), lines  # two chunks are in the temp file
    # No visible file of the killed model; the read globs do not match the leftover temp file.
    visible = [str(p.relative_to(root)) for p in root.rglob("*.parquet")]
    assert not [v for v in visible if "killed" in v], visible
    assert not store.has_model("org/killed", "r1", "opt0")
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT DISTINCT repo_id FROM read_parquet('{root}/layers/*/*.parquet', hive_partitioning = true)"
    ).fetchall()
    assert rows == [("org/fine",)]
    # A re-run completes the model normally.
    alphas = [3.0] * 5
    assert store.write_model(model=summary(alphas), layers=layer_rows(alphas), provenance=prov("org/killed"))
    assert store.has_model("org/killed", "r1", "opt0")
    assert store.read("models").num_rows == 2
