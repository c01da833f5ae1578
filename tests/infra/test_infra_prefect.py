"""infra/prefect/prefect.yaml: deployments match the flows, and `prefect deploy` works on a real server."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
from support.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
FLOWS = REPO / "pipelines" / "flows.py"
EXPECTED = {  # deployment name -> entrypoint (CONTRACTS.md "Flows")
    "nightly": "pipelines/flows.py:nightly_scan",
    "analyze-models": "pipelines/flows.py:analyze_models",
    "scan-folder": "pipelines/flows.py:scan_folder",
}
needs_flows = pytest.mark.skipif(
    not FLOWS.exists(), reason="pipelines/flows.py is not in the tree yet (the pipelines engineer writes it)"
)
HF_SECRET = "hf_test_secret_value_123"


def deployments(prefect_yaml) -> dict[str, dict]:
    return {d["name"]: d for d in prefect_yaml["deployments"]}


def test_deployments_schedule_pool_and_environment(prefect_yaml):
    deps = deployments(prefect_yaml)
    assert {name: d["entrypoint"] for name, d in deps.items()} == EXPECTED
    assert deps["nightly"]["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC", "active": True}]
    assert deps["analyze-models"]["schedules"] == [] and deps["scan-folder"]["schedules"] == []
    pool = prefect_yaml["definitions"]["work_pool"]
    assert pool["name"] == "ww-spectral-pool"
    for d in deps.values():
        assert d["work_pool"] == pool, "every deployment uses the one work pool and environment"
    env = pool["job_variables"]["env"]
    assert env["PREFECT_API_URL"].startswith("http") and env["PREFECT_API_URL"].endswith("/api")
    assert "127.0.0.1" not in env["PREFECT_API_URL"] and "localhost" not in env["PREFECT_API_URL"], (
        "PREFECT_API_URL must be routable from the Ray nodes"
    )
    assert env["RAY_ADDRESS"].startswith("ray://") and env["RAY_AUTH_MODE"] == "token"
    assert env["HF_TOKEN"] == "{{ prefect.blocks.secret.hf-token }}"
    assert env["HF_HOME"].startswith("/data/")
    assert env["DO_NOT_TRACK"] == "1" and env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0" and env["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert all(isinstance(v, str) for v in env.values()), "environment values must be strings"


def load_flow(entrypoint: str):
    from prefect.flows import load_flow_from_entrypoint

    path, _, name = entrypoint.partition(":")
    return load_flow_from_entrypoint(f"{REPO / path}:{name}")


CONTRACT_PARAMETERS = {
    "nightly_scan": ["data_root", "author", "library", "pipeline_tag", "min_downloads", "min_params",
                     "max_params", "sort", "limit", "ray_address", "workers", "endpoint", "options"],
    "analyze_models": ["model_ids", "data_root", "ray_address", "workers", "endpoint", "options"],
    "scan_folder": ["folder", "data_root", "ray_address", "workers", "options"],
}  # fmt: skip


@needs_flows
def test_a_flow_loaded_by_its_entrypoint_uses_the_canonical_pipelines_modules(prefect_yaml):
    """A worker loads pipelines/flows.py by path (as module "flows"); everything it hands to Ray must still come
    from `pipelines.*`, or Ray workers fail with "No module named 'flows'" (seen before this was fixed)."""
    import sys

    for d in prefect_yaml["deployments"]:
        flow = load_flow(d["entrypoint"])
        assert flow.fn.__globals__["run_scan"].__module__ == "pipelines.scan"
    assert not [m for m in sys.modules if m.startswith("flows.")]


@needs_flows
def test_entrypoints_exist_and_parameters_match_flow_signatures(prefect_yaml):
    from prefect.utilities.callables import parameter_schema

    for d in prefect_yaml["deployments"]:
        flow = load_flow(d["entrypoint"])
        signature = inspect.signature(flow.fn)
        function = d["entrypoint"].rpartition(":")[2]
        assert list(signature.parameters) == CONTRACT_PARAMETERS[function], f"{function}: not the contract"
        params = d.get("parameters") or {}
        assert set(params) <= set(signature.parameters), f"{d['name']}: unknown parameters"
        # Every value validates against the flow's own parameter schema (what the server enforces);
        # required parameters without a value (model_ids, folder) are given per run.
        schema = parameter_schema(flow).model_dump_for_openapi()
        schema.pop("required", None)
        jsonschema.validate(params, schema)
        required = {n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty}
        assert required <= set(params) | {"model_ids", "folder"}, f"{d['name']}: required {required}"


def api(url: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def prefect_server(tmp_path):
    """A real `prefect server start` on a free port with its own PREFECT_HOME; always stopped."""
    (port,) = free_ports(1)  # the server binds it seconds later: outside the ephemeral range
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 (closed in finally)
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
         "--no-services", "--no-ui"],  # the API alone is what `prefect deploy` needs
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    try:
        # ~10 s on a quiet 2-core machine (SQLite migrations); generous because other suites share the cores.
        deadline = time.monotonic() + 120
        while True:
            try:
                if api(url, "/health") is True:
                    break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "prefect server not healthy in 120 s"
            time.sleep(0.3)
        yield url, dict(env, PREFECT_API_URL=url)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server and its own children (our process group)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


def run(args: list[str], env: dict, cwd: Path = REPO) -> str:
    # A hang guard only: each call starts a Python that imports Prefect (`deploy`: every flow's modules too),
    # which a machine at load 10 slows several-fold.
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (
        f"{' '.join(args)} -> {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.mark.slow
@needs_flows
def test_prefect_deploy_all_against_a_local_server(prefect_server, prefect_yaml):
    url, env = prefect_server
    pool = prefect_yaml["definitions"]["work_pool"]["name"]
    prefect = [sys.executable, "-m", "prefect"]
    run([*prefect, "work-pool", "create", pool, "--type", "process"], env)
    save_secret = f"from prefect.blocks.system import Secret; Secret(value={HF_SECRET!r}).save('hf-token')"
    run([sys.executable, "-c", save_secret], env)
    tracked_before = subprocess.run(
        ["git", "status", "--porcelain", "infra"], cwd=REPO, capture_output=True
    ).stdout

    run([*prefect, "--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect/prefect.yaml"], env)

    # prefect deploy leaves the repo as it was (no rewritten prefect.yaml, no .prefect/ folder).
    assert subprocess.run(
        ["git", "status", "--porcelain", "infra"], cwd=REPO, capture_output=True
    ).stdout == (tracked_before)
    found = {d["name"]: d for d in api(url, "/deployments/filter", {})}
    assert set(found) == set(EXPECTED)
    for name, d in found.items():
        assert d["entrypoint"] == EXPECTED[name]
        assert d["work_pool_name"] == pool
        assert d["pull_steps"] == prefect_yaml["pull"]
        wanted = deployments(prefect_yaml)[name].get("parameters") or {}
        assert d["parameters"] == wanted
        flow = api(url, f"/flows/{d['flow_id']}")
        assert flow["name"] == EXPECTED[name].rpartition(":")[2].replace("_", "-")
        env_vars = d["job_variables"]["env"]
        # The Secret block reference was resolved (prefect deploy stores the value; see infra/README.md).
        assert env_vars["HF_TOKEN"] == HF_SECRET
        assert env_vars["RAY_AUTH_MODE"] == "token"
    (schedule,) = found["nightly"]["schedules"]
    assert schedule["active"] is True
    assert schedule["schedule"]["cron"] == "0 2 * * *" and schedule["schedule"]["timezone"] == "UTC"
    assert found["analyze-models"]["schedules"] == found["scan-folder"]["schedules"] == []
    assert found["nightly"]["global_concurrency_limit"]["limit"] == 1
    # The server derived each deployment's parameter schema from the real flow: model_ids is required.
    assert "model_ids" in found["analyze-models"]["parameter_openapi_schema"]["required"]


# ---------------------------------------------------------------------------------------- served by a worker


def local_prefect_file(prefect_yaml: dict, tmp_path: Path, env: dict) -> Path:
    """infra/prefect/prefect.yaml with only the cluster-side names made local: the pull step's directory
    (the image's /app -> this checkout) and the flow runs' environment (the in-cluster Prefect, Ray and
    Secret names -> this machine; Ray unset = a private local Ray). Deployments, entrypoints, parameters,
    schedule, concurrency limit and work pool are the file's own."""
    import copy

    import yaml

    doc = copy.deepcopy(prefect_yaml)
    doc["pull"] = [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    pool = doc["definitions"]["work_pool"]
    pool["job_variables"]["env"] = env
    for d in doc["deployments"]:
        d["work_pool"] = pool
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def flow_run(url: str, run_id: str) -> dict:
    return api(url, f"/flow_runs/{run_id}")


def wait_state(url: str, run_id: str, states: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = flow_run(url, run_id)
        if run["state_type"] in states:
            return run
        assert time.monotonic() < deadline, f"flow run {run_id} still {run['state_type']} after {timeout} s"
        time.sleep(0.5)


def trigger(env: dict, params: dict, *, start_in: str | None = None) -> str:
    """`prefect deployment run nightly-scan/nightly` with these parameters; the new flow run's id."""
    args = [sys.executable, "-m", "prefect", "deployment", "run", "nightly-scan/nightly", "--params",
            json.dumps(params)] + (["--start-in", start_in] if start_in else [])
    out = run(args, env)
    ids = re.findall(r"UUID:\s*([0-9a-f-]{36})", out)
    assert ids, out
    return ids[0]


def flow_run_processes(worker: subprocess.Popen) -> list:
    """Processes below the worker: the flow-run process and what it started (its local Ray)."""
    import psutil

    try:
        return psutil.Process(worker.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow
@needs_flows
def test_nightly_deployment_served_by_a_worker_and_a_crashed_run_resumed(prefect_server, prefect_yaml, tmp_path):
    """The nightly deployment served by a real process worker: a scheduled run (start in 6 s) completes; a
    second run is SIGKILLed mid-scan (flow-run process and its Ray), reported Crashed, retried with
    `prefect flow-run retry`, and finishes with every model stored exactly once."""
    import psutil

    sys.path.insert(0, str(REPO / "tests"))
    from support.checkpoints import write_hf_model_folder
    from support.hub_server import HubServer

    from catalogs.store import ResultStore

    url, env = prefect_server
    t0 = time.monotonic()
    with HubServer(page_size=5) as hub:
        import numpy as np

        rng = np.random.default_rng(0)
        repos = [f"org/m{i:02d}" for i in range(10)]
        for i, repo in enumerate(repos):  # weights of its own each: byte-identical repos would be linked, not stored
            folder = write_hf_model_folder(tmp_path / "src" / f"m{i:02d}", {
                f"model.layers.{j}.mlp.up_proj.weight": rng.standard_normal((64, 32)).astype(np.float32)
                for j in range(3)})
            hub.add_repo(repo, folder, downloads=100 - i)
        flow_env = {"HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf"), "DO_NOT_TRACK": "1",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RAY_USAGE_STATS_ENABLED": "0",
                    "HF_HUB_DISABLE_TELEMETRY": "1", "OPENBLAS_NUM_THREADS": "1", "WW_SCAN_BATCH_MODELS": "2",
                    "WW_SCAN_PROGRESS": "1"}
        prefect_file = local_prefect_file(prefect_yaml, tmp_path, flow_env)
        prefect = [sys.executable, "-m", "prefect"]
        pool = prefect_yaml["definitions"]["work_pool"]["name"]
        run([*prefect, "work-pool", "create", pool, "--type", "process"], env)
        run([*prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)], env)
        worker_log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 (closed in finally)

        def start_worker() -> subprocess.Popen:
            return subprocess.Popen(
                [*prefect, "worker", "start", "--pool", pool, "--type", "process", "--limit", "1"],
                env=dict(env, PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="1"),
                stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)

        def stop_worker(worker: subprocess.Popen) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()

        worker = start_worker()
        try:
            # 1. A scheduled run (due in 6 s), picked up by the worker, completed.
            data1 = tmp_path / "data1"
            params = {"data_root": str(data1), "endpoint": hub.endpoint, "limit": 50, "min_downloads": 0}
            first = trigger(env, params, start_in="6 seconds")
            # Created as a run due 6 s after the CLI read its clock (its state may already be PENDING when
            # read back: on a busy machine the CLI takes longer than that to exit), and not started before it
            # was due, less the worker's 1 s prefetch window. The CLI reads its clock, then parses the time and
            # makes three API calls before the server stamps `created`: 6 s leaves a busy machine 4 s for that,
            # and a run that ignored --start-in would be due before it was created.
            created = flow_run(url, first)
            due = datetime.fromisoformat(created["expected_start_time"])
            assert due - datetime.fromisoformat(created["created"]) >= timedelta(seconds=2), created
            done = wait_state(url, first, {"COMPLETED", "FAILED", "CRASHED"}, timeout=240)
            assert done["state_type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
            assert datetime.fromisoformat(done["start_time"]) >= due - timedelta(seconds=1), done
            assert sorted(r["repo_id"] for r in ResultStore(str(data1)).read("models").to_pylist()) == repos, (
                (tmp_path / "worker.log").read_text()[-4000:])

            # 2. A run killed mid-scan (every weight download slowed), then retried: no duplicates.
            for repo in repos:
                hub.inject(f"/{repo}/resolve/", status=None, delay=0.4, times=10**6, method="GET")
            data2 = tmp_path / "data2"
            second = trigger(env, {**params, "data_root": str(data2)})
            store = ResultStore(str(data2))
            deadline = time.monotonic() + 180
            while not store.list_models():
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-4000:]
                time.sleep(0.2)
            for p in flow_run_processes(worker):
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()  # the flow-run process and its local Ray: a machine that died
            stored_at_kill = len(store.list_models())
            crashed = wait_state(url, second, {"CRASHED", "FAILED", "COMPLETED"}, timeout=120)
            assert crashed["state_type"] == "CRASHED", crashed["state"]
            assert stored_at_kill < len(repos)
            hub.clear_faults()
            # The machine comes back: a new worker (one worker never re-submits a flow run id it ran), and
            # the crashed run is retried under its own id.
            for p in flow_run_processes(worker):
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            stop_worker(worker)
            worker = start_worker()
            run([*prefect, "flow-run", "retry", second], env)
            resumed = wait_state(url, second, {"COMPLETED", "FAILED", "CRASHED"}, timeout=240)
            assert resumed["state_type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
            assert resumed["run_count"] >= 2
            models = [r["repo_id"] for r in store.read("models").to_pylist()]
            assert sorted(models) == repos  # every model exactly once
            (scan,) = store.read("scans").to_pylist()  # the killed attempt never reached its scans row
            assert scan["n_skipped"] >= stored_at_kill and scan["n_done"] + scan["n_skipped"] == len(repos)
        finally:
            leftovers = flow_run_processes(worker)
            stop_worker(worker)
            for p in leftovers:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            worker_log.close()
    print(f"worker test: {time.monotonic() - t0:.0f} s")
