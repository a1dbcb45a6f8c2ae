"""Which data owners take part in the rounds, as the aggregator sees it: liveness from what it
hears, owners lost after `failure.timeout_s` of silence, and owners that said hello again and
rejoin at the next aggregation (PiPar's Section III-B)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mpsl.topology import Topology


@dataclass
class Membership:
    """The owners present (`active`), when each node was last heard (monotonic seconds), the
    hellos of owners waiting to rejoin, and the record of who was lost and who rejoined."""

    names: dict[int, str]  # owner index -> name
    timeout_s: float
    active: set[int] = field(default_factory=set)
    last_heard: dict[str, float] = field(default_factory=dict)
    waiting: dict[int, Any] = field(default_factory=dict)  # owner -> its hello (a Message)
    lost: list[dict[str, Any]] = field(default_factory=list)
    rejoined: list[dict[str, Any]] = field(default_factory=list)
    late: list[dict[str, Any]] = field(default_factory=list)  # stragglers left out of a round

    @classmethod
    def of(cls, topo: Topology) -> Membership:
        names = {o.index: o.name for o in topo.owners}
        return cls(names, topo.failure.timeout_s, active=set(names))

    def __post_init__(self) -> None:
        self._index = {n: k for k, n in self.names.items()}  # name -> owner, per message

    def index(self, name: str) -> int | None:
        """The owner named `name`, or None for another node."""
        return self._index.get(name)

    def start(self, now: float) -> None:
        """Every owner counts as heard at the start."""
        for name in self.names.values():
            self.last_heard[name] = now

    def heard(self, name: str, now: float) -> None:
        self.last_heard[name] = now

    def silent(self, now: float) -> list[tuple[int, float]]:
        """(owner, seconds of silence) of every present owner silent past the timeout."""
        quiet = [(k, now - self.last_heard.get(self.names[k], now)) for k in sorted(self.active)]
        return [(k, s) for k, s in quiet if s > self.timeout_s]

    def lose(self, owner: int, round_id: int, why: str, silent_s: float, t_s: float) -> None:
        self.active.discard(owner)
        self.lost.append({"node": self.names[owner], "round": round_id, "why": why,
                          "silent_s": round(silent_s, 3), "t_s": round(t_s, 3)})

    def rejoin(self, owner: int, round_id: int, now: float, t_s: float) -> None:
        """`owner` takes part again from round `round_id` on (heard `now`, by its hello)."""
        self.waiting.pop(owner, None)
        self.active.add(owner)
        self.heard(self.names[owner], now)
        self.rejoined.append({"node": self.names[owner], "round": round_id,
                              "t_s": round(t_s, 3)})

    def record(self) -> dict[str, list[dict[str, Any]]]:
        """results.json's `failures`."""
        return {"lost": list(self.lost), "rejoined": list(self.rejoined),
                "late": list(self.late)}
