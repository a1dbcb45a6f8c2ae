"""The simulator on per-owner plans: each owner's tasks by its own cuts, an FL owner beside
split owners, compute nodes that serve parts of other sizes."""

from __future__ import annotations

import pytest

from mpsl.plan import make_plan
from planner.cost import simulate

from .util import layer, profile, topo


def setting(overrides):
    t = topo(model={"name": "mlp"}, training={"batch_size": 4},
             plan={"cuts": [1], "micro_batches": 2},
             data_owners={"count": 3, "uplink_mbps": 80, "downlink_mbps": 80,
                          "overrides": overrides})
    prof = profile(layer(1e-3, 2e-3, opt=1e-4, out=500, params=4000, act=100),
                   layer(2e-3, 3e-3, opt=2e-4, out=300, params=8000, act=100),
                   layer(1e-3, 1e-3, opt=1e-4, out=200, params=2000, act=100),
                   layer(1e-3, 2e-3, opt=1e-4, out=10, params=1000, act=10))
    return t, prof


def test_overrides_of_the_common_cuts_simulate_as_one_plan():
    t, prof = setting([{"index": 1, "cuts": [1]}])
    plain, _ = setting([])
    a = simulate(t, make_plan(t, 4), prof, iterations=3, steady=False)
    b = simulate(plain, make_plan(plain, 4), prof, iterations=3, steady=False)
    assert a.epoch_s == b.epoch_s and a.busy_s == b.busy_s


def test_each_owner_runs_its_own_parts():
    t, prof = setting([{"index": 1, "cuts": [3], "micro_batches": 1}, {"index": 2, "mode": "fl"}])
    plan = make_plan(t, 4)
    est = simulate(t, plan, prof, iterations=2, record=True, steady=False)
    assert est.events is not None

    def durations(node, owner, action):
        return [e.t1 - e.t0 for e in est.events if e.resource_name == node and e.owner == owner
                and e.action == action]

    # owner 0: layer 0 on the owner, 1..3 on the server, micro-batches of 2 samples
    assert durations("owner0", 0, "0F0")[0] == pytest.approx(2 * 1e-3)
    assert durations("server", 0, "1F0")[0] == pytest.approx(2 * (2e-3 + 1e-3 + 1e-3))
    # owner 1: layers 0..2 on the owner, 3 on the server, one micro-batch of 4
    assert durations("owner1", 1, "0F0")[0] == pytest.approx(4 * (1e-3 + 2e-3 + 1e-3))
    assert durations("server", 1, "1F0")[0] == pytest.approx(4 * 1e-3)
    assert durations("server", 1, "STEP1")[0] == pytest.approx(1e-4)
    # owner 2 (FL): every layer on the owner, nothing on the server or its links
    assert durations("owner2", 2, "0F0")[0] == pytest.approx(2 * 5e-3)
    assert not [e for e in est.events if e.owner == 2 and e.resource_name != "owner2"
                and "aggregator" not in e.resource_name]
    assert est.epoch_s > 0
