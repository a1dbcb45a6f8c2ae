"""What the cost model returns: times, busy time per resource, memory per node, events."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mpsl.trace import Event

_OWNER = re.compile(r"owner\d+")


@dataclass
class Estimate:
    """The cost model's answer for one plan.

    `iteration_s` is the mean owner iteration (first forward to STEP), `epoch_s` one epoch
    with its aggregations, `total_s` every epoch. `busy_s` maps processors (node names) and
    links (`owner0->server`) to busy seconds in one epoch; `memory_bytes` maps nodes to
    their peak (`memory_detail`: parameter state, activation and buffer peaks). `events`
    (when recorded) is the simulated trace of every epoch; `steady_periods` the periods of
    a steady state the simulator skipped (0: every event simulated).
    """

    iteration_s: float
    epoch_s: float
    busy_s: dict[str, float]
    memory_bytes: dict[str, int]
    bottleneck: str
    total_s: float = 0.0
    iterations: dict[str, int] = field(default_factory=dict)
    epochs: int = 1
    memory_detail: dict[str, dict[str, int]] = field(default_factory=dict)
    events: list[Event] | None = None
    steady_periods: int = 0  # whole periods of a steady state added arithmetically

    def utilization(self, resource: str) -> float:
        """Busy share of an epoch's wall time."""
        return self.busy_s.get(resource, 0.0) / self.epoch_s if self.epoch_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "iteration_s": self.iteration_s,
            "epoch_s": self.epoch_s,
            "total_s": self.total_s,
            "busy_s": dict(self.busy_s),
            "memory_bytes": dict(self.memory_bytes),
            "bottleneck": self.bottleneck,
        }


def bottleneck_of(busy: Mapping[str, float]) -> str:
    """The busiest resource (the first such, in insertion order)."""
    return max(busy, key=lambda r: busy[r]) if busy else ""


def group_name(resource: str) -> str:
    """`owner12->server` -> `owner*->server`: owners folded together for display."""
    return _OWNER.sub("owner*", resource)


def grouped(values: Mapping[str, float]) -> dict[str, tuple[float, int]]:
    """Max and count per owner-folded name, in first-seen order."""
    out: dict[str, tuple[float, int]] = {}
    for name, v in values.items():
        g = group_name(name)
        m, n = out.get(g, (v, 0))
        out[g] = (max(m, v), n + 1)
    return out
