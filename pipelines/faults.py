"""Which stage a model failed in, and whether the fault is worth retrying.

- transient (HTTP 408/429/5xx, timeouts, network errors, a lost Ray worker or node): the model task raises
  and Prefect retries it with jittered exponential back-off (`retry_if_transient`, `retry_options`);
  Ray itself first re-runs a chunk whose worker died (`max_retries` in pipelines/dispatch.py).
- permanent (gated/private without token, no weights, damaged checkpoint, nothing analysable, a bad
  option) and anything unexpected: not retried; the model becomes one `failures` row.
- settled (`skips_rescan`): the permanent faults of the revision's own bytes or of the analysis options.
  A later scan skips a revision whose last recorded attempt failed so (pipelines/scan.py), until
  `--retry-failed` (WW_SCAN_RETRY_FAILED=1) or another ww-spectral version.

No prefect or ray import at module top: the classification is used by fast unit tests and the listing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from ww_spectral.errors import (
    CheckpointError,
    GatedRepoError,
    NoWeightsError,
    OptionError,
    SourceNotFoundError,
    TransientHubError,
    UnsupportedDtypeError,
    WWSpectralError,
)

STAGES = ("list", "download", "read", "analyze", "write")

# Faults of the input itself: retrying cannot help. (errors.NoAnalysableLayerError is a CheckpointError.)
PERMANENT = (GatedRepoError, NoWeightsError, SourceNotFoundError, CheckpointError, UnsupportedDtypeError,
             OptionError)

# Permanent faults whose outcome cannot depend on the caller's credentials, the machine or the network: the
# revision's bytes are what they are (a commit sha, a folder's content hash) and the options are part of the
# store key, so the same code fails the same way again. Not here (a rescan tries them again):
# GatedRepoError and SourceNotFoundError (a token, or read access to a folder, can change the answer: the hub
# answers 401/404 for a private repo the caller cannot see), transient faults, and anything unexpected (a
# bug a release fixes, or the machine: one failures row a night keeps it in sight).
SETTLED = (NoWeightsError, CheckpointError, UnsupportedDtypeError, OptionError)

# Exception class names of HTTP clients (httpx, requests) for network faults, matched without importing them.
_NETWORK_NAMES = frozenset({"TimeoutException", "NetworkError", "RemoteProtocolError", "TransportError"})
_RAY_TRANSIENT_NAMES = ("WorkerCrashedError", "ActorDiedError", "NodeDiedError", "ObjectLostError",
                        "OwnerDiedError", "LocalRayletDiedError", "ObjectFetchTimedOutError", "GetTimeoutError",
                        "OutOfMemoryError", "RaySystemError", "ActorUnavailableError",
                        "ObjectReconstructionFailedError")


class StageFailure(WWSpectralError):
    """A model failed at `stage`; `cause` is the original exception (its type is what gets recorded)."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage}: {error_type(cause)}: {root_cause(cause)}")
        self.stage = stage
        self.cause = cause

    def __reduce__(self):
        return (StageFailure, (self.stage, self.cause))


class RemoteFailure(WWSpectralError):
    """A model's fault as a batch worker reported it (pipelines/batch.py): the original type name, message
    and classification. The exception object itself stays in the worker (third-party exceptions do not
    always pickle); the failures table records `error_type`, the original class name."""

    def __init__(self, error_type: str, message: str, transient: bool) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.transient = transient

    def __reduce__(self):
        return (RemoteFailure, (self.error_type, str(self), self.transient))


def error_type(exc: BaseException) -> str:
    """The class name of the fault that actually happened (a reported one's original class name)."""
    cause = root_cause(exc)
    return cause.error_type if isinstance(cause, RemoteFailure) else type(cause).__name__


def root_cause(exc: BaseException) -> BaseException:
    """Unwrap StageFailure and Ray's RayTaskError to the exception that actually happened."""
    for _ in range(10):
        if isinstance(exc, StageFailure):
            exc = exc.cause
            continue
        inner = getattr(exc, "cause", None)
        if type(exc).__name__.startswith("RayTaskError") and isinstance(inner, BaseException):
            exc = inner
            continue
        break
    return exc


def stage_of(exc: BaseException, default: str = "analyze") -> str:
    """The stage an exception was tagged with by `stage()`, else `default`."""
    return exc.stage if isinstance(exc, StageFailure) else default


@cache
def _ray_transient_types() -> tuple[type, ...]:
    import ray.exceptions as rex

    return tuple(getattr(rex, n) for n in _RAY_TRANSIENT_NAMES if hasattr(rex, n))


def is_transient(exc: BaseException) -> bool:
    """True for faults worth retrying later: hub 408/429/5xx and network errors, timeouts, a lost Ray worker."""
    exc = root_cause(exc)
    if isinstance(exc, RemoteFailure):
        return exc.transient
    if isinstance(exc, TransientHubError):
        return True
    if isinstance(exc, PERMANENT):
        return False
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if isinstance(exc, _ray_transient_types()):
        return True
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int) and (status in (408, 429) or status >= 500):
        return True
    return bool({c.__name__ for c in type(exc).__mro__} & _NETWORK_NAMES)


def settled_error_types() -> frozenset[str]:
    """Class names of the SETTLED faults and their subclasses (e.g. NoAnalysableLayerError), as the failures
    table records them (`error_type`: the root cause's class name, also for faults a batch worker reported)."""
    names: set[str] = set()
    todo = list(SETTLED)
    while todo:
        cls = todo.pop()
        if cls.__name__ not in names:
            names.add(cls.__name__)
            todo.extend(cls.__subclasses__())
    return frozenset(names)


def skips_rescan(error_type: str, recorded_by: str, *, running: str) -> bool:
    """Whether a scan skips a revision (with the same options) whose last recorded attempt failed with
    `error_type`, recorded by ww-spectral version `recorded_by`, when version `running` scans.

    The rule: skip only a settled fault (SETTLED: no weights, a damaged or unanalysable checkpoint, an
    unsupported dtype, a bad option) recorded by this very version, because only then can the attempt not
    succeed: the revision's bytes and the options are the same, and the fault cannot depend on credentials,
    the machine or the network. Gated/not-found repos (a token may be supplied), transient and unexpected
    faults, and failures an older or newer version recorded (its readers may differ) are attempted again.
    Judged by the recorded class name, so failures rows stored before this rule existed count too.
    """
    return recorded_by == running and error_type in settled_error_types()


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry only transient faults (the exception is the Failed state's data)."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as e:  # noqa: BLE001 - the state's exception itself
            exc = e
    return isinstance(exc, BaseException) and is_transient(exc)


def retry_options(retries: int, delay_s: float) -> dict:
    """Prefect task options of the retry policy: `retries` attempts more, exponential back-off from
    `delay_s`, 50 % jitter (models rate-limited together, HTTP 429, must not come back together)."""
    from prefect.tasks import exponential_backoff

    return {"retries": retries,
            "retry_delay_seconds": exponential_backoff(backoff_factor=delay_s) if retries else 0,
            "retry_jitter_factor": 0.5}


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Tag any exception raised inside with the stage it happened in (the first tag wins)."""
    try:
        yield
    except StageFailure:
        raise
    except Exception as exc:
        raise StageFailure(name, exc) from exc


def tagged(name: str, exc: BaseException) -> StageFailure:
    """`exc` tagged with stage `name` (kept as it is when already tagged)."""
    return exc if isinstance(exc, StageFailure) else StageFailure(name, exc)
