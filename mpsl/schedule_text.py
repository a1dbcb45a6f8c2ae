"""Schedules as text: one line per node, a node-by-step grid, and CSV that loads back.

    >>> print(format_grid(Plan(5, (2,), ("owner", "server"), (2,))))
    step  owner0  server
       0  0F0
       1  0F1     1F0
       2          1B0
       3  0B0     1F1
       4          1B1
       5  0B1     STEP1
       6  STEP

The grid comes from the dry run (one unit of time per pass and STEP, messages at once), so
it shows which actions overlap; a cell lists what starts on that node at that step.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from mpsl.actions import Task
from mpsl.dryrun import dry_run
from mpsl.names import CPU
from mpsl.plan import Plan
from mpsl.schedule import tasks_by_node

CSV_FIELDS = ("node", "owner", "trigger", "actions")


def format_tasks(tasks: Iterable[Task]) -> str:
    """One line per node, e.g. `owner0: [0F0 >server:ACT0] [<server:GRAD0 0B0] [STEP]`."""
    return "\n".join(
        f"{n}: " + " ".join(str(t) for t in ts) for n, ts in tasks_by_node(tasks).items()
    )


def format_grid(plan: Plan) -> str:
    """Every owner's iteration of `plan` as a step-by-node grid (see the module docstring)."""
    events = [e for e in dry_run(plan) if e.resource == CPU]
    nodes = list(dict.fromkeys(e.node for e in events))
    steps = sorted({e.t0 for e in events})
    cells: dict[tuple[float, str], list[str]] = {}
    for e in events:
        cells.setdefault((e.t0, e.node), []).append(e.action)
    rows = [["step", *nodes]]
    rows += [[f"{i:>4}", *(" ".join(cells.get((t, n), [])) for n in nodes)]
             for i, t in enumerate(steps)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip()
                     for r in rows)


def tasks_to_csv(tasks: Iterable[Task]) -> str:
    """CSV with one row per task, in list order: node, owner, trigger (or empty), actions."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for t in tasks:
        w.writerow([t.node, t.owner, "" if t.trigger is None else str(t.trigger),
                    " ".join(str(a) for a in t.actions)])
    return out.getvalue()


def tasks_from_csv(text: str) -> list[Task]:
    """The tasks of `tasks_to_csv` (the inverse)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and set(rows[0]) != set(CSV_FIELDS):
        raise ValueError(f"a schedule CSV has the columns {', '.join(CSV_FIELDS)}, "
                         f"not {', '.join(rows[0])}")
    out = []
    for r in rows:
        body = " ".join(w for w in (r["trigger"], r["actions"]) if w)
        out.append(Task.from_str(r["node"], int(r["owner"]), f"[{body}]"))
    return out


def dump_csv(tasks: Iterable[Task], path: str | Path) -> None:
    Path(path).write_text(tasks_to_csv(tasks))


def load_csv(path: str | Path) -> list[Task]:
    return tasks_from_csv(Path(path).read_text())
