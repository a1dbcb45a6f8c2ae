"""Tests of mpsl.bandwidth: bandwidth schedules (steps, cycles, per owner), the replan section,
and their one-line errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mpsl.bandwidth import BandwidthSchedule, LinkRates, ReplanSpec, Step, link_rates
from mpsl.topology import TopologyError, parse

BASE: dict[str, Any] = {
    "name": "base",
    "model": {"name": "mlp"},
    "dataset": {"name": "digits"},
    "mode": "pipar",
    "plan": {"cuts": [2], "micro_batches": 2},
    "data_owners": {"count": 3, "uplink_mbps": 50, "downlink_mbps": 80},
    "compute_nodes": [{"name": "server", "address": "tcp://127.0.0.1:5590"}],
}


def doc(**owners: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    d["data_owners"].update(owners)
    return d


def test_steps_keep_earlier_rates_and_the_static_rate_before_the_first() -> None:
    topo = parse(doc(bandwidth_schedule=[{"at_s": 2, "uplink_mbps": 5},
                                         {"at_s": 4.5, "downlink_mbps": 1}]), "t.yaml")
    s = topo.owners[0].bandwidth_schedule
    assert s == BandwidthSchedule((Step(2.0, 5.0, None), Step(4.5, 5.0, 1.0)))
    up, down = link_rates(topo, "owner0", "server"), link_rates(topo, "server", "owner0")
    assert up is not None and down is not None and up.uplink and not down.uplink
    assert [up.rate_at(t) for t in (-1, 0, 1.99, 2, 4, 5, 1e6)] == [50, 50, 50, 5, 5, 5, 5]
    assert [down.rate_at(t) for t in (0, 2, 4.49, 4.5, 100)] == [80, 80, 80, 1, 1]
    assert link_rates(topo, "server", "aggregator") is None
    assert [c.at_s for c in s.changes(3.0)] == [2.0]


def test_a_cycle_repeats_from_the_start_and_overrides_are_per_owner() -> None:
    cycle = {"period_s": 10, "cycle": [{"uplink_mbps": 4, "downlink_mbps": 8},
                                       {"uplink_mbps": 20}, {"uplink_mbps": 100,
                                                             "downlink_mbps": 100}]}
    topo = parse(doc(bandwidth_schedule=cycle,
                     overrides=[{"index": 1, "bandwidth_schedule": [{"at_s": 1,
                                                                     "uplink_mbps": 2}]}]),
                 "t.yaml")
    s = topo.owners[0].bandwidth_schedule
    assert s is not None and s.cycle_s == 30
    r = LinkRates(50, s, True)
    times = (0, 9.9, 10, 25, 30, 41, 55, 65)
    assert [r.rate_at(t) for t in times] == [4, 4, 20, 100, 4, 20, 100, 4]
    assert [LinkRates(80, s, False).rate_at(t) for t in (0, 15, 25)] == [8, 8, 100]
    assert [c.at_s for c in s.changes(35)] == [0, 10, 20, 30]
    assert topo.owners[1].bandwidth_schedule == BandwidthSchedule((Step(1.0, 2.0, None),))
    assert topo.owners[2].bandwidth_schedule == s
    assert topo.replan == ReplanSpec()  # off unless the section is there


def test_replan_section() -> None:
    d = doc()
    d["replan"] = {"threshold": 0.5, "min_interval_s": 3, "planner": "fixed", "cuts": [1],
                   "micro_batches": 3}
    spec = parse(d, "t.yaml").replan
    assert spec == ReplanSpec(True, 0.5, 3.0, 5.0, "fixed", (1,), 3)
    d["replan"] = {}
    assert parse(d, "t.yaml").replan == ReplanSpec(enabled=True)
    d["replan"] = {"planner": "fixed", "owner_cuts": [{"owner": 0, "cuts": [1]},
                                                      {"owner": 2, "cuts": [3]}]}
    assert parse(d, "t.yaml").replan.owner_cuts == ((0, (1,)), (2, (3,)))
    d["data_owners"]["overrides"] = [{"index": 1, "cuts": [3]}]  # per-owner cuts re-plan too
    assert parse(d, "t.yaml").replan.owner_cuts == ((0, (1,)), (2, (3,)))


SCHED = "data_owners.bandwidth_schedule"


@pytest.mark.parametrize("change, field, fragment", [
    ({"data_owners": {"bandwidth_schedule": 5}}, SCHED, "a non-empty list"),
    ({"data_owners": {"bandwidth_schedule": []}}, SCHED, "a non-empty list"),
    ({"data_owners": {"bandwidth_schedule": [{"at_s": 1}]}}, SCHED + "[0].uplink_mbps",
     "uplink_mbps or downlink_mbps"),
    ({"data_owners": {"bandwidth_schedule": [{"uplink_mbps": 1}]}}, SCHED + "[0].at_s",
     "missing"),
    ({"data_owners": {"bandwidth_schedule": [{"at_s": 2, "uplink_mbps": 1},
                                             {"at_s": 2, "uplink_mbps": 3}]}},
     SCHED + "[1].at_s", "more than the step before"),
    ({"data_owners": {"bandwidth_schedule": [{"at_s": 1, "uplink_mbps": 0}]}},
     SCHED + "[0].uplink_mbps", "a positive number"),
    ({"data_owners": {"bandwidth_schedule": [{"at_s": 1, "uplink_mbps": 1, "rate": 2}]}},
     SCHED + "[0].rate", "no such field"),
    ({"data_owners": {"bandwidth_schedule": {"cycle": [{"uplink_mbps": 1}]}}},
     SCHED + ".period_s", "missing"),
    ({"data_owners": {"bandwidth_schedule": {"cycle": [], "period_s": 1}}},
     SCHED + ".cycle", "a non-empty list"),
    ({"data_owners": {"overrides": [{"index": 0, "bandwidth_schedule": [{"at_s": -1,
                                                                         "uplink_mbps": 1}]}]}},
     "data_owners.overrides[0].bandwidth_schedule[0].at_s", "a number >= 0"),
    ({"replan": {"threshold": 0}}, "replan.threshold", "a positive number"),
    ({"replan": {"planner": "ilp"}}, "replan.planner", "one of aps, fixed"),
    ({"replan": {"cuts": [1]}}, "replan.planner", "fixed with cuts"),
    ({"replan": {"planner": "fixed", "cuts": [1, 2]}}, "replan.cuts", "1 cut(s)"),
    ({"replan": {}, "mode": "fl"}, "replan", "no re-planning with mode fl"),
    ({"replan": {"owner_cuts": [{"owner": 0, "cuts": [1]}]}}, "replan.planner",
     "fixed with cuts, owner_cuts"),
    ({"replan": {"planner": "fixed", "owner_cuts": [{"owner": 0}]}}, "replan.owner_cuts",
     "a list of {owner: index"),
    ({"replan": {"planner": "fixed", "owner_cuts": [{"owner": 1, "cuts": [1]},
                                                    {"owner": 0, "cuts": [1]}]}},
     "replan.owner_cuts", "distinct owners, in order"),
    ({"replan": {"planner": "fixed", "owner_cuts": [{"owner": 3, "cuts": [1]}]}},
     "replan.owner_cuts[0].owner", "an owner index below 3"),
    ({"replan": {"planner": "fixed", "owner_cuts": [{"owner": 0, "cuts": [1, 2]}]}},
     "replan.owner_cuts[0].cuts", "1 cut(s)"),
    ({"replan": {"planner": "fixed", "owner_cuts": [{"owner": 1, "cuts": [1]}]},
      "data_owners": {"overrides": [{"index": 1, "cuts": [3]}]}},
     "replan.owner_cuts[0].owner", "data_owners.overrides does not give"),
    ({"replan": {}, "failure": {"checkpoint": True}}, "replan", "failure.checkpoint"),
])
def test_errors_name_the_field(change: dict[str, Any], field: str, fragment: str) -> None:
    d = copy.deepcopy(BASE)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(d.get(key), dict):
            d[key].update(value)
        else:
            d[key] = value
    with pytest.raises(TopologyError) as info:
        parse(d, "t.yaml")
    msg = str(info.value)
    assert info.value.field == field, msg
    assert "\n" not in msg and msg.startswith(f"t.yaml: field '{field}'") and fragment in msg, msg
