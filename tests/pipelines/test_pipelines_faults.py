"""Faults mid-scan: a Ray worker process SIGKILLed while it analyses a chunk, and the scanning process
itself killed and restarted. Either way every model ends up analysed and stored exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from pipelines_zoo import make_big_model

from catalogs.store import ResultStore
from pipelines.flows import scan_folder


def _chunk_workers(prefix: bytes = b"ray::ww-chunk") -> list[psutil.Process]:
    """Ray workers of THIS test session's Ray (descendants of this process: ray_local's raylet is our child)
    busy with one of our tasks (Ray titles them 'ray::<task name>'): chunks by default. Never a process of
    another job on the machine that runs the same code."""
    procs = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = Path(f"/proc/{child.pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(prefix):
            procs.append(child)
    return sorted(procs, key=lambda p: p.pid)


def _chunk_worker_pids(prefix: bytes = b"ray::ww-chunk") -> list[int]:
    return [p.pid for p in _chunk_workers(prefix)]


def _alive(proc: psutil.Process) -> bool:
    """Still running: not reaped, not a zombie. psutil.Process knows its start time, so a pid reused by a
    new process (pid_max may be 32768; a busy machine wraps it) does not count as ours."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _assert_each_once(data: str, names: list[str], tensors_per_model: int) -> None:
    store = ResultStore(data)
    models = store.read("models").to_pylist()
    assert sorted(r["repo_id"] for r in models) == sorted(names)  # each model exactly once
    layers = store.read("layers").to_pylist()
    keys = [(r["repo_id"], r["tensor_name"]) for r in layers]
    assert len(keys) == len(set(keys)) == len(names) * tensors_per_model
    assert not list(Path(data).rglob("*.tmp.parquet"))


@pytest.mark.slow
@pytest.mark.parametrize("batched", [False, True], ids=["chunks", "batches"])
def test_killing_a_ray_worker_mid_scan_still_analyses_every_model_once(ray_local, prefect_api, tmp_path,
                                                                      monkeypatch, batched):
    """A chunk whose worker dies is re-run by Ray itself; a batch whose worker dies is re-submitted by the
    flow for the models it had not reported, and each lost attempt is a failures row (resolved)."""
    monkeypatch.setenv("WW_SCAN_BATCH_MAX_PARAMS", "20000000" if batched else "0")
    monkeypatch.setenv("WW_SCAN_RETRY_DELAY_S", "0.1")
    task = b"ray::ww-batch" if batched else b"ray::ww-chunk"
    names = ["big0", "big1", "big2"]
    for i, name in enumerate(names):
        make_big_model(tmp_path / "zoo" / name, n_layers=6, side=1024, seed=i)
    data = str(tmp_path / "data")
    out: dict = {}
    scan = threading.Thread(target=lambda: out.update(scan_folder(folder=str(tmp_path / "zoo"), data_root=data,
                                                                  workers=2)))
    scan.start()
    deadline = time.monotonic() + 120
    killed = None
    while killed is None and time.monotonic() < deadline and scan.is_alive():
        procs = _chunk_workers(task)
        if procs:
            time.sleep(0.3)  # let it get into the eigensolver
            if procs[0].pid in _chunk_worker_pids(task):
                try:
                    procs[0].send_signal(signal.SIGKILL)  # psutil: never a process that reused the pid
                except psutil.NoSuchProcess:
                    continue  # it exited in between: look again
                killed = procs[0]
        time.sleep(0.05)
    scan.join(timeout=300)
    assert killed is not None, "no chunk task was seen running"
    assert not _alive(killed)
    assert (out["done"], out["failed"]) == (3, 0), out["failures"]
    _assert_each_once(data, names, tensors_per_model=6)
    rows = ResultStore(data).read("failures").to_pylist()
    if batched:
        # The models the lost batch had not reported: one row each for the lost attempt, then stored.
        assert out["stages"]["batches"] >= 1 and out["stages"]["retried_attempts"] == len(rows) >= 1
        assert {(r["stage"], r["attempt"]) for r in rows} == {("analyze", 1)}
        assert {r["error_type"] for r in rows} <= {"WorkerCrashedError", "RaySystemError", "ActorDiedError",
                                                   "NodeDiedError", "ObjectLostError", "OwnerDiedError"}
        assert {r["repo_id"] for r in rows} <= set(names)
    else:
        # Ray re-ran the lost chunk itself: no attempt of any model was lost. (The killed pid may still be in a
        # model's worker_pids: Ray reuses a worker for several chunks, and the ones it finished before the kill
        # count.)
        assert rows == []


@pytest.mark.slow
def test_scan_killed_and_restarted_finishes_without_duplicates(ray_local, prefect_api, tmp_path):
    from prefect.settings import PREFECT_API_URL

    names = [f"m{i}" for i in range(4)]
    for i, name in enumerate(names):
        make_big_model(tmp_path / "zoo" / name, n_layers=4, side=768, seed=10 + i)
    data = str(tmp_path / "data")
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(),
               RAY_ADDRESS=ray_local.get_runtime_context().gcs_address)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "scan", "--folder", str(tmp_path / "zoo"), "--data", data,
         "--workers", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    store = ResultStore(data)
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline and proc.poll() is None and not store.list_models():
            time.sleep(0.05)
        stored_at_kill = len(store.list_models())
        proc.kill()  # SIGKILL: no clean-up of any kind
    finally:
        proc.wait(timeout=30)
        log = proc.stdout.read().decode(errors="replace")
    assert 1 <= stored_at_kill < len(names), log[-3000:]

    summary = scan_folder(folder=str(tmp_path / "zoo"), data_root=data, workers=2)
    assert summary["failed"] == 0
    assert summary["skipped"] >= stored_at_kill and summary["done"] + summary["skipped"] == len(names)
    _assert_each_once(data, names, tensors_per_model=4)


@pytest.mark.slow
def test_a_model_past_its_timeout_is_retried_then_recorded(ray_local, prefect_api, tmp_path, monkeypatch):
    make_big_model(tmp_path / "zoo" / "slow", n_layers=8, side=1536)  # chunks of >= 1 s; timeout 0.3 s
    monkeypatch.setenv("WW_SCAN_MODEL_TIMEOUT_S", "0.3")
    monkeypatch.setenv("WW_SCAN_RETRIES", "1")
    monkeypatch.setenv("WW_SCAN_RETRY_DELAY_S", "0.1")
    data = str(tmp_path / "data")
    summary = scan_folder(folder=str(tmp_path / "zoo"), data_root=data, workers=2)
    assert (summary["done"], summary["failed"]) == (0, 1)
    rows = sorted(ResultStore(data).read("failures").to_pylist(), key=lambda r: r["attempt"])
    # A timeout is transient: retried once (WW_SCAN_RETRIES=1); the lost attempt and the final one are a row
    # each, the final one with the final attempt number.
    assert [(r["repo_id"], r["stage"], r["error_type"], r["attempt"]) for r in rows] == [
        ("slow", "analyze", "TimeoutError", 1), ("slow", "analyze", "TimeoutError", 2)]
    assert summary["failures"][0]["attempt"] == 2
    # The timed-out chunks were cancelled (force: their worker processes are killed). ray.cancel only asks:
    # a worker still running a chunk when the scan returns must be gone soon after, where a chunk left
    # running would finish and leave its worker alive (idle).
    running = _chunk_workers()
    deadline = time.monotonic() + 60
    while any(_alive(p) for p in running) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in running if _alive(p)]
