"""Tests of nodes.throughput: per-link rates from send events, the window, the drift test."""

from __future__ import annotations

import pytest

from mpsl.trace import Event
from nodes.throughput import drifted, drifts, link_rate, message_mbps


def ev(link: str, t1: float, mbps: float, nbytes: int = 125_000) -> Event:
    """A message of `nbytes` that ended at `t1` after taking its time at `mbps`."""
    return Event("a", link, ">b:ACT0", 0, 0, 0, t1 - nbytes * 8 / (mbps * 1e6), t1, nbytes)


def test_message_rate_and_unshaped_messages() -> None:
    assert message_mbps(ev("a->b", 1.0, 10.0)) == pytest.approx(10.0)
    assert message_mbps(Event("a", "a->b", ">b:ACT0", 0, 0, 0, 1.0, 1.0, 100)) is None


def test_the_window_reads_the_median_of_its_messages() -> None:
    events = [ev("a->b", t, 10.0) for t in (1, 2, 3)] + [ev("a->c", 3.5, 99.0)]
    events += [ev("a->b", t, 2.0) for t in (4, 5)]
    # within 3.5 s of the latest (5): 2, 3, 4, 5 -> rates 10, 10, 2, 2: the lower median
    assert link_rate(events, {"a->b"}, 3.5) == pytest.approx(2.0)
    assert link_rate(events, {"a->b"}, 10.0) == pytest.approx(10.0)  # three of five at 10
    assert link_rate(events, {"a->b"}, 0.5) == pytest.approx(2.0)
    assert link_rate(events, {"a->b", "a->c"}, 1.0) == pytest.approx(2.0)
    assert link_rate(events, {"x->y"}, 1.0) is None


def test_drift_against_the_assumed_rate() -> None:
    assert not drifted(12.0, 10.0, 0.3) and drifted(14.0, 10.0, 0.3)
    assert drifted(6.0, 10.0, 0.3) and not drifted(None, 10.0, 0.3)
    assert drifted(5.0, None, 0.3)
    assert drifts({"owner0": 2.0, "owner1": 10.0, "owner2": None},
                  {"owner0": 10.0, "owner1": 10.0}, 0.3) == ["owner0"]


def test_a_window_of_zero_reads_the_latest_message() -> None:
    events = [ev("a->b", 1, 10.0), ev("a->b", 3, 2.0), ev("a->b", 2, 7.0)]
    assert link_rate(events, {"a->b"}, 0.0) == pytest.approx(2.0)
