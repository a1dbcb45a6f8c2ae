"""Timeline events and what is derived from them: busy and idle time, bytes, bottleneck bound."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CPU = "cpu"  # the resource name of a node's processor


@dataclass(frozen=True)
class Event:
    """One action on one resource: a node's processor or a link (`src->dst`)."""

    node: str
    resource: str
    kind: str
    owner: int
    iter: int
    mb: int
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


def busy_seconds(events: Iterable[Event]) -> dict[str, float]:
    """Busy time per resource (processor busy time per node, transmission time per link)."""
    busy: dict[str, float] = {}
    for e in events:
        busy[e.resource_name] = busy.get(e.resource_name, 0.0) + e.seconds
    return busy


def link_bytes(events: Iterable[Event]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        if e.resource != CPU:
            out[e.resource] = out.get(e.resource, 0) + e.bytes
    return out


def bottleneck_bound(events: Iterable[Event]) -> tuple[str, float]:
    """The resource with the most busy time, and that time: no schedule can beat it."""
    busy = busy_seconds(events)
    if not busy:
        return "", 0.0
    name = max(busy, key=lambda k: busy[k])
    return name, busy[name]


def write_events(path: str | Path, events: Iterable[Event]) -> None:
    with open(path, "w") as f:
        for e in events:
            f.write(json.dumps(asdict(e)) + "\n")


def read_events(path: str | Path) -> list[Event]:
    with open(path) as f:
        return [Event(**json.loads(line)) for line in f if line.strip()]


def events_to_rows(events: Iterable[Event]) -> list[list[Any]]:
    """Compact rows for messages: [node, resource, kind, owner, iter, mb, t0, t1, bytes]."""
    return [[e.node, e.resource, e.kind, e.owner, e.iter, e.mb, e.t0, e.t1, e.bytes]
            for e in events]


def events_from_rows(rows: Iterable[Iterable[Any]]) -> list[Event]:
    return [Event(*row) for row in rows]


def write_results(run_dir: str | Path, results: Mapping[str, Any]) -> None:
    """results.json as given; results.csv with one row per epoch and per node."""
    run_dir = Path(run_dir)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    with open(run_dir / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["section", "name", "key", "value"])
        for ep in results.get("epochs", []):
            for key in ("wall_s", "train_loss", "test_accuracy"):
                w.writerow(["epoch", ep["epoch"], key, ep.get(key)])
        for name, node in sorted(results.get("nodes", {}).items()):
            for key, value in sorted(node.items()):
                w.writerow(["node", name, key, value])
        for name, link in sorted(results.get("links", {}).items()):
            for key, value in sorted(link.items()):
                w.writerow(["link", name, key, value])
        for key, value in sorted(results.get("summary", {}).items()):
            w.writerow(["summary", "", key, value])
