"""planner.batched: a compute node's pass time when g owners' micro-batches run in one call."""

from __future__ import annotations

import csv

import pytest

from planner.batched import BatchedProfile


def test_factor_is_the_measured_ratio_interpolated_in_owners_per_call():
    prof = BatchedProfile.from_times({2: (1.0, 0.8), 4: (1.0, 0.6), 16: (2.0, 0.8)})
    assert prof.sizes == (1, 2, 4, 16)
    assert prof.factor(1) == 1.0 and prof.factor(0) == 1.0
    assert prof.factor(2) == pytest.approx(0.8) and prof.factor(4) == pytest.approx(0.6)
    assert prof.factor(3) == pytest.approx(0.7)
    assert prof.factor(10) == pytest.approx(0.5)  # halfway from 0.6 (g 4) to 0.4 (g 16)
    assert prof.factor(64) == pytest.approx(0.4)  # past the largest: its value
    assert prof.pass_time(2.0, 4) == pytest.approx(1.2)
    assert prof.busy_time([1.0, 1.0], [0.5], owners=16) == pytest.approx(0.8 + 0.5)


def test_a_profile_is_read_from_the_benchmarks_csv(tmp_path):
    path = tmp_path / "batched.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["part", "norm", "K", "seq_ms_per_mb",
                                           "batched_ms_per_mb"])
        w.writeheader()
        w.writerows([{"part": "server", "norm": "none", "K": 4, "seq_ms_per_mb": 1.2,
                      "batched_ms_per_mb": 0.8},
                     {"part": "server", "norm": "group", "K": 4, "seq_ms_per_mb": 1.0,
                      "batched_ms_per_mb": 0.9},
                     {"part": "middle", "norm": "none", "K": 4, "seq_ms_per_mb": 1.5,
                      "batched_ms_per_mb": 1.2}])
    assert BatchedProfile.read(path).factor(4) == pytest.approx(0.8 / 1.2)
    assert BatchedProfile.read(path, norm="group").factor(4) == pytest.approx(0.9)
    assert BatchedProfile.read(path, part="middle").factor(4) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="no rows"):
        BatchedProfile.read(path, norm="batch")


def test_times_must_be_positive_and_sizes_at_least_one():
    with pytest.raises(ValueError):
        BatchedProfile.from_times({})
    with pytest.raises(ValueError):
        BatchedProfile.from_times({0: (1.0, 1.0)})
    with pytest.raises(ValueError):
        BatchedProfile.from_times({4: (1.0, 0.0)})
