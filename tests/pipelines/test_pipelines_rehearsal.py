"""The hub-scale rehearsal, small: hundreds of repos from the loopback hub (real huggingface_hub client)
through the real nightly flow and a local Ray. Small models go through batches (many per Ray task, outcomes
streamed back); each failed model still has its own failures row and its own failed task run in Prefect;
a rescan skips everything; the flow's memory does not grow with the number of models.
benchmarks/bench_rehearsal.py is the full-size version (10,000 repos)."""

from __future__ import annotations

import os
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable

import pytest
from pipelines_zoo import model_tensors
from support.checkpoints import write_hf_model_folder
from support.hub_server import HubServer

from catalogs.catalog import run_sql
from catalogs.store import ResultStore
from pipelines.flows import nightly_scan, scan_folder

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
N_REPOS = 200
GATED, BROKEN, EMPTY, FLAKY = (range(3, N_REPOS, 50), range(7, N_REPOS, 50), range(11, N_REPOS, 100),
                               range(13, N_REPOS, 100))


def _kind(i: int) -> str:
    for kind, where in (("gated", GATED), ("broken", BROKEN), ("empty", EMPTY), ("flaky", FLAKY)):
        if i in where:
            return kind
    return "good"


@pytest.fixture(scope="module")
def rehearsal_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearsal")
    # Weights of their own per repo: byte-identical repos would be linked to the first, not analysed
    # (pipelines/duplicates.py; tests/pipelines/test_pipelines_family.py shows that).
    def own(i: int):
        return write_hf_model_folder(root / f"m{i:03d}", model_tensors(i, n_layers=2 + i % 3, width=32))
    broken = root / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"w\": ")
    empty = root / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("no weights here")
    server = HubServer(page_size=50).start()
    repos = {}
    for i in range(N_REPOS):
        kind = _kind(i)
        folder = {"broken": broken, "empty": empty}.get(kind) or own(i)
        repo = f"org{i % 7}/m{i:03d}"
        repos[repo] = (kind, server.add_repo(repo, folder, downloads=10**6 - i, gated="auto" if kind == "gated" else False))
    yield server, repos
    server.stop()


