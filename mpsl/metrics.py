"""What is derived from a trace: busy time, bytes per link, the bottleneck bound, per-action
durations measured against simulated, and the run's results files."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from mpsl.names import CPU
from mpsl.trace import Event


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


def action_means(events: Iterable[Event]) -> dict[tuple[str, str], tuple[float, int]]:
    """Mean seconds and count of every action kind on every resource."""
    sums: dict[tuple[str, str], list[float]] = {}
    for e in events:
        s = sums.setdefault((e.resource_name, e.kind), [0.0, 0])
        s[0] += e.seconds
        s[1] += 1
    return {k: (total / n, int(n)) for k, (total, n) in sums.items()}


@dataclass(frozen=True)
class ActionRow:
    """One action kind on one resource: measured against simulated mean duration."""

    resource: str
    kind: str
    measured_s: float | None
    measured_n: int
    simulated_s: float | None
    simulated_n: int

    @property
    def error_pct(self) -> float | None:
        """(simulated - measured) / measured, in percent; None where either is missing or 0."""
        if not self.measured_s or self.simulated_s is None:
            return None
        return 100.0 * (self.simulated_s - self.measured_s) / self.measured_s


def compare_actions(measured: Iterable[Event], simulated: Iterable[Event]) -> list[ActionRow]:
    """Every (resource, action kind) of either trace, measured beside simulated, sorted."""
    m, s = action_means(measured), action_means(simulated)
    rows = []
    for key in sorted(set(m) | set(s)):
        ms, mn = m.get(key, (None, 0))
        ss, sn = s.get(key, (None, 0))
        rows.append(ActionRow(key[0], key[1], ms, mn, ss, sn))
    return rows


def write_action_rows(path: str | Path, rows: Iterable[ActionRow]) -> None:
    """actions.csv: resource, kind, measured and simulated mean seconds and counts, error %."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([fd.name for fd in fields(ActionRow)] + ["error_pct"])
        for r in rows:
            err = r.error_pct
            w.writerow([*astuple(r), "" if err is None or math.isnan(err) else f"{err:.3f}"])


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
