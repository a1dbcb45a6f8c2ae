"""Tests of mpsl.schedule_text: the grid and the CSV of a schedule."""

from __future__ import annotations

import pytest

from mpsl.plan import Plan
from mpsl.schedule import iteration_tasks
from mpsl.schedule_text import dump_csv, format_grid, load_csv, tasks_from_csv, tasks_to_csv

O = "owner"


def test_grid_of_pipar_two_micro_batches() -> None:
    assert format_grid(Plan(5, (2,), (O, "server"), (2,))) == "\n".join([
        "step  owner0  server",
        "   0  0F0",
        "   1  0F1     1F0",
        "   2          1B0",
        "   3  0B0     1F1",
        "   4          1B1",
        "   5  0B1     STEP1",
        "   6  STEP",
    ])


def test_grid_of_1f1b_alternates_after_the_window() -> None:
    grid = format_grid(Plan(5, (2,), (O, "server"), (4,), "1f1b", 2)).splitlines()
    owner = [line.split()[1] for line in grid[1:] if len(line) > 6 and line[6] != " "]
    assert owner == ["0F0", "0F1", "0B0", "0F2", "0B1", "0F3", "0B2", "0B3", "STEP"]


@pytest.mark.parametrize("sched", ["gpipe", "1f1b"])
def test_csv_round_trip(tmp_path, sched: str) -> None:
    plan = Plan(8, (1, 3, 6), (O, "n1", "n2", O), (3,), sched, 1 if sched == "1f1b" else None)
    tasks = iteration_tasks(plan, 0, 3)
    text = tasks_to_csv(tasks)
    assert text.splitlines()[0] == "node,owner,trigger,actions"
    burst = {"gpipe": "0F0 >n1:ACT0 0F1 >n1:ACT1 0F2 >n1:ACT2",
             "1f1b": "0F0 >n1:ACT0"}[sched]
    assert text.splitlines()[1] == f"owner0,0,,{burst}"
    assert "node2" not in text and "n2,0,<n1:ACT0,2F0 >owner0:ACT0" in text.splitlines()
    assert tasks_from_csv(text) == tasks
    dump_csv(tasks, tmp_path / "s.csv")
    assert load_csv(tmp_path / "s.csv") == tasks


def test_csv_with_other_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="columns node, owner, trigger, actions"):
        tasks_from_csv("a,b\n1,2\n")