@pytest.fixture
def hub_env(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    monkeypatch.setenv("WW_HUB_MAX_ATTEMPTS", "1")  # a 500 reaches the scan's own retry
    # One attempt per call, and the failures rows are counted exactly: a loopback answer slowed past the
    # default 5 s read timeout by a busy machine (the server shares this process) must not add a lost attempt.
    monkeypatch.setenv("WW_HUB_TIMEOUT_S", "60")
    monkeypatch.setenv("WW_SCAN_RETRY_DELAY_S", "0.1")
    monkeypatch.setenv("WW_SCAN_BATCH_MODELS", "16")


def _task_runs(flow_run_id, complete: Callable[[list], bool]) -> list:
    """The flow run's task runs as the Prefect API has them. They are recorded through events, which the
    server applies a while after the flow returns (later still on a busy machine): poll until every run is
    final, `complete(runs)` holds and nothing changed for 2 s, or 120 s passed (then the caller's asserts
    show what is missing)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    seen, stable_since = None, time.monotonic()
    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                         limit=200)
            now = sorted((r.id, r.state.type.value if r.state else None) for r in runs)
            if now != seen:
                seen, stable_since = now, time.monotonic()
            final = all(r.state is not None and r.state.is_final() for r in runs)
            if (final and complete(runs) and time.monotonic() - stable_since > 2) or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)


@pytest.mark.slow
def test_rehearsal_batches_small_models_and_keeps_one_failure_row_per_failed_model(
        ray_local, prefect_api, rehearsal_hub, hub_env, tmp_path):
    server, repos = rehearsal_hub
    server.clear_faults()
    for repo, (kind, _) in repos.items():
        if kind == "flaky":
            server.inject(f"/api/models/{repo}", status=500, times=1)  # the batch's attempt fails, once
    data = str(tmp_path / "data")

    state = nightly_scan(data_root=data, limit=1000, workers=2, endpoint=server.endpoint, return_state=True)
    summary = state.result()

    failed = {r for r, (k, _) in repos.items() if k in ("gated", "broken", "empty")}
    stored = set(repos) - failed
    assert (summary["requested"], summary["done"], summary["failed"]) == (N_REPOS, len(stored), len(failed))
    st = summary["stages"]
    assert st["batches"] >= 8 and st["batched_models"] >= len(stored) - len(FLAKY)  # small models: batched
    assert summary["models"] == sorted(summary["models"], key=lambda m: m["repo_id"])
    assert {m["repo_id"] for m in summary["models"]} <= {r for r, (k, _) in repos.items() if k != "good"}
    store = ResultStore(data)
    models = store.read("models").to_pylist()
    assert sorted(r["repo_id"] for r in models) == sorted(stored)  # each stored exactly once
    assert all(r["revision"] == repos[r["repo_id"]][1] for r in models)

    rows = store.read("failures").to_pylist()
    final = [r for r in rows if r["repo_id"] in failed]
    assert sorted(r["repo_id"] for r in final) == sorted(failed)  # one row per failed model
    want = {"gated": "GatedRepoError", "broken": "CheckpointError", "empty": "NoWeightsError"}
    assert all(r["error_type"] == want[repos[r["repo_id"]][0]] and r["attempt"] == 1 for r in final)
    # The flaky models' lost first attempts: a row each (attempt 1), and the models are stored.
    retried = sorted((r["repo_id"], r["attempt"], r["error_type"]) for r in rows if r["repo_id"] not in failed)
    assert retried == sorted((r, 1, "TransientHubError") for r, (k, _) in repos.items() if k == "flaky")
    assert st["retried_attempts"] == len(retried)

    # Prefect's view: a failed task run per failed model (named after it), batches completed with counts,
    # and far fewer task runs than models.
    def complete(runs: list) -> bool:  # what the asserts below need: every failed model's run, every batch
        types = Counter(r.state.type.value for r in runs)
        return types["FAILED"] >= len(failed) and sum(
            r.name.startswith("batch ") and r.state.type.value == "COMPLETED" for r in runs) >= st["batches"]

    runs = _task_runs(state.state_details.flow_run_id, complete)
    names = {}
    for run in runs:
        names.setdefault(run.state.type.value, []).append(run.name)
    failed_runs = names.get("FAILED", [])
    assert sorted(n.split("@")[0] for n in failed_runs) == sorted(failed)
    assert len(runs) < N_REPOS / 4
    assert sum(n.startswith("batch ") for n in names.get("COMPLETED", [])) == st["batches"]
    # ... and the scan's counts as a markdown artifact of the flow run.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert artifact.key == "scan-summary" and f"| {N_REPOS} | {len(stored)} | 0 | {len(failed)} |" in artifact.data
    # ... and the scans row's health figures, as `ww-spectral scans` shows them (catalogs/sql/50_scan_health.sql).
    (health,) = _scan_health(data)
    assert (health["n_done"], health["n_failed"], health["n_retried"]) == (len(stored), len(failed), len(retried))
    assert health["failures_by_type"] == _by_type(final) and health["retries_by_type"] == _by_type(
        [r for r in rows if r["repo_id"] not in failed])
    assert (health["bytes_downloaded"], health["n_batches"]) == (st["bytes_downloaded"], st["batches"])
    assert health["bytes_downloaded"] > 0 and health["models_per_min"] > 0 and health["catalog_s"] > 0
    assert health["fanout_s"] == pytest.approx(summary["fanout_seconds"], abs=0.01)
    assert health["orchestration_ms_per_model"] is not None and health["write_s"] > 0

    # Second night: the stored models are skipped from the listing alone, and so are the broken and empty ones
    # (they failed for good: pipelines/faults.py skips_rescan); the gated ones are tried again (a token may
    # have been set since).
    good = next(r for r, (k, _) in repos.items() if k == "good")
    before = len(server.requests_to(f"/{good}/resolve/"))
    again = nightly_scan(data_root=data, limit=1000, workers=2, endpoint=server.endpoint)
    gated = {r for r, (k, _) in repos.items() if k == "gated"}
    assert (again["skipped"], again["skipped_failed"], again["done"], again["failed"]) == (
        len(stored), len(failed - gated), 0, len(gated))
    assert len(server.requests_to(f"/{good}/resolve/")) == before
    assert store.read("models").num_rows == len(stored)
    newest, first = _scan_health(data)
    assert (newest["n_skipped"], newest["n_skipped_failed"], newest["n_done"], newest["failures_by_type"]) == (
        len(stored), len(failed - gated), 0, _by_type([r for r in final if r["repo_id"] in gated]))
    assert first["scan_id"] == health["scan_id"]


def _scan_health(data: str) -> list[dict]:
    cols, rows = run_sql(data, "SELECT * FROM scan_health")
    return [dict(zip(cols, r)) for r in rows]


def _by_type(failure_rows: list[dict]) -> str:
    """What the scan_health view shows for these failures rows: 'Type [stage] n', most first."""
    counts = Counter((r["error_type"], r["stage"]) for r in failure_rows)
    return ", ".join(text for _, text in sorted((-n, f"{t} [{st}] {n}") for (t, st), n in counts.items()))


def _traced_peak_mb(fn) -> float:
    """Peak Python heap (tracemalloc, every thread of this process) while fn runs, above where it started."""
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return (tracemalloc.get_traced_memory()[1] - start) / 2**20
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_flow_memory_does_not_grow_with_the_number_of_models(ray_local, prefect_api, tmp_path):
    """Two scans, 40 and 200 tiny models: the flow's peak heap is about the same (issue 12 measured
    +0.25 MB of peak RSS per model with one Prefect task per model: +40 MB here)."""
    def zoo(n: int):
        for i in range(n):
            write_hf_model_folder(tmp_path / f"zoo{n}" / f"m{i:03d}", model_tensors(i % 9, n_layers=2, width=24))
        return str(tmp_path / f"zoo{n}")

    small, large = zoo(40), zoo(200)
    scan_folder(folder=small, data_root=str(tmp_path / "warm"), workers=2)  # first-use imports and caches
    peaks = {}
    for n, folder in ((40, small), (200, large)):
        out: dict = {}
        peaks[n] = _traced_peak_mb(lambda f=folder, o=out, n=n: o.update(
            scan_folder(folder=f, data_root=str(tmp_path / f"data{n}"), workers=2)))
        assert (out["done"], out["failed"]) == (n, 0)
    per_model_kb = (peaks[200] - peaks[40]) / 160 * 1024
    print(f"flow peak heap: {peaks[40]:.1f} MB at 40 models, {peaks[200]:.1f} MB at 200: {per_model_kb:+.1f} KB/model")
    assert per_model_kb < 25, peaks  # issue 12's baseline: ~250 KB per model
