"""Tests of bench.stats: errors, epoch times, held-out and paired scores, ranks, targets,
samples, duration estimates, trace windows and per-action-class errors."""

from __future__ import annotations

import math

import pytest

from bench import stats
from mpsl.metrics import ActionRow, compare_actions
from mpsl.names import CPU
from mpsl.trace import Event


def test_pct_error_and_paired_errors() -> None:
    assert stats.pct_error(0.9, 1.0) == pytest.approx(-10.0)
    assert stats.pct_error(3.0, 2.0) == pytest.approx(50.0)
    assert stats.paired_errors([1.1, 2.0], [1.0, 2.5]) == pytest.approx([10.0, -20.0])
    with pytest.raises(ValueError):
        stats.paired_errors([1.0], [1.0, 2.0])


def test_median_and_spread() -> None:
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median(x for x in (1.0, 4.0)) == 2.5
    assert stats.spread_pct([1.0, 1.5, 2.0]) == pytest.approx(100 * 1.0 / 1.5)
    assert stats.spread_pct([5.0]) == 0.0


def test_epoch_times_leave_out_the_warm_up() -> None:
    walls = [9.0, 1.0, 2.0, 6.0]
    assert stats.mean_after_warmup(walls) == 3.0
    assert stats.median_after_warmup(walls) == 2.0
    assert stats.median_after_warmup(walls, warmup=2) == 4.0


def test_error_targets_judge_median_and_max() -> None:
    rows = stats.error_targets([-1.0, 1.5, -4.0], "held-out")
    assert [(r["value"], r["met"]) for r in rows] == [(1.5, True), (4.0, True)]
    rows = stats.error_targets([-1.0, 2.5, -6.0], "x")
    assert [(r["value"], r["met"]) for r in rows] == [(2.5, False), (6.0, False)]
    assert rows[0]["metric"] == "epoch time, median |error| %, x"
    assert rows[0]["target"] == "<= 2" and rows[1]["target"] == "<= 5"


def test_rank_counts_strictly_faster() -> None:
    times = {"a": 1.0, "b": 0.5, "c": 1.0, "d": 2.0}
    assert stats.rank(times, "a") == 2
    assert stats.rank(times, "c") == 2
    assert stats.rank(times, "b") == 1
    assert stats.rank(times, "d") == 4


def test_held_out_score_selects_on_the_first_half_and_is_unclipped() -> None:
    runs = {"plan": [1.0, 1.0, 0.9, 0.9], "other": [0.8, 0.8, 1.0, 1.0]}
    picked, score = stats.held_out_score(runs, "plan")
    assert picked == "other"
    assert score == pytest.approx(1.0 / 0.9)  # above 1: the planned plan was faster


def test_held_out_score_of_the_planned_plan_is_one() -> None:
    runs = {"plan": [1.0, 1.2, 1.1, 1.3], "other": [1.5, 1.6, 0.5, 0.5]}
    assert stats.held_out_score(runs, "plan") == ("plan", 1.0)
    picked, score = stats.held_out_score(runs, "plan", split=3)
    assert picked == "plan" and score == 1.0
    picked, score = stats.held_out_score(runs, "plan", split=1)
    assert picked == "plan"


def test_held_out_score_below_one() -> None:
    runs = {"plan": [2.0, 2.0, 2.0, 2.0], "best": [1.0, 1.0, 1.5, 1.0]}
    picked, score = stats.held_out_score(runs, "plan")
    assert picked == "best" and score == pytest.approx(1.25 / 2.0)


def test_paired_held_out_score_cancels_round_drift() -> None:
    # round 2 is twice as slow for every plan: the plain medians would mix that in
    runs = {"plan": [1.0, 1.0, 2.0, 1.1], "other": [1.1, 1.1, 2.2, 1.0]}
    picked, score = stats.paired_held_out_score(runs, "plan")
    assert picked == "plan" and score == 1.0
    runs = {"plan": [1.1, 1.1, 2.2, 1.1], "other": [1.0, 1.0, 2.0, 1.0]}
    picked, score = stats.paired_held_out_score(runs, "plan")
    assert picked == "other"
    assert score == pytest.approx(1.0 / 1.1)


def test_score_targets() -> None:
    rows = stats.score_targets([1.0, 1.02, 0.995, 1.0], "held-out")
    assert rows[0]["value"] == 0.995 and rows[0]["met"] is True
    assert rows[1]["value"] == 75.0 and rows[1]["met"] is False
    rows = stats.score_targets([1.0] * 9 + [0.98], "x")
    assert rows[0]["met"] is False
    assert rows[1]["value"] == 90.0 and rows[1]["met"] is True
    assert rows[0]["target"] == ">= 0.99" and rows[1]["target"] == ">= 90"


def test_seeded_sample_is_fixed_and_keeps_order() -> None:
    items = list(range(20))
    a = stats.seeded_sample(items, 5, seed=3)
    assert a == stats.seeded_sample(items, 5, seed=3)
    assert len(a) == 5 and a == sorted(a) and set(a) <= set(items)
    assert a != stats.seeded_sample(items, 5, seed=4)
    assert stats.seeded_sample(items, None, seed=3) == items
    assert stats.seeded_sample(items[:3], 5, seed=3) == [0, 1, 2]
    assert stats.seeded_sample(items, 3, seed=0) == [1, 12, 13]  # random.Random(0)


def test_expected_duration() -> None:
    assert stats.expected_duration([1.0, 2.0], epochs=2, overhead_s=5.0) == 16.0
    assert stats.expected_duration([1.0], epochs=4, overhead_s=0.0, ratio=1.5) == 6.0


def ev(node: str, action: str, owner: int | None, it: int | None, t0: float, t1: float,
       resource: str = CPU) -> Event:
    return Event(node, resource, action, owner, it, None, t0, t1)


