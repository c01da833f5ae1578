"""One model attempt's deadline, and running a blocking step against it.

A model's planning (headers, config, index), its downloads and its Ray chunks all read untrusted input;
the readers bound what they read (regular files only, size and depth caps), but a hub server that drips
one byte per read timeout, or a file system that stops answering, can still block a read for ever.
`Deadline.call` runs such a step in a daemon thread and stops waiting when the deadline passes: the model
fails with TimeoutError (transient, so retried, then recorded) and the scan goes on. The abandoned
thread holds only its file handle or socket and never blocks the process from exiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Deadline:
    """`seconds` from now on the monotonic clock."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.at = time.monotonic() + self.seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def error(self, what: str) -> TimeoutError:
        return TimeoutError(f"{what} exceeded the model's timeout ({self.seconds:g} s, WW_SCAN_MODEL_TIMEOUT_S)")

    def call(self, fn: Callable[[], T], *, what: str) -> T:
        """fn() in a daemon thread; its result or exception, or TimeoutError once the deadline passes."""
        if self.expired():
            raise self.error(what)
        outcome: list = []
        finished = threading.Event()

        def target() -> None:
            try:
                outcome.append((True, fn()))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread as it is
                outcome.append((False, exc))
            finally:
                finished.set()

        threading.Thread(target=target, name=f"ww-deadline:{what[:40]}", daemon=True).start()
        if not finished.wait(max(self.remaining(), 0.0)):
            raise self.error(what)
        ok, value = outcome[0]
        if not ok:
            raise value
        return value
