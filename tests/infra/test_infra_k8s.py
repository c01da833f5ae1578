"""KubeRay RayCluster and Prefect helm values: structure, token auth, one image, sizes that fit a task."""

from __future__ import annotations

import importlib.metadata
import re

import pytest
import ray
import yaml

GIB = 2**30


def parse_quantity(value: str | int) -> int:
    """Kubernetes memory quantity -> bytes ("32Gi", "512Mi", "2G", 1000)."""
    units = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
    }
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", str(value))
    assert match, f"bad quantity {value!r}"
    return int(match.group(1)) * units.get(match.group(2), 1)


def containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_raycluster_structure(raycluster, image):
    assert raycluster["apiVersion"] == "ray.io/v1"
    assert raycluster["kind"] == "RayCluster"
    spec = raycluster["spec"]
    assert spec["rayVersion"] == ray.__version__, "the cluster runs the Ray version the image pins"
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "no analysis tasks on the head"
    assert [c["image"] for c in containers(head)] == [image]
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    cpu, gpu = groups["cpu"], groups["gpu"]
    assert cpu["minReplicas"] <= cpu["replicas"] <= cpu["maxReplicas"] and cpu["maxReplicas"] > 1
    assert [c["image"] for c in containers(cpu)] == [image]
    assert gpu["replicas"] == gpu["minReplicas"] == 0 < gpu["maxReplicas"]
    assert [c["image"] for c in containers(gpu)] == [image + "-gpu"]
    assert containers(gpu)[0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    for group in (head, cpu, gpu):
        for c in containers(group):
            env = env_of(c)
            assert env.get("RAY_AUTH_MODE", "token") == "token", "token auth must not be switched off"
            assert env["RAY_USAGE_STATS_ENABLED"] == "0"
            assert env["DO_NOT_TRACK"] == "1"
            # requests == limits: Ray advertises the limits; requests below them would overcommit nodes.
            assert c["resources"]["requests"] == c["resources"]["limits"]
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert {"/data", "/dev/shm"} <= mounts, "HF cache volume and a real /dev/shm for the object store"


def shared_mounts(container: dict, volumes: list[dict]) -> dict[str, str]:
    """mountPath -> PVC claim name of the container's PVC-backed mounts (subPath appended as /sub)."""
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v
    }
    return {
        m["mountPath"]: claims[m["name"]] + ("/" + m["subPath"] if m.get("subPath") else "")
        for m in container.get("volumeMounts", [])
        if m["name"] in claims
    }


def test_flow_pod_and_every_ray_pod_share_the_shard_directory(repo, raycluster, prefect_yaml):
    """The flow downloads shards to TMPDIR and passes their paths to Ray tasks on other pods."""
    tmpdir = prefect_yaml["definitions"]["work_pool"]["job_variables"]["env"]["TMPDIR"]
    pvc = yaml.safe_load((repo / "infra" / "k8s" / "shared-pvc.yaml").read_text())
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    claim = pvc["metadata"]["name"]
    values = yaml.safe_load((repo / "infra" / "k8s" / "prefect-values.yaml").read_text())["worker"]["worker"]
    worker = shared_mounts({"volumeMounts": values["extraVolumeMounts"]}, values["extraVolumes"])
    # TMPDIR must be a mount point itself: Python's tempfile silently falls back to /tmp if it is missing.
    assert worker.get(tmpdir, "").startswith(claim), f"worker pod: {tmpdir} is not on {claim}"
    for group in [raycluster["spec"]["headGroupSpec"], *raycluster["spec"]["workerGroupSpecs"]]:
        for c in containers(group):
            assert shared_mounts(c, group["template"]["spec"]["volumes"]) == worker, group.get(
                "groupName", "head"
            )


