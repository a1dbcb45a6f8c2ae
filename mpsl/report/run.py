"""A run folder's report: the measured timeline beside the simulated one, the curves, busy
time per node, and actions.csv (every action kind, measured against simulated)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpsl.metrics import ActionRow, compare_actions, write_action_rows
from mpsl.report.busy import Breakdown, busy_breakdown, draw_busy
from mpsl.report.curves import draw_curves
from mpsl.report.timeline import draw_timeline
from mpsl.trace import Event

FILES = ("timeline.png", "curves.png", "busy.png", "actions.csv")


@dataclass
class RunReport:
    """What `write_report` wrote, and the numbers behind it."""

    files: list[Path]
    actions: list[ActionRow]
    busy: list[tuple[str, Breakdown]]  # ("measured", ...), ("simulated", ...)


def write_report(run_dir: str | Path, results: Mapping[str, Any], measured: Sequence[Event],
                 simulated: Sequence[Event], simulated_s: float,
                 chain: Sequence[str] = ()) -> RunReport:
    """Draw and write FILES into `run_dir`. `measured` is the run's trace in wall-clock time
    (shifted here to results.json `t_start`), `simulated` the simulation of the same plan,
    from 0, lasting `simulated_s`."""
    run_dir = Path(run_dir)
    t_start = results.get("t_start")
    if t_start is None:
        t_start = min((e.t0 for e in measured), default=0.0)
    shifted = [e.shifted(-t_start) for e in measured]
    title = f"{results.get('topology', '')} {results.get('mode', '')}".strip()
    nodes = list(results.get("nodes", {}))
    busy = [("measured", busy_breakdown(shifted, results["summary"]["train_s"], nodes)),
            ("simulated", busy_breakdown(simulated, simulated_s, nodes))]
    rows = compare_actions(shifted, simulated)
    write_action_rows(run_dir / FILES[3], rows)
    files = [
        draw_timeline([("measured", shifted), ("simulated", simulated)], run_dir / FILES[0],
                      f"{title}: measured and simulated", chain),
        draw_curves(results, run_dir / FILES[1]),
        draw_busy(busy, run_dir / FILES[2], f"{title}: busy and idle time per node", chain),
        run_dir / FILES[3],
    ]
    return RunReport(files, rows, busy)


def action_dicts(rows: Sequence[ActionRow]) -> list[dict[str, Any]]:
    """actions.csv's rows as JSON objects (error_pct included)."""
    return [{"resource": r.resource, "kind": r.kind, "measured_s": r.measured_s,
             "measured_n": r.measured_n, "simulated_s": r.simulated_s,
             "simulated_n": r.simulated_n, "error_pct": r.error_pct} for r in rows]
