"""Warnings: memory estimates over memory_mb, folded when many owners exceed it."""

from __future__ import annotations

from mpsl.cli.checks import MIB, data_warnings, memory_caps, over_caps
from mpsl.topology import parse
from tests.mpsl.cli.conftest import TOPOLOGY


def topo(**changes):
    return parse({**TOPOLOGY, **changes}, "t.yaml")


def test_over_caps_names_node_estimate_and_cap():
    t = topo(data_owners={"count": 2, "memory_mb": 1},
             compute_nodes=[{"name": "server", "address": "tcp://127.0.0.1:5590",
                             "memory_mb": 4}])
    assert memory_caps(t) == {"owner0": 1, "owner1": 1, "server": 4}
    got = over_caps(t, {"owner0": int(1.5 * MIB), "owner1": MIB, "server": 5 * MIB,
                        "aggregator": 10 * MIB}, "plan #2 (ilp#2)")
    assert got == [
        "owner0: plan #2 (ilp#2) needs about 1.5 MB (parameters, optimizer state, activations "
        "in flight, message buffers), more than its memory_mb 1",
        "server: plan #2 (ilp#2) needs about 5 MB (parameters, optimizer state, activations "
        "in flight, message buffers), more than its memory_mb 4"]


def test_over_caps_folds_many_owners():
    t = topo(data_owners={"count": 5, "memory_mb": 1})
    got = over_caps(t, {f"owner{k}": (2 + k) * MIB for k in range(5)})
    assert got == ["5 owners (owner4 the most): the plan needs about 6 MB (parameters, "
                   "optimizer state, activations in flight, message buffers), more than its "
                   "memory_mb 1"]


def test_no_data_warning_when_the_data_suffices():
    assert data_warnings(topo(), [128, 128]) == []
    assert data_warnings(topo(), [128, 15]) == [
        "training.batch_size (16) is larger than the data of owner1 (15 samples): every epoch "
        "there is one partial batch"]
