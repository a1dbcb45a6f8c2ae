"""Free loopback ports for local runs, below the kernel's ephemeral range.

Ports that the kernel hands out for outgoing connections (ZeroMQ's PUSH sockets among them)
come from the ephemeral range; a port picked there can be taken again before a node binds it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    try:
        return int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n: int, consecutive: bool = False) -> list[int]:
    """`n` distinct ports that 127.0.0.1 can bind now, in [10000, ephemeral start)."""
    top = max(_ephemeral_start(), 10000 + 4 * n + 1000)
    rng = random.Random()
    for _ in range(1000):
        if consecutive:
            base = rng.randrange(10000, top - n)
            candidates = list(range(base, base + n))
        else:
            candidates = rng.sample(range(10000, top), n)
        if all(_bindable(p) for p in candidates):
            return candidates
    raise RuntimeError(f"no {n} free ports below {top} on 127.0.0.1")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
