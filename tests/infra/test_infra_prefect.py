"""infra/prefect/prefect.yaml: deployments match the flows, and `prefect deploy` works on a real server."""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jsonschema
import pytest

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def prefect_server(tmp_path):
    """A real `prefect server start` on a free port with its own PREFECT_HOME; always stopped."""
    port = free_port()
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
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
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
