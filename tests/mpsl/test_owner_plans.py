"""Tests of per-owner plans: topology overrides (`cuts`, `mode: fl`), Plan.for_owner, the plan
file's `owner_cuts`, the dry run over each owner's chain."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from mpsl.dryrun import check_schedule
from mpsl.plan import Plan, PlanError, check_plan_fits, make_plan, read_plan_file
from mpsl.schedule import iteration_tasks
from mpsl.topology import OWNER, TopologyError, parse

O = OWNER
BASE: dict[str, Any] = {
    "model": {"name": "vgg5"},
    "dataset": {"name": "digits"},
    "mode": "pipar",
    "plan": {"cuts": [2], "micro_batches": 4},
    "data_owners": {"count": 4, "overrides": [{"index": 1, "cuts": [1], "micro_batches": 2},
                                              {"index": 2, "mode": "fl"}]},
    "compute_nodes": [{"name": "server", "address": "tcp://127.0.0.1:5590"}],
}


def topo(overrides: Any = None, **changes: Any) -> Any:
    d = copy.deepcopy(BASE)
    if overrides is not None:
        d["data_owners"]["overrides"] = overrides
    d.update(changes)
    return parse(d, "het.yaml")


def test_overrides_give_each_owner_its_plan() -> None:
    t = topo()
    assert [o.cuts for o in t.owners] == [None, (1,), (), None]
    plan = make_plan(t, 5)
    assert plan.owner_cuts == ((1, (1,)), (2, ()))
    assert plan.micro_batches == (4, 2, 4, 4)
    assert not plan.uniform
    assert plan.for_owner(0) is plan and plan.for_owner(3) is plan
    one = plan.for_owner(1)
    assert one.cuts == (1,) and one.placement == (O, "server") and one.parts == [(0, 1), (1, 5)]
    fl = plan.for_owner(2)
    assert fl.cuts == () and fl.placement == (O,) and fl.num_parts == 1
    assert plan.is_fl_owner(2) and not plan.is_fl_owner(1)
    assert plan.owners_on("server") == [0, 1, 3]
    assert [g for g, _ in plan.groups()] == [[0, 3], [1], [2]]
    assert plan.describe() == ("owner0,3: owner[0:2) -> server[2:5); owner1: owner[0:1) -> "
                               "server[1:5); owner2: owner[0:5), N=4/2/4/4")


def test_no_overrides_is_the_plan_of_today() -> None:
    plan = make_plan(topo([]), 5)
    assert plan.uniform and plan.owner_cuts == ()
    assert "owner_cuts" not in plan.to_json()
    same = make_plan(topo([{"index": 1, "cuts": [2]}]), 5)  # the common cuts: no override
    assert same == plan


def test_plan_file_round_trips_owner_cuts(tmp_path: Any) -> None:
    plan = make_plan(topo(), 5)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_json()))
    back = read_plan_file(path)
    assert back == plan and back.for_owner(2).placement == (O,)
    check_plan_fits(back, topo(), 5)
    with pytest.raises(PlanError, match="owner 1 has cuts \\[2\\] in the plan"):
        check_plan_fits(make_plan(topo([]), 5), topo(), 5)


@pytest.mark.parametrize("bad, match", [
    ({"owner_cuts": [{"owner": 9, "cuts": [1]}]}, "owner_cuts: owners \\[9\\]"),
    ({"owner_cuts": [{"owner": 1, "cuts": [1, 2]}]}, "owner 1's cuts \\[1, 2\\]: 1 cut"),
    ({"owner_cuts": [{"owner": 1, "cuts": [7]}]}, "owner 1's cuts: cut 7 is out of range"),
    ({"owner_cuts": [{"owner": 1}]}, "field 'cuts'"),
    ({"owner_cuts": {"1": [1]}}, "field 'owner_cuts'"),
])
def test_plan_file_errors_name_the_field(tmp_path: Any, bad: dict[str, Any], match: str) -> None:
    data = {**make_plan(topo([]), 5).to_json(), **bad}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError, match=match) as err:
        read_plan_file(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, changes, match", [
    ([{"index": 1, "cuts": [1, 3]}], {}, "overrides \\(index 1\\).cuts.*1 cut"),
    ([{"index": 1, "cuts": []}], {}, "overrides\\[0\\].cuts.*mode: fl"),
    ([{"index": 1, "cuts": [3, 1]}], {}, "overrides\\[0\\].cuts"),
    ([{"index": 1, "cuts": [1], "mode": "fl"}], {}, "overrides\\[0\\].cuts.*no cuts"),
    ([{"index": 1, "mode": "sl"}], {}, "overrides\\[0\\].mode"),
    ([{"index": 1, "mode": "fl"}], {"mode": "sl"}, "overrides \\(index 1\\).mode.*mode sl"),
    ([{"index": 1, "cuts": [1]}], {"mode": "fl"}, "overrides \\(index 1\\).cuts.*mode fl"),
])
def test_topology_errors_name_the_field(overrides: Any, changes: dict[str, Any],
                                        match: str) -> None:
    with pytest.raises(TopologyError, match=match) as err:
        topo(overrides, **changes)
    assert "\n" not in str(err.value)


def test_a_cut_out_of_range_fails_before_any_node_starts() -> None:
    with pytest.raises(PlanError, match="het.yaml: owner 1's cuts: cut 9 is out of range"):
        make_plan(topo([{"index": 1, "cuts": [9]}]), 5)


def test_each_owner_runs_its_own_chain() -> None:
    plan = make_plan(topo(), 5)
    check_schedule(plan)  # every owner's iteration runs to its end
    fl = iteration_tasks(plan.for_owner(2), 2, 4)
    assert {t.node for t in fl} == {"owner2"}
    u = make_plan(topo([{"index": 0, "cuts": [1, 4]}, {"index": 1, "mode": "fl"}],
                       mode="mpsl", labels="local", plan={"cuts": [2, 3]}), 5)
    assert u.for_owner(0).parts == [(0, 1), (1, 4), (4, 5)]
    assert u.for_owner(1).placement == (O,)
    check_schedule(u)


def test_plan_rejects_bad_owner_cuts() -> None:
    with pytest.raises(PlanError, match="owners \\[1, 1\\]"):
        Plan(5, (2,), (O, "s"), (1, 1), owner_cuts=((1, (1,)), (1, (3,))))


def test_every_owner_fl_is_mode_fl() -> None:
    with pytest.raises(PlanError, match="every owner runs every layer"):
        Plan(5, (2,), (O, "s"), (1, 1), owner_cuts=((0, ()), (1, ())))
