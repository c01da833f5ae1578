"""Fast checks of the pipeline's pieces (no Ray, no Prefect run): chunking and memory declarations,
transient-vs-permanent classification, folder listing and revisions, the scan CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pipelines_zoo import make_zoo, model_tensors
from support.checkpoints import write_hf_cache, write_hf_model_folder

from pipelines.faults import StageFailure, is_transient, root_cause, stage
from pipelines.listing import list_folder
from pipelines.work import CHUNK_BASE_BYTES, plan_chunks
from ww_spectral.errors import (
    CheckpointError,
    GatedRepoError,
    NoWeightsError,
    TransientHubError,
    UnsupportedDtypeError,
)
from ww_spectral.layers import plan_layer
from ww_spectral.records import AnalysisOptions, TensorInfo


def _plans(shapes, dtype="BF16"):
    opts = AnalysisOptions()
    return [plan_layer(TensorInfo(f"t{i}", s, dtype, None, 0), i, opts) for i, s in enumerate(shapes)]


def test_seventy_b_like_model_spreads_over_many_small_tasks():
    # 80 blocks x 7 matrices of a 70B-class model (8192 hidden, 28672 MLP) plus norms: ~140 GB in bf16.
    block = [(8192, 8192), (1024, 8192), (1024, 8192), (8192, 8192), (28672, 8192), (28672, 8192),
             (8192, 28672), (8192,)]
    plans = _plans(block * 80)
    chunks = plan_chunks("/m", plans, chunk_bytes=4 * 2**30, min_chunks=2)
    largest = max(p.est_bytes for p in plans)
    # Contiguous, complete, in order.
    assert [p.layer_id for c in chunks for p in c.plans] == list(range(len(plans)))
    assert len(chunks) >= 100
    # Each task declares what its largest layer needs (layers run one at a time), never the model.
    for c in chunks:
        assert c.memory == max(p.est_bytes for p in c.plans if p.analysed) + CHUNK_BASE_BYTES
        assert c.memory <= largest + CHUNK_BASE_BYTES < 4 * 2**30
    assert sum(p.est_bytes for p in plans) > 100 * 2**30  # the whole model would need > 100 GB


def test_small_model_is_one_chunk_unless_min_chunks_asks_more():
    plans = _plans([(64, 32), (32,), (64, 64), (16, 16)], dtype="F32")
    one = plan_chunks("/m", plans, chunk_bytes=512 * 2**20)
    assert len(one) == 1 and one[0].plans == tuple(plans)
    two = plan_chunks("/m", plans, chunk_bytes=512 * 2**20, min_chunks=2)
    assert len(two) == 2 and [p for c in two for p in c.plans] == plans
    assert all(any(p.analysed for p in c.plans) for c in two)
    many = plan_chunks("/m", plans, chunk_bytes=1, min_chunks=1)
    assert len(many) == 3  # one chunk per analysed layer; the skipped vector rides along


def test_model_without_analysable_layers_is_one_chunk():
    plans = _plans([(8,), (4,)])
    assert len(plan_chunks("/m", plans, chunk_bytes=1, min_chunks=4)) == 1


def test_transient_faults_are_retried_permanent_ones_are_not():
    import ray.exceptions as rex

    assert is_transient(TransientHubError("429"))
    assert is_transient(TimeoutError("slow"))
    assert is_transient(ConnectionResetError("reset"))
    assert is_transient(rex.WorkerCrashedError())
    assert is_transient(StageFailure("analyze", rex.WorkerCrashedError()))
    for exc in (GatedRepoError("401"), NoWeightsError("none"), CheckpointError("bad"), UnsupportedDtypeError("f8"),
                ValueError("bug")):
        assert not is_transient(exc)
        assert not is_transient(StageFailure("read", exc))
    # An exception raised inside a Ray task arrives as RayTaskError(cause): classified by its cause.
    wrapped = rex.RayTaskError("analyze_chunk", "tb", CheckpointError("bad")).as_instanceof_cause()
    assert root_cause(wrapped).__class__ is CheckpointError and not is_transient(wrapped)
    wrapped = rex.RayTaskError("analyze_chunk", "tb", TimeoutError("x")).as_instanceof_cause()
    assert is_transient(wrapped)


def test_stage_tags_the_first_stage_only():
    with pytest.raises(StageFailure) as info, stage("write"), stage("download"):
        raise TransientHubError("500")
    assert info.value.stage == "download" and isinstance(info.value.cause, TransientHubError)


def test_folder_listing_names_models_and_hashes_their_weights(tmp_path):
    zoo = make_zoo(tmp_path / "zoo", n_good=3)
    (tmp_path / "zoo" / ".hidden").mkdir()
    (tmp_path / "zoo" / "empty").mkdir()  # no weight files: a listing-time failure (stage read)
    items, failed = list_folder(str(tmp_path / "zoo"))
    assert [it.repo_id for it in items] == ["broken", "m0", "m1", "m2", "quantized"]
    assert all(it.revision.startswith("local-") for it in items)
    assert [(it.repo_id, e.stage, type(e.cause).__name__) for it, e in failed] == [
        ("empty", "read", "NoWeightsError")]
    items = items[1:]
    again, _ = list_folder(str(tmp_path / "zoo"))
    again = again[1:]
    assert [it.revision for it in again] == [it.revision for it in items]  # stable
    # Editing one model's weights (same names, shapes and sizes) makes a new revision of that model only.
    write_hf_model_folder(zoo["m0"], model_tensors(99))
    edited, _ = list_folder(str(tmp_path / "zoo"))
    edited = edited[1:]
    assert edited[0].revision != items[0].revision
    assert [it.revision for it in edited[1:]] == [it.revision for it in items[1:]]


def test_folder_listing_reads_a_hugging_face_cache(tmp_path):
    src = write_hf_model_folder(tmp_path / "src", model_tensors(1))
    snap = write_hf_cache(tmp_path / "hf" / "hub", "org/tiny", src, commit="a" * 40)
    for root in (tmp_path / "hf" / "hub", tmp_path / "hf"):  # the hub cache, or HF_HOME above it
        items, failed = list_folder(str(root))
        assert failed == []
        assert [(it.repo_id, it.revision) for it in items] == [("org/tiny", "a" * 40)]
        assert Path(items[0].source).name == "models--org--tiny" and snap.is_dir()


def test_scan_cli_forms_parse():
    import argparse

    from pipelines.scan_cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    a = parser.parse_args(["scan", "--folder", "zoo", "--data", "d", "--workers", "2"])
    assert (a.folder, a.data, a.workers, a.ray_address) == ("zoo", "d", 2, None)
    a = parser.parse_args(["scan", "--hub", "--author", "org", "--library", "transformers", "--pipeline-tag",
                           "text-generation", "--min-downloads", "10", "--sort", "likes", "--limit", "5",
                           "--min-params", "100M", "--max-params", "7B", "--ray-address", "ray://h:10001"])
    assert (a.hub, a.author, a.min_downloads, a.sort, a.limit, a.data) == (True, "org", 10, "likes", 5, "ww-data")
    assert (a.min_params, a.max_params, a.ray_address) == (10**8, 7 * 10**9, "ray://h:10001")
    a = parser.parse_args(["scan", "--models", "org/a", "org/b@abc", "--data", "d"])
    assert a.models == ["org/a", "org/b@abc"]
    with pytest.raises(SystemExit):
        parser.parse_args(["scan", "--hub", "--folder", "x"])
    with pytest.raises(SystemExit):
        parser.parse_args(["scan", "--folder", "x", "--workers", "0"])


def test_cli_module_imports_neither_prefect_nor_ray():
    code = "import sys, pipelines.scan_cli; print('prefect' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_empty_folder_lists_nothing_and_a_model_folder_lists_itself(tmp_path):
    (tmp_path / "empty").mkdir()
    assert list_folder(str(tmp_path / "empty")) == ([], [])
    folder = write_hf_model_folder(tmp_path / "solo", model_tensors(0))
    items, failed = list_folder(str(folder))
    assert failed == [] and [it.repo_id for it in items] == ["solo"]


def test_models_split_into_three_chunks_per_slot_with_two_slots_or_more():
    from pipelines.dispatch import CHUNKS_PER_SLOT, ChunkRunner

    assert ChunkRunner(slots=1, options=AnalysisOptions()).min_chunks == 1
    runner = ChunkRunner(slots=2, options=AnalysisOptions())
    assert runner.min_chunks == 2 * CHUNKS_PER_SLOT == 6
    # a 6-layer model within one chunk's byte budget still spreads: one layer per chunk
    chunks = plan_chunks("/m", _plans([(2048, 2048)] * 6), chunk_bytes=2**40, min_chunks=runner.min_chunks)
    assert [len(c.plans) for c in chunks] == [1] * 6
