"""Free loopback ports for local runs, below the kernel's ephemeral range.

Ports that the kernel hands out for outgoing connections (ZeroMQ's PUSH sockets among them)
come from the ephemeral range; a port picked there can be taken again before a node binds it.
A port picked here is free when it is picked, not held: processes that pick at the same time
(`python -m bench --jobs J` runs experiments side by side) each take their own share of the
range (`MPSL_PORT_RANGE`, set by `bench.parallel`), so that two of them never pick one port.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10000
ENV = "MPSL_PORT_RANGE"  # "LO-HI": the ports this process (and its children) picks from


def _ephemeral_start() -> int:
    try:
        return int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def share(index: int, parts: int) -> str:
    """The `index`-th of `parts` equal shares of [10000, ephemeral start), as `ENV`'s value."""
    top = _ephemeral_start()
    width = (top - LOWEST) // max(1, parts)
    return f"{LOWEST + index * width}-{LOWEST + (index + 1) * width}"


def _range() -> tuple[int, int]:
    """[low, top) to pick from: `ENV`'s share, else [10000, ephemeral start)."""
    given = os.environ.get(ENV)
    if not given:
        return LOWEST, _ephemeral_start()
    try:
        low, top = (int(x) for x in given.split("-"))
    except ValueError:
        raise ValueError(f"{ENV}={given!r}: expected LOW-TOP, e.g. 10000-11000") from None
    return low, top


def free_ports(n: int, consecutive: bool = False) -> list[int]:
    """`n` distinct ports that 127.0.0.1 can bind now, in this process's range (`ENV`, else
    [10000, ephemeral start))."""
    low, top = _range()
    top = max(top, low + 4 * n + 1000)
    rng = random.Random()
    for _ in range(1000):
        if consecutive:
            base = rng.randrange(low, top - n)
            candidates = list(range(base, base + n))
        else:
            candidates = rng.sample(range(low, top), n)
        if all(_bindable(p) for p in candidates):
            return candidates
    raise RuntimeError(f"no {n} free ports in [{low}, {top}) on 127.0.0.1")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
