"""planner.batchprofile: the batched profile measured on this host for a batching node's part."""

from __future__ import annotations

import dataclasses

from mpsl.topology import Topology
from planner.batchprofile import measure_topology, topology_part

from .util import topo


def batching(t: Topology, mode: str = "auto") -> Topology:
    nodes = tuple(dataclasses.replace(c, batch_owners=mode) for c in t.compute_nodes)
    return dataclasses.replace(t, compute_nodes=nodes)


def test_the_part_measured_is_the_batching_nodes():
    t = topo(plan={"cuts": [2], "micro_batches": 2})
    assert topology_part(t, 5) is None  # off
    assert topology_part(batching(t), 5) == (2, 5)
    auto = topo(plan={"auto": True, "micro_batches": 2})
    assert topology_part(batching(auto), 6) == (3, 6)  # no cuts yet: the second half
    sl = topo(mode="sl", plan={"cuts": [2], "micro_batches": 2})
    assert topology_part(batching(sl), 5) is None


def test_a_measured_profile_has_every_size_and_positive_ratios():
    prof = measure_topology(batching(topo(plan={"cuts": [1], "micro_batches": 2})), repeats=1)
    assert prof is not None
    assert prof.sizes == (1, 2, 4, 8, 16)
    assert prof.ratios[0] == 1.0 and all(r > 0 for r in prof.ratios)
