"""planner.rate's test of a window of rounds: still settling, or steady enough to extrapolate
(the extrapolation itself is checked against the full simulation in test_fleet_sim)."""

from __future__ import annotations

import itertools

from planner.rate import DRIFT, settling


def _starts(lengths: list[float]) -> list[float]:
    return [0.0, *itertools.accumulate(lengths)]


def test_rounds_of_one_length_are_steady() -> None:
    assert not settling(_starts([4.3] * 2))
    assert not settling(_starts([4.3] * 20))


def test_a_pipeline_still_filling_is_settling() -> None:
    """Rounds that lengthen as the queues fill (the first rounds of a fleet)."""
    assert settling(_starts([4.2, 4.25, 4.28, 4.29, 4.295, 4.297]))


def test_jitter_widens_the_drift_allowed() -> None:
    """Halves apart by a little more than DRIFT: settling when every round is alike, steady
    when the rounds jitter (+-0.7%) as a fleet's rounds that never repeat exactly do."""
    base = [4.3] * 6 + [4.3 * (1 + 1.2 * DRIFT)] * 6
    assert settling(_starts(base))
    wavy = [x + (0.03 if i % 2 else -0.03) for i, x in enumerate(base)]
    assert not settling(_starts(wavy))


def test_a_steady_trend_is_settling_however_long_the_window() -> None:
    """Rounds 0.05% longer each (within DRIFT over four rounds): from ten rounds on, the
    halves drift apart faster than the jitter the trend adds allows."""
    for n in (10, 20, 40, 64):
        lengths = [4.3 * (1 + 5e-4 * i) for i in range(n)]
        assert settling(_starts(lengths)), n
    assert not settling(_starts([4.3 * (1 + 5e-4 * i) for i in range(4)]))