def test_steady_events_drop_the_first_epoch_by_iteration_or_round() -> None:
    events = [
        ev("owner0", "0F0", 0, 1, 0, 1), ev("owner0", "0F0", 0, 2, 1, 2),  # 2 iters per epoch
        ev("owner1", "0F0", 1, 2, 0, 1), ev("owner1", "0F0", 1, 3, 1, 2),  # 3 iters per epoch
        ev("aggregator", "AVG", None, 0, 0, 1), ev("aggregator", "AVG", None, 1, 1, 2),
        ev("owner0", ">aggregator:PARAMS", 0, 0, 0, 1, "owner0->aggregator"),
        ev("owner0", ">aggregator:PARAMS", 0, 1, 1, 2, "owner0->aggregator"),
        ev("node1", "STEP1", None, 0, 0, 1),  # no owner: kept
        ev("owner0", "STEP", 0, None, 0, 1),  # no iteration: kept
    ]
    kept = stats.steady_events(events, iterations=[2, 3], rounds=1)
    assert [(e.node, e.action, e.iter) for e in kept] == [
        ("owner0", "0F0", 2), ("owner1", "0F0", 3), ("aggregator", "AVG", 1),
        ("owner0", ">aggregator:PARAMS", 1), ("node1", "STEP1", 0), ("owner0", "STEP", None)]
    assert len(stats.steady_events(events, [2, 3], rounds=2, warmup=0)) == len(events)


def test_epoch_windows_and_idle_per_epoch() -> None:
    assert stats.epoch_windows([2.0, 3.0, 1.0], start=1.0) == [(1.0, 3.0), (3.0, 6.0),
                                                               (6.0, 7.0)]
    events = [ev("n", "0F0", 0, 0, 0.0, 2.0),  # all in epoch 1 (the warm-up)
              ev("n", "0F1", 0, 1, 2.5, 3.5),  # straddles epochs 2 and 3: 0.5 s in each
              ev("n", "0B1", 0, 1, 3.5, 3.75),
              ev("n", ">m:ACT1", 0, 1, 2.0, 4.0, "n->m"),  # a link: not the processor
              ev("m", "1F1", 0, 1, 2.0, 4.0)]  # another node
    walls = [2.0, 1.0, 2.0]
    assert stats.cpu_busy_in(events, "n", 2.0, 3.0) == 0.5
    assert stats.cpu_busy_in(events, "n", 3.0, 5.0) == 0.75
    # epochs 2 and 3: idle 1 - 0.5 and 2 - 0.75
    assert stats.idle_per_epoch(events, "n", walls) == pytest.approx((0.5 + 1.25) / 2)
    assert stats.idle_per_epoch(events, "n", walls, warmup=0) == pytest.approx(
        (0.0 + 0.5 + 1.25) / 3)


def test_node_and_action_classes() -> None:
    assert stats.node_class("owner12") == "owner"
    assert stats.node_class("aggregator") == "aggregator"
    assert stats.node_class("node2") == "compute"
    assert stats.action_class("owner3", "0F") == ("owner", "0F")
    assert stats.action_class("node1", "STEP1") == ("compute", "STEP1")
    assert stats.action_class("owner0->node1", ">node1:ACT") == ("owner->compute", "ACT")
    assert stats.action_class("node1->node2", ">node2:ACT") == ("compute->compute", "ACT")
    assert stats.action_class("aggregator->owner1", ">owner1:GLOBAL") == (
        "aggregator->owner", "GLOBAL")


def test_class_errors_pool_the_nodes_of_a_class() -> None:
    rows = [ActionRow("owner0", "0F", 1.0, 2, 1.1, 2),
            ActionRow("owner1", "0F", 2.0, 2, 1.9, 2),  # pooled: 1.5 measured, 1.5 simulated
            ActionRow("owner0->node1", ">node1:ACT", 0.5, 4, 0.45, 4),
            ActionRow("owner1->node1", ">node1:ACT", 0.5, 4, 0.45, 4),
            ActionRow("node1", "1F", 1.0, 8, None, 0),  # not simulated: left out
            ActionRow("node1", "STEP1", 0.0, 1, 0.1, 1)]  # measured at 0 s: left out
    errs = stats.class_errors(rows)
    assert errs == {("owner", "0F"): pytest.approx(0.0),
                    ("owner->compute", "ACT"): pytest.approx(-10.0)}


def test_class_errors_weigh_by_count_and_come_from_compare_actions() -> None:
    measured = [ev("owner0", "0F0", 0, 0, 0.0, 1.0), ev("owner0", "0F1", 0, 0, 1.0, 2.0),
                ev("owner1", "0F0", 1, 0, 0.0, 4.0)]  # owner mean: 6 s / 3 = 2 s
    simulated = [ev("owner0", "0F0", 0, 0, 0.0, 1.5), ev("owner1", "0F0", 1, 0, 0.0, 3.0)]
    errs = stats.class_errors(compare_actions(measured, simulated))  # simulated mean 2.25 s
    assert errs == {("owner", "0F"): pytest.approx(12.5)}


def test_median_class_errors() -> None:
    per_run = [{("owner", "0F"): 1.0, ("compute", "1F"): -2.0},
               {("owner", "0F"): 3.0},
               {("owner", "0F"): -5.0, ("compute", "1F"): 4.0}]
    assert stats.median_class_errors(per_run) == {("compute", "1F"): (1.0, 2),
                                                  ("owner", "0F"): (1.0, 3)}
    assert stats.median_class_errors([]) == {}
    assert math.isclose(stats.median_class_errors([{("a", "b"): 2.5}])[("a", "b")][0], 2.5)
