"""Free TCP ports for servers that a test starts as other processes and that bind a port given to them.

A port the kernel hands out for bind(("", 0)) comes from its ephemeral range (ip_local_port_range), the
range it also takes every other auto-bound port from (each outgoing connection, every Ray/gRPC component
started with port 0). Closed and given to a process that binds it seconds later, such a port can be taken
in between. These are chosen below that range (and above Ray's default worker ports, 10002-19999), where
only a process that names a port binds: checked free now, they stay free unless another test picks the
same one.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RAY_WORKER_PORTS_END = 19999


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))  # every interface: a server may bind the node's address, not loopback
        except OSError:
            return False
    return True


def free_ports(n: int = 1) -> list[int]:
    """`n` distinct ports, free now, outside the kernel's ephemeral range where it has room."""
    low, high = _RAY_WORKER_PORTS_END + 1, _ephemeral_start() - 1
    rng = random.SystemRandom()
    ports: list[int] = []
    for _ in range(1000):
        port = rng.randint(low, high) if high - low > 1000 else 0
        if port == 0:  # no room below the ephemeral range on this machine: let the kernel choose
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        if port not in ports and _bindable(port):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise AssertionError(f"no {n} free ports found")
