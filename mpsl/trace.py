"""The trace: one event type, written by the nodes, their link threads and the simulator.

An event is one action on one resource: a node's processor (`CPU`) or a directed link
(`owner0->server`). Its `action` is the printed `Action` (`1F3`, `>server:ACT3`, `STEP1`,
`AVG`), so a measured and a simulated timeline compare action by action. `owner`, `iter`
and `mb` are None where they do not apply (an aggregator's AVG has no owner). Iterations
count from 0 over the whole run, and aggregation rounds likewise (a PARAMS's `iter`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mpsl.actions import Action
from mpsl.names import CPU

FIELDS = ("node", "resource", "action", "owner", "iter", "mb", "t0", "t1", "bytes")


@dataclass(frozen=True, slots=True)
class Event:
    """One action on a processor, or one message's transmission on a link, from t0 to t1."""

    node: str
    resource: str
    action: str
    owner: int | None
    iter: int | None
    mb: int | None
    t0: float
    t1: float
    bytes: int = 0

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

    @property
    def resource_name(self) -> str:
        """`node` for a processor, the link's own name for a link."""
        return self.node if self.resource == CPU else self.resource

    @property
    def kind(self) -> str:
        """The action without its micro-batch (`1F`, `>server:ACT`, `STEP`): see Action.kind."""
        return action_kind(self.action)

    def shifted(self, dt: float, iterations: int = 0, rounds: int = 0) -> Event:
        """The same event `dt` seconds later, its iteration (or round, for a PARAMS or GLOBAL)
        counted on by `iterations` (`rounds`)."""
        it = self.iter
        if it is not None:
            it += rounds if is_round_event(self.action) else iterations
        return Event(self.node, self.resource, self.action, self.owner, it, self.mb,
                     self.t0 + dt, self.t1 + dt, self.bytes)


_KINDS: dict[str, str] = {}


def action_kind(action: str) -> str:
    """`Action.from_str(action).kind`, memoised (traces repeat a few hundred actions)."""
    kind = _KINDS.get(action)
    if kind is None:
        kind = _KINDS[action] = Action.from_str(action).kind
    return kind


def is_round_event(action: str) -> bool:
    """Whether the event's `iter` counts aggregation rounds: PARAMS, GLOBAL, AVG, PLAN,
    CONTROL."""
    return action.startswith(("AVG", "PLAN")) or action.endswith(("PARAMS", "GLOBAL", "CONTROL"))


def write_events(path: str | Path, events: Iterable[Event]) -> None:
    """One JSON object per line."""
    with open(path, "w") as f:
        for e in events:
            f.write(json.dumps(asdict(e)) + "\n")


def read_events(path: str | Path) -> list[Event]:
    with open(path) as f:
        return [Event(**json.loads(line)) for line in f if line.strip()]


def events_to_rows(events: Iterable[Event]) -> list[list[Any]]:
    """Compact rows for messages, in FIELDS order."""
    return [[e.node, e.resource, e.action, e.owner, e.iter, e.mb, e.t0, e.t1, e.bytes]
            for e in events]


def events_from_rows(rows: Iterable[Iterable[Any]]) -> list[Event]:
    return [Event(*row) for row in rows]
