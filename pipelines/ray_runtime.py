"""Start or attach Ray for a scan; quiet telemetry defaults for every tool the pipeline imports.

Which Ray runs the heavy work is configuration, never flow code:

- nothing configured: a private local Ray started on demand (`address="local"`, so a stray cluster
  found through /tmp/ray is never joined), `workers` CPUs (default: all cores), no dashboard;
- `ray_address=` / `RAY_ADDRESS`: an existing cluster. `"auto"` or `host:6379` attaches on the same
  network; `ray://host:10001` uses Ray Client, which in Ray 2.60 needs token auth on the client side:
  `RAY_AUTH_MODE=token` plus the token in `RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`.
  Without it the client fails after 30 s with a misleading "ray client connection timeout", so we set
  `RAY_AUTH_MODE=token` ourselves when a token is available and the variable is unset.
- a Ray already initialised in this process (tests, notebooks) is reused and left running.

Output: `quiet_output(verbose=False)` keeps Prefect's and Ray's log lines and notices (Ray's
token-authentication warning, Prefect's temporary-server notice, flow-run INFO lines) off stderr; the
commands that run a scan (pipelines/scan_cli.py, pipelines/proof/demo.py) call it with the global --verbose.

Telemetry: `quiet_environment()` sets the switches Prefect, Ray and huggingface_hub read when they are
imported or started (only where the user has not set them). It is called explicitly, first thing, by the
entry points that import Prefect (pipelines/flows.py at its top, pipelines/scan_cli.py before it imports
the flows; benchmarks/bench_scan.py), never as a side effect of importing this module.

Environment read here, on purpose: Ray's own RAY_ADDRESS (fallback when no address is given),
RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / RAY_AUTH_MODE (Ray Client auth) and HF_TOKEN (forwarded to the
workers of a remote cluster): Ray's and the hub's variables, and secrets, stay out of the scan settings.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ww_spectral.errors import OptionError

from .work import warm_up

QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
# Prefect's embedded default starts a temporary API server (SQLite migrations on first use); its 20 s
# start-up limit was too short on a busy 2-core machine (measured: 13.7 s first run, timeouts under load).
EMBEDDED_DEFAULTS = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}


def quiet_environment() -> None:
    """Telemetry off and Prefect's embedded-server start-up limit raised, unless the user set them.

    Call before prefect or ray is imported: they read these when imported or started.
    """
    for key, value in {**QUIET_ENV, **EMBEDDED_DEFAULTS}.items():
        os.environ.setdefault(key, value)


# Loggers of the libraries a scan runs on; below ERROR they speak only with --verbose.
THIRD_PARTY_LOGGERS = ("prefect", "ray")


def quiet_output(*, verbose: bool) -> None:
    """Prefect's and Ray's log lines and notices on stderr only when `verbose` (ww-spectral's own progress
    lines are not logging and always show).

    Call before Prefect is imported: it reads PREFECT_LOGGING_LEVEL when it configures its loggers (set to
    ERROR here unless the user set it). Ray is imported here, because its import sets the 'ray' logger to
    INFO; the loggers of both are then turned down to ERROR (Ray's token-authentication warning comes
    from a child of 'ray' when a local Ray starts). verbose=True changes nothing: their defaults speak.
    """
    if verbose:
        return
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    import ray  # noqa: F401 - imported before its logger is set, which its import would reset

    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


# Ray workers inherit these: one BLAS thread per Ray task, Ray parallelises.
# Each task also applies threadpoolctl, because a reused worker keeps its first BLAS setting.
WORKER_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    **QUIET_ENV,
}


@dataclass(frozen=True)
class RayHandle:
    """What `ensure_ray` did.

    address: the cluster's address as Ray reports it ("local" clusters report their GCS address).
    started: True when this call started Ray (and `release` shuts it down again).
    slots: how many Ray tasks the scan keeps in flight (the `workers` cap, else the cluster's CPUs).
    node_memory: the largest `memory` resource of any live node (a task asking more never schedules);
        None when Ray does not say (Ray Client).
    task_env: environment variables each task must be given itself: a Ray initialised before this scan
        (a notebook, a test) has workers started without this process's HF_TOKEN, so tasks that may
        download gated files carry it in their runtime_env; empty when the workers already have it.
    """

    address: str
    started: bool
    slots: int
    node_memory: int | None = None
    task_env: dict = field(default_factory=dict, repr=False)
    gpus: float = 0.0  # GPUs the cluster has (Ray's "GPU" resource)


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return Path(path).is_file()


def ensure_ray(*, ray_address: str | None = None, workers: int | None = None) -> RayHandle:
    """Make sure Ray is initialised in this process; return how to use it.

    ray_address: None (RAY_ADDRESS, else a private local Ray), "auto", "host:port" or "ray://host:port".
    workers: cap on concurrent Ray tasks (and the CPUs of a local Ray we start); None = all CPUs.
    """
    if workers is not None and workers < 1:
        raise OptionError(f"workers={workers} is not allowed; use a positive integer or leave it unset")
    import ray

    started = False
    if not ray.is_initialized():
        address = ray_address or os.environ.get("RAY_ADDRESS") or None
        runtime_env = {"env_vars": dict(WORKER_ENV)}
        if address is None or address == "local":
            # Ray starts its workers at nice 15 by default: on a shared machine they then get only the CPU other
            # jobs leave (measured: 2 workers 0.8x one worker at load 11). Ours run at the flow's priority unless
            # RAY_worker_niceness says otherwise (benchmarks/bench_scan.py --worker-niceness).
            system = {} if "RAY_worker_niceness" in os.environ else {"worker_niceness": 0}  # noqa: SIM112
            ray.init(
                address="local",
                num_cpus=workers or os.cpu_count() or 1,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env=runtime_env,
                _system_config=system or None,
            )
        else:
            if address.startswith("ray://") and "RAY_AUTH_MODE" not in os.environ and _token_available():
                os.environ["RAY_AUTH_MODE"] = "token"
            # Nodes of a remote cluster may lack the driver's HF_TOKEN (a `ray up` cluster has no secret
            # wiring): a worker that must refetch a gated shard needs it. Sent only when attaching to a remote cluster, to its
            # workers (visible to whoever can read the cluster's job metadata); a local Ray inherits it anyway.
            if os.environ.get("HF_TOKEN"):
                runtime_env["env_vars"]["HF_TOKEN"] = os.environ["HF_TOKEN"]
            # Attaching: num_cpus must not be passed (Ray refuses it for an existing cluster).
            attach = partial(ray.init, address=address, log_to_driver=False, configure_logging=False,
                             runtime_env=runtime_env)
            if address.startswith("ray://"):
                retry_transient(attach, is_transient=client_start_failed)
            else:
                attach()
        started = True
    cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
    slots = min(workers, cpus) if workers else cpus
    try:
        address_now = ray.get_runtime_context().gcs_address
    except Exception:  # Ray Client sessions have no GCS address on the driver side
        address_now = ray_address or os.environ.get("RAY_ADDRESS") or "local"
    # Workers of a Ray we started (or attached with the runtime_env above) have HF_TOKEN already.
    task_env = {**WORKER_ENV, "HF_TOKEN": os.environ["HF_TOKEN"]} if not started and os.environ.get("HF_TOKEN") else {}
    return RayHandle(address=str(address_now), started=started, slots=max(1, slots), node_memory=_node_memory(),
                     task_env=task_env, gpus=float(ray.cluster_resources().get("GPU", 0)))


# Ray Client's proxy starts one server process per client; in Ray 2.60 it can lose a race with that process
# and answer "Initialization failure from server" (psutil.ZombieProcess while the server starts; seen in CI
# on a cluster that had just come up). The next connection gets a fresh server process.
CLIENT_CONNECT_ATTEMPTS = 3
CLIENT_CONNECT_BACKOFF_S = 2.0


def client_start_failed(error: BaseException) -> bool:
    """True for Ray Client's "the proxy could not start my server" error, which a new connection can clear."""
    return isinstance(error, ConnectionError) and "Initialization failure from server" in str(error)


def retry_transient(call, *, is_transient, attempts: int = CLIENT_CONNECT_ATTEMPTS,
                    backoff_s: float = CLIENT_CONNECT_BACKOFF_S, sleep=time.sleep):
    """`call()`, repeated up to `attempts` times while it raises an error `is_transient` accepts (waiting
    backoff_s, 2*backoff_s, ... between tries, one line on stderr each); any other error, or the last, is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as error:
            if attempt == attempts or not is_transient(error):
                raise
            first_line = str(error).strip().splitlines()[0].rstrip(":") if str(error).strip() else type(error).__name__
            print(f"ww-spectral: Ray Client: {first_line}; connecting again ({attempt + 1}/{attempts})",
                  file=sys.stderr)
            sleep(backoff_s * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _node_memory() -> int | None:
    """Largest `memory` resource of any live node."""
    import ray

    try:
        mems = [n.get("Resources", {}).get("memory", 0) for n in ray.nodes() if n.get("Alive")]
    except Exception:  # noqa: BLE001 - Ray Client may not expose nodes(); then no cap
        return None
    return int(max(mems)) if mems else None


def prewarm(slots: int) -> list:
    """Start `slots` warm-up tasks (imports + a tiny analysis) without waiting for them; returns their refs."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=0)(warm_up)
    return [remote.options(name="ww-warm-up").remote() for _ in range(slots)]


def release(handle: RayHandle) -> None:
    """Shut Ray down if `ensure_ray` started it; a Ray someone else started stays up."""
    if handle.started:
        import ray

        ray.shutdown()
