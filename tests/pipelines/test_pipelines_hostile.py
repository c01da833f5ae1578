"""Hostile input in real scans (real Prefect API, local Ray): names that try to forge progress lines, a
model whose planning raises an exception of any class, and a planning step that hangs. Each model that
fails is one `failures` row; the scan itself always finishes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from pipelines_zoo import model_tensors
from support.checkpoints import write_hf_model_folder

import pipelines.tasks as tasks
import pipelines.unit as unit
from catalogs.store import ResultStore
from pipelines.flows import scan_folder
from pipelines.scan_state import ScanState

FORGED = "[ww-spectral] FORGED scan 9 of 9: done 9 | failed 0"  # no "/": a folder name


@pytest.mark.slow
def test_newlines_in_folder_names_cannot_forge_progress_lines(ray_local, prefect_api, tmp_path):
    from prefect.settings import PREFECT_API_URL

    zoo = tmp_path / "zoo"
    good = f"good\n{FORGED}"
    write_hf_model_folder(zoo / good, model_tensors(0))
    broken = zoo / f"broken\r\n{FORGED}"
    broken.mkdir(parents=True)
    (broken / "model.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"w\": ")
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(),
               RAY_ADDRESS=ray_local.get_runtime_context().gcs_address)
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "scan", "--folder", str(zoo), "--data",
                           str(tmp_path / "data"), "--workers", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    assert not [line for line in lines if line.startswith(FORGED)], "a name forged a line"
    ours = [line for line in proc.stderr.splitlines() if line.startswith("[ww-spectral] scan")]
    assert any("done    good\\n[ww-spectral] FORGED" in line for line in ours), ours
    assert any("failed  broken\\r\\n[ww-spectral] FORGED" in line for line in ours), ours
    # The store keeps the real names; only what is printed is escaped.
    assert [r["repo_id"] for r in ResultStore(str(tmp_path / "data")).read("models").to_pylist()] == [good]


@pytest.mark.slow
def test_any_exception_class_from_a_model_is_one_failures_row(ray_local, prefect_api, tmp_path, monkeypatch):
    for i in range(3):
        write_hf_model_folder(tmp_path / "zoo" / f"m{i}", model_tensors(i))
    monkeypatch.setenv("WW_SCAN_RETRIES", "2")
    monkeypatch.setenv("WW_SCAN_RETRY_DELAY_S", "0.05")
    # One model task per model, planned in this process (where the patches below apply); a batch's models
    # are planned inside a Ray worker (tests/pipelines/test_pipelines_rehearsal.py covers their faults).
    monkeypatch.setenv("WW_SCAN_BATCH_MAX_PARAMS", "0")
    plan_model, process_model = unit.plan_model, tasks.process_model
    states, attempts = [], []

    def hostile_plan(ckpt, options):
        if ckpt.ref.repo_id == "m1":
            raise RecursionError("maximum recursion depth exceeded while decoding a header")  # not ours
        return plan_model(ckpt, options)

    def flaky_process(item, state):
        states.append(state)
        attempts.append(item.repo_id)
        if item.repo_id == "m2" and attempts.count("m2") == 1:
            raise ConnectionResetError("peer reset")  # transient: retried by Prefect
        return process_model(item, state)

    monkeypatch.setattr(unit, "plan_model", hostile_plan)
    monkeypatch.setattr(tasks, "process_model", flaky_process)
    data = str(tmp_path / "data")
    summary = scan_folder(folder=str(tmp_path / "zoo"), data_root=data, workers=2)

    assert (summary["done"], summary["failed"]) == (2, 1), summary["failures"]
    rows = sorted(ResultStore(data).read("failures").to_pylist(), key=lambda r: r["repo_id"])
    # m1: its one final row; m2: a row for the attempt that was retried (the failures view marks it resolved).
    assert [(r["repo_id"], r["stage"], r["error_type"], r["attempt"]) for r in rows] == [
        ("m1", "read", "RecursionError", 1), ("m2", "analyze", "ConnectionResetError", 1)]
    assert sorted(attempts) == ["m0", "m1", "m2", "m2"]  # only the transient fault was retried
    # Every task attempt, retries included, received the scan's one ScanState (never copied or serialised).
    assert isinstance(states[0], ScanState) and all(s is states[0] for s in states)


@pytest.mark.slow
def test_planning_that_hangs_is_cut_by_the_model_timeout(ray_local, prefect_api, tmp_path, monkeypatch):
    write_hf_model_folder(tmp_path / "zoo" / "stuck", model_tensors(0))
    monkeypatch.setenv("WW_SCAN_MODEL_TIMEOUT_S", "1")
    monkeypatch.setenv("WW_SCAN_RETRIES", "0")
    monkeypatch.setenv("WW_SCAN_BATCH_MAX_PARAMS", "0")  # planned in this process, where the patch applies
    release, returned = threading.Event(), threading.Event()
    plan_model = unit.plan_model

    def hanging_plan(ckpt, options):
        release.wait(300)  # a read that never returns (a FIFO, a stalled mount, a drip-feeding server)
        returned.set()
        return plan_model(ckpt, options)

    monkeypatch.setattr(unit, "plan_model", hanging_plan)
    data = str(tmp_path / "data")
    try:
        summary = scan_folder(folder=str(tmp_path / "zoo"), data_root=data, workers=1)
        # The scan stopped waiting while the read still hung (not: waited it out, then found the deadline past).
        assert not returned.is_set()
    finally:
        release.set()
    assert (summary["done"], summary["failed"]) == (0, 1)
    (row,) = ResultStore(data).read("failures").to_pylist()
    assert (row["repo_id"], row["stage"], row["error_type"]) == ("stuck", "read", "TimeoutError")
    assert "timeout" in row["message"]
