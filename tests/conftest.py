"""Shared fixtures. Heavy ones (Ray, Prefect API) are session-scoped and only start when requested."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

# Quiet telemetry and keep every tool's state out of $HOME, before anything imports them.
_STATE = Path(tempfile.mkdtemp(prefix="ww-tests-"))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("PREFECT_HOME", str(_STATE / "prefect"))
os.environ.setdefault("HF_HOME", str(_STATE / "hf"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

sys.path.insert(0, str(Path(__file__).parent))  # `import support.…` from any test folder


@pytest.fixture(scope="session")
def ray_local():
    """A private local Ray with 2 CPUs (never attaches to a stray cluster)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_api():
    """A real Prefect API for the whole session (temp SQLite), so Ray workers start no servers."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
