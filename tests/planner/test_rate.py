"""planner.rate's test of a window of rounds: still settling, or steady enough to extrapolate
(the extrapolation itself is checked against the full simulation in test_fleet_sim)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from planner.rate import DRIFT, _error, _fleet, _mean_round, settling


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


def _series(owner0: list[float], classes: list[list[float]]) -> np.ndarray:
    """`_class_starts`' shape: column 0 owner 0's starts, then each class's mean start."""
    return np.stack([np.asarray(c) for c in (owner0, *classes)], axis=1)


def test_the_fleets_mean_round_is_extrapolated() -> None:
    """Two classes of 30 and 10 running owners: their mean rounds weighted by the owners."""
    a, b = _starts([4.0] * 4), _starts([4.4] * 4)
    assert _mean_round(_fleet(_series(a, [a, b]), np.array([30, 10]))) == 4.1


def test_owner_0s_own_jitter_counts_once_not_per_round() -> None:
    """Owner 0 strays +-0.02 s from the fleet's line, the fleet's mean start does not: 90
    rounds extrapolated from 4 are off by twice owner 0's jitter, its classes' by nothing;
    a class that strays as much costs (2m/n + 1) x its jitter."""
    fleet = _starts([4.3] * 4)
    owner0 = [t + (0.02 if i % 2 else 0.0) for i, t in enumerate(fleet)]
    one = np.array([100])
    assert _error(_series(owner0, [fleet]), 90, 4.3) == pytest.approx(0.04)
    assert _error(_series(fleet, [owner0]), 90, 4.3) == pytest.approx(
        90 * 0.0 + (2 * 90 / 4 + 1) * 0.02)
    assert _mean_round(_fleet(_series(owner0, [fleet]), one)) == pytest.approx(4.3)