def test_cpu_worker_fits_the_largest_task_a_scan_declares(raycluster):
    """The biggest layer the default size filter lets through must fit one CPU worker pod.

    The memory a Ray chunk task declares is the library's est_bytes of its largest layer plus
    pipelines.work.CHUNK_BASE_BYTES; with the default filter (N <= max_N, M*rf <= max_evals) the
    largest dense layer is max_N x max_evals.
    """
    from ww_spectral.layers import plan_layer
    from ww_spectral.records import AnalysisOptions, TensorInfo

    work = pytest.importorskip("pipelines.work", reason="pipelines/work.py (chunk memory) not there yet")
    options = AnalysisOptions()
    largest = plan_layer(TensorInfo("w", (options.max_N, options.max_evals), "F32", None, 0), 0, options)
    too_large = plan_layer(
        TensorInfo("w", (options.max_N + 1, options.max_evals), "F32", None, 0), 0, options
    )
    assert largest.analysed and not too_large.analysed, "the bound below is the real size-filter edge"
    task_bytes = largest.est_bytes + work.CHUNK_BASE_BYTES

    cpu = next(g for g in raycluster["spec"]["workerGroupSpecs"] if g["groupName"] == "cpu")
    (c,) = containers(cpu)
    pod_bytes = parse_quantity(c["resources"]["limits"]["memory"])
    object_store = int(cpu["rayStartParams"]["object-store-memory"])
    # Ray's `memory` resource is roughly what the pod has beyond the object store; keep 1 GiB for raylet etc.
    ray_memory = pod_bytes - object_store - GIB
    assert ray_memory >= task_bytes, (
        f"worst-case task {task_bytes / GIB:.1f} GiB > pod's {ray_memory / GIB:.1f}"
    )
    # /dev/shm must hold the object store, or Ray falls back to slow disk.
    shm = next(v for v in cpu["template"]["spec"]["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"]
    assert parse_quantity(shm) >= object_store


def test_parse_quantity():
    assert parse_quantity("32Gi") == 32 * GIB
    assert parse_quantity("512Mi") == 512 * 2**20
    assert parse_quantity("2G") == 2 * 10**9


def test_prefect_values_point_at_the_same_cluster(repo, raycluster, prefect_yaml, image):
    values = yaml.safe_load((repo / "infra" / "k8s" / "prefect-values.yaml").read_text())
    server, worker = values["server"], values["worker"]
    # Postgres, not SQLite, for the production server; its version matches the client.
    assert server["postgresql"]["enabled"] is True and server["sqlite"]["enabled"] is False
    prefect_version = importlib.metadata.version("prefect")  # not `import prefect`: 5 s on a busy machine
    assert server["global"]["prefect"]["image"]["prefectTag"].startswith(prefect_version + "-")
    w = worker["worker"]
    assert f"{w['image']['repository']}:{w['image']['prefectTag']}" == image
    env = prefect_yaml["definitions"]["work_pool"]["job_variables"]["env"]
    assert w["config"]["type"] == "process"
    assert w["config"]["workPool"] == prefect_yaml["definitions"]["work_pool"]["name"]
    assert w["serverApiConfig"]["apiUrl"] == env["PREFECT_API_URL"]
    # The Prefect API the flow uses is the one the Ray pods can reach.
    for group in [raycluster["spec"]["headGroupSpec"], *raycluster["spec"]["workerGroupSpecs"]]:
        for c in containers(group):
            assert env_of(c)["PREFECT_API_URL"] == env["PREFECT_API_URL"]
    # RAY_ADDRESS names this RayCluster's head service (KubeRay: <name>-head-svc) on the client port.
    name = raycluster["metadata"]["name"]
    assert re.fullmatch(rf"ray://{name}-head-svc(\.[a-z0-9-]+)*:10001", env["RAY_ADDRESS"]), env[
        "RAY_ADDRESS"
    ]
    # The worker's token is the Secret KubeRay creates for authOptions (named after the cluster).
    worker_env = {e["name"]: e for e in w["extraEnvVars"]}
    assert worker_env["RAY_AUTH_MODE"]["value"] == "token"
    assert worker_env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": name, "key": "auth_token"}
