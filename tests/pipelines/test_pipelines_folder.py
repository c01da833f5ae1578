"""A folder scan on a real local Ray (2 workers) under a real Prefect API writes the expected Parquet,
a second run skips everything, and an edited model is analysed again as a new revision."""

from __future__ import annotations

import numpy as np
import pytest
from pipelines_zoo import make_big_model, make_zoo, model_tensors
from support.checkpoints import write_hf_model_folder

from catalogs.store import ResultStore
from pipelines.flows import scan_folder
from ww_spectral.analysis import analyze_model
from ww_spectral.records import AnalysisOptions

FP = AnalysisOptions().fingerprint()


def _by(table, key):
    return {row[key]: row for row in table.to_pylist()}


@pytest.mark.slow
def test_folder_scan_writes_expected_parquet_and_second_run_skips(ray_local, prefect_api, tmp_path):
    zoo = make_zoo(tmp_path / "zoo", n_good=6)
    data = str(tmp_path / "data")

    first = scan_folder(folder=str(tmp_path / "zoo"), data_root=data, workers=2)
    assert (first["requested"], first["done"], first["skipped"], first["failed"]) == (8, 6, 0, 2), first["failures"]

    store = ResultStore(data)
    models = store.read("models")
    assert sorted(models.column("repo_id").to_pylist()) == [f"m{i}" for i in range(6)]
    assert set(models.column("options_hash").to_pylist()) == {FP}
    layers = store.read("layers")
    for name in ("m0", "m1", "m2"):
        # Planted truth: the scan's rows equal the library's direct analysis of the same folder.
        direct = analyze_model(str(zoo[name]))
        rows = [r for r in layers.to_pylist() if r["repo_id"] == name]
        assert len(rows) == len(direct.layers) == 4  # 3 matrices + 1 skipped norm vector
        mine = {r["tensor_name"]: r for r in rows}
        for ref in direct.layers.to_dict("records"):
            got = mine[ref["tensor_name"]]
            assert got["status"] == ref["status"] and got["layer_id"] == ref["layer_id"]
            alpha = np.nan if got["alpha"] is None else got["alpha"]  # NaN is stored as NULL
            assert alpha == pytest.approx(ref["alpha"], rel=1e-12, nan_ok=True)
            assert got["revision"] == direct.ref.revision
        model = _by(models, "repo_id")[name]
        assert model["alpha"] == pytest.approx(direct.summary["alpha"], rel=1e-12)
        assert model["n_layers_analysed"] == 3 and model["n_layers_skipped"] == 1
        assert model["architecture"] == "LlamaForCausalLM" and model["source_kind"] == "folder"
    assert _by(models, "repo_id")["m2"]["dtype"] == "BF16"

    failures = _by(store.read("failures"), "repo_id")
    assert set(failures) == {"broken", "quantized"}
    assert (failures["broken"]["stage"], failures["broken"]["error_type"], failures["broken"]["attempt"]) == (
        "read", "CheckpointError", 1)  # permanent: recorded once, never retried
    assert (failures["quantized"]["stage"], failures["quantized"]["error_type"]) == ("read", "NoAnalysableLayerError")
    scans = store.read("scans").to_pylist()
    assert [(s["source"], s["n_done"], s["n_skipped"], s["n_failed"]) for s in scans] == [("folder", 6, 0, 2)]
    assert first["catalog"] and first["catalog"].endswith("catalog.duckdb")

    # Second run: every stored revision is skipped, and so are the two that failed for good (a damaged and an
    # unanalysable checkpoint: pipelines/faults.py skips_rescan), counted apart; nothing is written twice.
    second = scan_folder(folder=str(tmp_path / "zoo"), data_root=data, workers=2)
    assert (second["done"], second["skipped"], second["skipped_failed"], second["failed"]) == (0, 6, 2, 0), \
        second["failures"]
    assert store.read("models").num_rows == 6 and store.read("layers").num_rows == layers.num_rows
    assert store.read("failures").num_rows == 2  # not attempted again: no new failures row

    # Editing one model's weights makes a new revision: only that model is analysed again.
    write_hf_model_folder(zoo["m3"], model_tensors(333), n_shards=2)
    third = scan_folder(folder=str(tmp_path / "zoo"), data_root=data, workers=2)
    assert (third["done"], third["skipped"]) == (1, 5), third["failures"]
    revs = [r["revision"] for r in store.read("models").to_pylist() if r["repo_id"] == "m3"]
    assert len(revs) == 2 and len(set(revs)) == 2
    assert len(store.read("scans")) == 3


@pytest.mark.slow
def test_big_model_is_split_over_ray_tasks_with_memory_declared(ray_local, prefect_api, tmp_path, monkeypatch):
    folder = make_big_model(tmp_path / "zoo" / "big", n_layers=6, side=256)
    monkeypatch.setenv("WW_SCAN_CHUNK_BYTES", str(3_200_000))  # 2 layers of 256x256 (1.57 MB each) per chunk
    summary = scan_folder(folder=str(tmp_path / "zoo"), data_root=str(tmp_path / "data"), workers=2)
    assert summary["done"] == 1
    (info,) = summary["models"]
    per_layer = 8 * 256 * 256 + 2 * 8 * 256 * 256
    assert info["chunks"] == 6  # 2 slots x CHUNKS_PER_SLOT (3): one layer each, within the 2-layer budget
    assert not info["prefect_in_workers"]  # no Prefect code runs inside Ray workers
    assert info["max_chunk_memory"] == per_layer + 256 * 2**20  # the largest layer + the fixed base
    # Split or not, the rows equal the direct analysis, in checkpoint order.
    direct = analyze_model(str(folder))
    layers = ResultStore(str(tmp_path / "data")).read("layers").to_pylist()
    assert [r["tensor_name"] for r in layers] == direct.layers["tensor_name"].tolist()
    alphas = [np.nan if r["alpha"] is None else r["alpha"] for r in layers]
    np.testing.assert_allclose(alphas, direct.layers["alpha"].to_numpy(), rtol=1e-12)


@pytest.mark.slow
def test_scan_of_a_hugging_face_cache_stores_repo_ids_and_commits(ray_local, prefect_api, tmp_path):
    from support.checkpoints import write_hf_cache

    src = write_hf_model_folder(tmp_path / "src", model_tensors(5), n_shards=2)
    write_hf_cache(tmp_path / "hf" / "hub", "org/tiny", src, commit="b" * 40)
    summary = scan_folder(folder=str(tmp_path / "hf"), data_root=str(tmp_path / "data"), workers=2)
    assert (summary["done"], summary["failed"]) == (1, 0)
    (row,) = ResultStore(str(tmp_path / "data")).read("models").to_pylist()
    assert (row["repo_id"], row["revision"]) == ("org/tiny", "b" * 40)
    assert row["alpha"] == pytest.approx(analyze_model(str(src)).summary["alpha"], rel=1e-12)
