"""The `ray up` cluster configs validate against the schema inside the installed Ray wheel."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

RAY_SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
CONFIGS = ["cluster-aws.yaml", "cluster-gcp.yaml"]


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(RAY_SCHEMA.read_text())


def load(repo: Path, name: str) -> dict:
    return yaml.safe_load((repo / "infra" / "ray" / name).read_text())


def node_types(config: dict) -> tuple[str, dict, dict]:
    """(head type name, CPU worker types, GPU worker types) of a cluster config."""
    head = config["head_node_type"]
    workers = {k: v for k, v in config["available_node_types"].items() if k != head}
    gpu = {k: v for k, v in workers.items() if "gpu" in k}
    cpu = {k: v for k, v in workers.items() if k not in gpu}
    return head, cpu, gpu


@pytest.mark.parametrize("name", CONFIGS)
def test_cluster_config_validates_against_ray_schema(repo, schema, name):
    config = load(repo, name)
    jsonschema.validate(config, schema)
    # Ray's own checks too (head type exists, ...), before and after it merges its provider defaults.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(config)
    prepared = prepare_config(config)
    validate_config(prepared)
    # The defaults ship `pip install ...` setup commands; ours must survive the merge as "install nothing".
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert prepared[key] == [], f"{name}: {key} must be empty (everything is in the image)"
    # initialization_commands only mount the shared volume on the host: nothing is installed anywhere.
    commands = [c for key, value in prepared.items() if key.endswith("_commands") for c in value]
    for word in ("pip", "apt", "apt-get", "conda", "yum", "curl", "wget"):
        assert not [c for c in commands if word in shlex.split(c.replace(";", " ; "))], (
            f"{name}: installs {word}"
        )


@pytest.mark.parametrize("name", CONFIGS)
def test_cluster_config_shape(repo, image, name):
    config = load(repo, name)
    head, cpu, gpu = node_types(config)
    assert config["available_node_types"][head]["resources"] == {"CPU": 0}, "no analysis tasks on the head"
    assert cpu and gpu, "a CPU worker type and an optional GPU worker type"
    for spec in cpu.values():
        node = spec["node_config"]
        spot = node.get("InstanceMarketOptions", {}).get("MarketType") == "spot" or {
            "preemptible": True
        } in node.get("scheduling", [])
        assert spot, f"{name}: CPU workers run on spot/preemptible instances"
        assert spec["min_workers"] == 0 < spec["max_workers"] <= config["max_workers"]
    for spec in gpu.values():
        assert spec["min_workers"] == 0, "GPU workers are optional: none unless a task asks for a GPU"
        assert spec["docker"]["worker_image"] == image + "-gpu"
    assert config["docker"]["image"] == image
    run_options = " ".join(config["docker"]["run_options"])
    assert "-e RAY_AUTH_MODE=token" in run_options
    assert "-e RAY_USAGE_STATS_ENABLED=0" in run_options
    # Shared storage at the same container path on every node (the flow hands Ray tasks shard paths).
    assert "-v /mnt/ww-shared:/shared" in run_options
    assert any("/mnt/ww-shared" in c and "mount" in c for c in config["initialization_commands"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert len(start) == 1
        words = shlex.split(start[0].replace(";", " ; "))
        assert "RAY_AUTH_MODE=token" in words and "--disable-usage-stats" in words
    # The token file reaches every node where Ray looks for it by default.
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


BREAKAGES = {
    "typo in a node type key": lambda c: c["available_node_types"][c["head_node_type"]].update(
        {"max_worker": 3}
    ),
    "typo in a top-level key": lambda c: c.update({"idle_timeout_minute": 5}),
    "fractional CPU resource": lambda c: c["available_node_types"][c["head_node_type"]].update(
        {"resources": {"CPU": 0.5}}
    ),
    "unknown docker option": lambda c: c["docker"].update({"imgae": "x"}),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_broken_copy_fails_validation(repo, schema, breakage):
    """The schema check can fail: a copy with one deliberate mistake is rejected."""
    config = load(repo, "cluster-aws.yaml")
    jsonschema.validate(config, schema)
    broken = copy.deepcopy(config)
    BREAKAGES[breakage](broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
