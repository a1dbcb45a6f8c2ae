"""Tests of mpsl.trace and mpsl.metrics: events, busy time, bytes per link, the bottleneck bound,
per-action comparison, results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpsl.metrics import (
    ActionRow,
    action_means,
    bottleneck_bound,
    busy_seconds,
    compare_actions,
    link_bytes,
    write_action_rows,
    write_results,
)
from mpsl.names import CPU
from mpsl.trace import Event, events_from_rows, events_to_rows, read_events, write_events

EVENTS = [
    Event("owner0", CPU, "0F0", 0, 0, 0, 0.0, 1.5),
    Event("owner0", "owner0->server", ">server:ACT0", 0, 0, 0, 1.5, 2.0, bytes=1000),
    Event("server", CPU, "1F0", 0, 0, 0, 2.0, 2.25),
    Event("server", CPU, "1B0", 0, 0, 0, 2.25, 2.75),
    Event("server", "server->owner0", ">owner0:GRAD0", 0, 0, 0, 2.75, 3.0, bytes=400),
    Event("owner0", CPU, "0B0", 0, 0, 0, 3.0, 4.0),
    Event("owner1", "owner1->server", ">server:ACT0", 1, 0, 0, 0.0, 4.0, bytes=2000),
    Event("owner0", "owner0->server", ">server:ACT1", 0, 0, 1, 4.0, 4.5, bytes=1000),
]


def test_event_properties() -> None:
    e = Event("n", CPU, "0F2", 0, 1, 2, 1.0, 3.5)
    assert e.seconds == 2.5 and e.resource_name == "n" and e.bytes == 0 and e.kind == "0F"
    link = Event("n", "n->m", ">m:ACT2", 0, 1, 2, 1.0, 1.25, 10)
    assert link.resource_name == "n->m" and link.seconds == 0.25 and link.kind == ">m:ACT"
    avg = Event("aggregator", CPU, "AVG", None, 3, None, 0.0, 1.0)
    assert avg.kind == "AVG" and avg.owner is None


def test_shifted_counts_iterations_and_rounds_on() -> None:
    e = Event("owner0", CPU, "0F1", 0, 2, 1, 1.0, 2.0)
    assert e.shifted(10.0, iterations=5, rounds=2) == Event("owner0", CPU, "0F1", 0, 7, 1,
                                                           11.0, 12.0)
    up = Event("owner0", "owner0->aggregator", ">aggregator:PARAMS", 0, 1, None, 0.0, 1.0, 9)
    assert up.shifted(1.0, iterations=5, rounds=2).iter == 3
    avg = Event("server", CPU, "AVG1", None, 0, None, 0.0, 1.0)
    assert avg.shifted(0.0, iterations=5, rounds=2).iter == 2


def test_busy_seconds() -> None:
    assert busy_seconds(EVENTS) == {
        "owner0": 2.5,
        "owner0->server": 1.0,
        "server": 0.75,
        "server->owner0": 0.25,
        "owner1->server": 4.0,
    }
    assert busy_seconds([]) == {}
    assert busy_seconds(iter(EVENTS[:1])) == {"owner0": 1.5}  # any iterable


def test_link_bytes() -> None:
    assert link_bytes(EVENTS) == {
        "owner0->server": 2000, "server->owner0": 400, "owner1->server": 2000}
    assert link_bytes([Event("n", CPU, "0F0", 0, 0, 0, 0, 1, bytes=99)]) == {}
    assert link_bytes([]) == {}


def test_bottleneck_bound() -> None:
    assert bottleneck_bound(EVENTS) == ("owner1->server", 4.0)
    assert bottleneck_bound(EVENTS[:6]) == ("owner0", 2.5)
    assert bottleneck_bound([]) == ("", 0.0)


def test_bottleneck_bound_is_at_least_every_busy_time() -> None:
    name, bound = bottleneck_bound(EVENTS)
    assert all(bound >= v for v in busy_seconds(EVENTS).values())
    assert busy_seconds(EVENTS)[name] == bound


def test_events_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_events(path, EVENTS)
    lines = path.read_text().splitlines()
    assert len(lines) == len(EVENTS)
    assert json.loads(lines[1]) == {
        "node": "owner0", "resource": "owner0->server", "action": ">server:ACT0", "owner": 0,
        "iter": 0, "mb": 0, "t0": 1.5, "t1": 2.0, "bytes": 1000}
    assert read_events(path) == EVENTS
    write_events(str(path), [])
    assert path.read_text() == "" and read_events(str(path)) == []


def test_read_events_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_events(path, EVENTS[:2])
    path.write_text(path.read_text() + "\n  \n")
    assert read_events(path) == EVENTS[:2]


def test_rows_round_trip() -> None:
    rows = events_to_rows(EVENTS)
    assert rows[1] == ["owner0", "owner0->server", ">server:ACT0", 0, 0, 0, 1.5, 2.0, 1000]
    assert all(len(r) == 9 for r in rows)
    assert events_from_rows(rows) == EVENTS
    assert events_from_rows([r[:8] for r in rows])[0].bytes == 0  # bytes may be left out
    assert json.loads(json.dumps(rows)) == rows  # rows are plain data for messages
    assert events_to_rows([]) == [] and events_from_rows([]) == []


finite = st.floats(-1e6, 1e6, allow_nan=False)
events = st.builds(Event, st.text(min_size=1, max_size=8), st.sampled_from([CPU, "a->b", "b->a"]),
                   st.sampled_from(["0F1", "2B0", ">b:ACT3", ">a:GRAD0", "STEP", "AVG1"]),
                   st.one_of(st.none(), st.integers(0, 9)),
                   st.one_of(st.none(), st.integers(0, 99)),
                   st.one_of(st.none(), st.integers(0, 9)), finite, finite,
                   st.integers(0, 2**40))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(events, max_size=12))
def test_round_trips_any_events(tmp_path_factory: pytest.TempPathFactory,
                                evs: list[Event]) -> None:
    assert events_from_rows(events_to_rows(evs)) == evs
    path = tmp_path_factory.mktemp("ev") / "e.jsonl"
    write_events(path, evs)
    assert read_events(path) == evs
    assert sum(link_bytes(evs).values()) == sum(e.bytes for e in evs if e.resource != CPU)
    assert sum(busy_seconds(evs).values()) == pytest.approx(sum(e.seconds for e in evs),
                                                            rel=1e-9, abs=1e-6)


def test_action_means_and_comparison(tmp_path: Path) -> None:
    measured = EVENTS + [Event("owner0", CPU, "0F1", 0, 0, 1, 5.0, 5.5)]
    simulated = [Event("owner0", CPU, "0F0", 0, 0, 0, 0.0, 1.0),
                 Event("server", CPU, "STEP1", 0, 0, None, 0.0, 0.25)]
    means = action_means(measured)
    assert means[("owner0", "0F")] == (1.0, 2) and means[("owner0->server", ">server:ACT")] == (
        0.5, 2)
    rows = compare_actions(measured, simulated)
    by = {(r.resource, r.kind): r for r in rows}
    assert by[("owner0", "0F")] == ActionRow("owner0", "0F", 1.0, 2, 1.0, 1)
    assert by[("owner0", "0F")].error_pct == 0.0
    assert by[("server", "STEP1")].measured_s is None and by[("server", "STEP1")].error_pct is None
    assert by[("owner0", "0B")].simulated_n == 0 and by[("owner0", "0B")].error_pct is None
    assert ActionRow("n", "0F", 2.0, 1, 2.5, 1).error_pct == 25.0
    assert [r.resource for r in rows] == sorted(r.resource for r in rows)
    write_action_rows(tmp_path / "actions.csv", rows)
    table = read_csv(tmp_path / "actions.csv")
    assert table[0] == ["resource", "kind", "measured_s", "measured_n", "simulated_s",
                        "simulated_n", "error_pct"]
    assert ["owner0", "0F", "1.0", "2", "1.0", "1", "0.000"] in table
    assert ["server", "STEP1", "", "0", "0.25", "1", ""] in table


RESULTS = {
    "epochs": [
        {"epoch": 0, "wall_s": 12.5, "train_loss": 1.25, "test_accuracy": 0.5, "extra": 1},
        {"epoch": 1, "wall_s": 11.0, "train_loss": 0.75},
    ],
    "nodes": {
        "server": {"busy_s": 8.0, "idle_s": 3.0},
        "owner0": {"peak_rss_mb": 100, "busy_s": 9.5},
    },
    "links": {"owner0->server": {"bytes": 4096, "busy_s": 1.5}},
    "summary": {"mode": "pipar", "epoch_s": 11.75},
}


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_write_results(tmp_path: Path) -> None:
    write_results(tmp_path, RESULTS)
    text = (tmp_path / "results.json").read_text()
    assert json.loads(text) == RESULTS
    assert text == json.dumps(RESULTS, indent=2, sort_keys=True) + "\n"
    assert read_csv(tmp_path / "results.csv") == [
        ["section", "name", "key", "value"],
        ["epoch", "0", "wall_s", "12.5"],
        ["epoch", "0", "train_loss", "1.25"],
        ["epoch", "0", "test_accuracy", "0.5"],
        ["epoch", "1", "wall_s", "11.0"],
        ["epoch", "1", "train_loss", "0.75"],
        ["epoch", "1", "test_accuracy", ""],  # missing values are empty cells
        ["node", "owner0", "busy_s", "9.5"],
        ["node", "owner0", "peak_rss_mb", "100"],
        ["node", "server", "busy_s", "8.0"],
        ["node", "server", "idle_s", "3.0"],
        ["link", "owner0->server", "busy_s", "1.5"],
        ["link", "owner0->server", "bytes", "4096"],
        ["summary", "", "epoch_s", "11.75"],
        ["summary", "", "mode", "pipar"],
    ]


def test_write_results_empty_and_overwrites(tmp_path: Path) -> None:
    write_results(str(tmp_path), {"summary": {"x": 1}})
    write_results(tmp_path, {})
    assert json.loads((tmp_path / "results.json").read_text()) == {}
    assert read_csv(tmp_path / "results.csv") == [["section", "name", "key", "value"]]
