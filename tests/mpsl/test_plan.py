"""Tests of mpsl.plan: Plan's checks and accessors, and make_plan for every mode."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from mpsl.cuts import check_cuts
from mpsl.plan import (
    SINGLE_BATCH_MODES,
    Plan,
    PlanError,
    make_plan,
    owner_micro_batches,
    placement_for,
)
from mpsl.topology import OWNER, Topology, parse

O = OWNER

BASE: dict[str, Any] = {
    "model": {"name": "vgg5"},
    "dataset": {"name": "digits"},
    "mode": "pipar",
    "plan": {"cuts": [2], "micro_batches": 4},
    "data_owners": {"count": 3},
    "compute_nodes": [{"name": "server", "address": "tcp://127.0.0.1:5590"}],
}
TWO_NODES = [
    {"name": "node1", "address": "tcp://127.0.0.1:5590"},
    {"name": "node2", "address": "tcp://127.0.0.1:5591"},
]


def topo(**changes: Any) -> Topology:
    d = copy.deepcopy(BASE)
    for key, value in changes.items():
        if key == "owners":
            d["data_owners"].update(value)
        else:
            d[key] = value
    return parse(d, "plan.yaml")


# ----------------------------------------------------------------------------------------------
# Plan


def test_plan_accessors_u_shape() -> None:
    p = Plan(num_layers=5, cuts=(1, 2, 4), placement=(O, "node1", "node2", O),
             micro_batches=(2, 2))
    assert p.bounds == (0, 1, 2, 4, 5)
    assert p.parts == [(0, 1), (1, 2), (2, 4), (4, 5)]
    assert p.num_parts == 4
    assert p.labels_local
    assert p.parts_on(O) == [0, 3] and p.parts_on("node2") == [2] and p.parts_on("x") == []
    assert p.node_of(0, "owner1") == "owner1" and p.node_of(3, "owner1") == "owner1"
    assert p.node_of(1, "owner1") == "node1" and p.node_of(2, "owner0") == "node2"
    assert p.describe() == "owner[0:1) -> node1[1:2) -> node2[2:4) -> owner[4:5), N=2"


def test_plan_accessors_two_parts_and_single() -> None:
    p = Plan(5, (2,), (O, "server"), (3, 1, 3))
    assert p.bounds == (0, 2, 5) and p.parts == [(0, 2), (2, 5)]
    assert not p.labels_local
    assert p.parts_on("server") == [1]
    assert p.describe() == "owner[0:2) -> server[2:5), N=3/1/3"
    whole = Plan(7, (), (O,), (1,))
    assert whole.bounds == (0, 7) and whole.parts == [(0, 7)] and whole.num_parts == 1
    assert whole.labels_local  # the single part runs on the owner, with the labels
    assert whole.describe() == "owner[0:7), N=1"


def test_plan_is_frozen() -> None:
    p = Plan(5, (2,), (O, "server"), (1,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.cuts = (3,)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("cuts", "num_layers"),
    [((0,), 5), ((5,), 5), ((6,), 5), ((-1,), 5), ((2, 2), 5), ((3, 2), 5), ((1.5,), 5),
     (("2",), 5), ((1,), 1)],
)
def test_plan_rejects_bad_cuts(cuts: tuple, num_layers: int) -> None:
    placement = (O,) + ("server",) * len(cuts)
    bad = r"cut \S+ (is out of range|does not follow|is not an integer)"
    with pytest.raises(PlanError, match=bad):
        Plan(num_layers, cuts, placement, (1,))
    with pytest.raises(ValueError, match=bad):
        check_cuts(num_layers, cuts)


def test_plan_placement_length() -> None:
    with pytest.raises(PlanError, match=r"1 cuts need 2 placements, got \['owner'\]"):
        Plan(5, (2,), (O,), (1,))
    with pytest.raises(PlanError, match="2 cuts need 3 placements"):
        Plan(5, (1, 2), (O, "a", "b", O), (1,))


def test_plan_first_part_on_owner() -> None:
    with pytest.raises(PlanError, match="the first part runs on the data owner, got 'server'"):
        Plan(5, (2,), ("server", O), (1,))


@pytest.mark.parametrize("ns", [(), (0,), (2, 0), (-1, 3)])
def test_plan_micro_batches_at_least_one(ns: tuple) -> None:
    with pytest.raises(PlanError, match="micro_batches must be >= 1 per owner"):
        Plan(5, (2,), (O, "server"), ns)


def test_plan_error_is_a_value_error() -> None:
    assert issubclass(PlanError, ValueError)


# ----------------------------------------------------------------------------------------------
# make_plan per mode


def test_make_plan_pipar_two_parts() -> None:
    t = topo()
    p = make_plan(t, 5)
    assert p == Plan(5, (2,), (O, "server"), (4, 4, 4))
    assert placement_for(t) == (O, "server")


def test_make_plan_pipar_owner_override() -> None:
    t = topo(owners={"overrides": [{"index": 1, "micro_batches": 8}]})
    assert make_plan(t, 5).micro_batches == (4, 8, 4)
    assert owner_micro_batches(t) == (4, 8, 4)
    # a planner's N replaces the plan's, not the owner's own
    assert make_plan(t, 5, micro_batches=2).micro_batches == (2, 8, 2)
    assert make_plan(t, 5, micro_batches=[1, 2, 3]).micro_batches == (1, 2, 3)


@pytest.mark.parametrize("mode", SINGLE_BATCH_MODES)
def test_single_batch_modes_force_one(mode: str) -> None:
    t = topo(mode=mode, owners={"overrides": [{"index": 2, "micro_batches": 8}]})
    p = make_plan(t, 5)
    assert p.micro_batches == (1, 1, 1)
    assert make_plan(t, 5, micro_batches=6).micro_batches == (1, 1, 1)
    assert owner_micro_batches(t, 6) == (1, 1, 1)


@pytest.mark.parametrize("mode", ["sfl", "sl"])
def test_split_baselines_use_the_chain(mode: str) -> None:
    p = make_plan(topo(mode=mode), 5)
    assert p.placement == (O, "server") and p.cuts == (2,)


def test_make_plan_fl_single_part() -> None:
    t = topo(mode="fl")
    p = make_plan(t, 5)
    assert p == Plan(5, (), (O,), (1, 1, 1))
    # FL runs the whole model: cuts are ignored, given or not
    assert make_plan(t, 5, cuts=[1, 2]).cuts == ()
    assert make_plan(topo(mode="fl", plan="auto"), 9).parts == [(0, 9)]


def test_make_plan_mpsl_u_shape() -> None:
    t = topo(mode="mpsl", compute_nodes=TWO_NODES, plan={"cuts": [1, 2, 4], "micro_batches": 2})
    p = make_plan(t, 5)
    assert p.placement == (O, "node1", "node2", O)
    assert p.cuts == (1, 2, 4) and p.micro_batches == (2, 2, 2)
    assert p.labels_local
    assert placement_for(t) == (O, "node1", "node2", O)


def test_make_plan_local_labels_one_node() -> None:
    t = topo(labels="local", plan={"cuts": [1, 3], "micro_batches": 2})
    assert make_plan(t, 5).placement == (O, "server", O)


def test_make_plan_shared_labels_chain() -> None:
    t = topo(compute_nodes=TWO_NODES, plan={"cuts": [1, 3]})
    p = make_plan(t, 5)
    assert p.placement == (O, "node1", "node2") and not p.labels_local


def test_make_plan_auto_needs_cuts() -> None:
    t = topo(plan="auto")
    with pytest.raises(PlanError, match="plan.yaml: plan is auto: run the planner"):
        make_plan(t, 5)
    p = make_plan(t, 5, cuts=[3], micro_batches=2)
    assert p.cuts == (3,) and p.micro_batches == (2, 2, 2)
    assert make_plan(t, 5, cuts=[3]).micro_batches == (1, 1, 1)  # the plan's default N


@pytest.mark.parametrize("cuts", [[], [1, 2]])
def test_make_plan_wrong_cut_count(cuts: list) -> None:
    with pytest.raises(PlanError, match=rf"plan.yaml: {len(cuts)} cut\(s\) given, mode pipar "
                       r"with labels shared and 1 compute node\(s\) needs 1"):
        make_plan(topo(), 5, cuts=cuts)


def test_make_plan_wrong_cut_count_mpsl() -> None:
    t = topo(mode="mpsl", compute_nodes=TWO_NODES, plan="auto")
    with pytest.raises(PlanError, match=r"mode mpsl with labels local and 2 compute node\(s\) "
                       "needs 3"):
        make_plan(t, 5, cuts=[1, 2])


def test_make_plan_bad_cuts_name_the_source() -> None:
    with pytest.raises(PlanError, match=r"^plan.yaml: cut 7 is out of range"):
        make_plan(topo(), 5, cuts=[7])
    with pytest.raises(PlanError, match="plan.yaml: cut 2 is out of range"):
        make_plan(topo(), 2)  # the topology's cut does not fit a 2-layer model


def test_make_plan_micro_batch_list_length() -> None:
    with pytest.raises(PlanError, match="2 micro-batch counts for 3 owners"):
        make_plan(topo(), 5, micro_batches=[1, 2])
    with pytest.raises(PlanError, match="plan.yaml: micro_batches must be >= 1"):
        make_plan(topo(), 5, micro_batches=[1, 0, 1])


# ----------------------------------------------------------------------------------------------
# The plan file


def test_plan_json_round_trip(tmp_path) -> None:
    from mpsl.plan import read_plan_file, write_plan_file

    plan = Plan(5, (1, 3), (O, "node", O), (2, 3), "1f1b", 2)
    assert plan.to_json() == {"num_layers": 5, "cuts": [1, 3], "placement": [O, "node", O],
                              "micro_batches": [2, 3], "schedule": "1f1b", "max_in_flight": 2}
    assert Plan.from_json(plan.to_json()) == plan
    write_plan_file(tmp_path / "p.json", plan)
    assert read_plan_file(tmp_path / "p.json") == plan
    old = {"num_layers": 5, "cuts": [2], "placement": [O, "s"], "micro_batches": [4]}
    assert Plan.from_json(old) == Plan(5, (2,), (O, "s"), (4,))  # gpipe when not given


@pytest.mark.parametrize(("content", "message"), [
    (b"\xff\xfe", "not a plan file: not JSON"),
    (b"{", "not a plan file: not JSON"),
    (b"[1, 2]", "not a plan: expected a JSON object"),
    (b'{"num_layers": "5", "cuts": [], "placement": ["owner"], "micro_batches": [1]}',
     "field 'num_layers': got '5', expected an integer"),
    (b'{"num_layers": 5, "cuts": [2.5], "placement": ["owner", "s"], "micro_batches": [1]}',
     "field 'cuts': got [2.5], expected a list of integers"),
    (b'{"num_layers": 5, "cuts": [2], "placement": "owner", "micro_batches": [1]}',
     "field 'placement'"),
    (b'{"num_layers": 5, "cuts": [7], "placement": ["owner", "s"], "micro_batches": [1]}',
     "cut 7 is out of range"),
    (b'{"num_layers": 5, "cuts": [2], "placement": ["owner", "s"], "micro_batches": [1],'
     b' "schedule": "zigzag"}', "unknown schedule 'zigzag'"),
])
def test_read_plan_file_errors_name_the_file(tmp_path, content: bytes, message: str) -> None:
    from mpsl.plan import read_plan_file

    path = tmp_path / "plan.json"
    path.write_bytes(content)
    with pytest.raises(PlanError) as info:
        read_plan_file(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_read_plan_file_limits_and_missing(tmp_path) -> None:
    from mpsl.plan import PLAN_FILE_MAX_BYTES, read_plan_file

    big = tmp_path / "big.json"
    big.write_bytes(b" " * (PLAN_FILE_MAX_BYTES + 1))
    with pytest.raises(PlanError, match="larger than"):
        read_plan_file(big)
    with pytest.raises(PlanError, match="cannot read the plan file"):
        read_plan_file(tmp_path / "none.json")


def test_check_plan_fits_names_what_differs() -> None:
    from mpsl.plan import check_plan_fits

    t = topo()
    good = make_plan(t, 5)
    check_plan_fits(good, t, 5, "p.json")
    with pytest.raises(PlanError, match="p.json: the plan has 5 layers, model vgg5 .* has 7"):
        check_plan_fits(good, t, 7, "p.json")
    other = Plan(5, (1, 3), (O, "server", O), (1, 1, 1))
    with pytest.raises(PlanError, match=r"places its parts on \['owner', 'server', 'owner'\]"):
        check_plan_fits(other, t, 5, "p.json")
    few = Plan(5, (2,), (O, "server"), (1, 1))
    with pytest.raises(PlanError, match="N for 2 owners, plan.yaml has 3"):
        check_plan_fits(few, t, 5, "p.json")
    many = Plan(5, (2,), (O, "server"), (1, 99, 1))
    with pytest.raises(PlanError, match="N = 99 micro-batches exceed training.batch_size"):
        check_plan_fits(many, t, 5, "p.json")


def test_make_plan_takes_the_topology_schedule() -> None:
    t = topo(schedule={"name": "1f1b", "max_in_flight": 2})
    plan = make_plan(t, 5)
    assert (plan.schedule, plan.max_in_flight) == ("1f1b", 2)
    assert make_plan(t, 5, schedule="gpipe").schedule == "gpipe"
    assert "1f1b (max 2 in flight)" in plan.describe()
