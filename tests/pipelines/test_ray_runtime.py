"""Attaching to a cluster through Ray Client (pipelines/ray_runtime.py): the proxy's "Initialization failure
from server" (Ray 2.60 loses a race with the server process it starts for each client) is retried with a
fresh connection; every other error, and the last try's, reaches the user unchanged."""

from __future__ import annotations

import pytest

from pipelines.ray_runtime import client_start_failed, retry_transient

# What Ray 2.60's client raised in CI (ray/util/client/worker.py _server_init), shortened.
PROXY_RACE = ConnectionAbortedError(
    "Initialization failure from server:\nTraceback (most recent call last):\n  ...\n"
    "psutil.ZombieProcess: PID still exists but it's a zombie (pid=10561)\n")


class Flaky:
    """Raises the given errors in order, then returns "connected"; counts the calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "connected"


def test_proxy_race_is_retried_with_growing_waits(capsys):
    waits: list[float] = []
    connect = Flaky(PROXY_RACE, PROXY_RACE)
    assert retry_transient(connect, is_transient=client_start_failed, backoff_s=1.5, sleep=waits.append) == "connected"
    assert connect.calls == 3 and waits == [1.5, 3.0]
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["ww-spectral: Ray Client: Initialization failure from server; connecting again (2/3)",
                     "ww-spectral: Ray Client: Initialization failure from server; connecting again (3/3)"]


def test_the_last_failure_and_other_errors_are_raised_unchanged():
    connect = Flaky(PROXY_RACE, PROXY_RACE, PROXY_RACE)
    with pytest.raises(ConnectionAbortedError) as raised:
        retry_transient(connect, is_transient=client_start_failed, sleep=lambda s: None)
    assert raised.value is PROXY_RACE and connect.calls == 3
    # A wrong token or an unreachable address is not the race: one try, the user's error.
    refused = ConnectionError("ray client connection timeout")
    connect = Flaky(refused)
    with pytest.raises(ConnectionError) as raised:
        retry_transient(connect, is_transient=client_start_failed, sleep=lambda s: None)
    assert raised.value is refused and connect.calls == 1
    assert not client_start_failed(ValueError("Initialization failure from server"))
