"""Tests of nodes.switch and nodes.replan's planning pieces: the layers that move between nodes
take their parameters and optimizer state with them, and a plan switch leaves the model as it
was."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mpsl.names import OWNER
from mpsl.plan import make_plan
from mpsl.training import build_full_model
from nodes.admission import Rules
from nodes.parts import PartCopy, make_copies
from nodes.replan import EitherRules, at_rates, fixed_planner
from nodes.switch import SwitchError, copy_tensors, layers_of, load_copy, read_plan
from tests.nodes.conftest import small_topology


def trained_copies(owner_cuts: tuple[int, ...]) -> tuple[dict, PartCopy, PartCopy]:
    """An owner's part and node1's copy of it for owner 0 under cut 2, after two Adam steps,
    so that every parameter has optimizer state."""
    topo, _ = small_topology(training={"optimizer": "adam", "lr": 0.01, "batch_size": 8})
    plan = make_plan(topo, len(build_full_model(topo)), owner_cuts)
    owner = make_copies(topo, plan, [0], [0])[(0, 0)]
    node = make_copies(topo, plan, [1], [0])[(0, 1)]
    x, y = torch.randn(8, 64), torch.randint(0, 10, (8,))
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(node.module(owner.module(x)), y)
        loss.backward()
        for c in (owner, node):
            c.optimizer.step()
            c.optimizer.zero_grad()
    return {"topo": topo, "plan": plan, "x": x}, owner, node


def test_a_moved_layer_keeps_its_parameters_and_optimizer_state() -> None:
    ctx, owner, node = trained_copies((2,))
    topo, old = ctx["topo"], ctx["plan"]
    new = make_plan(topo, old.num_layers, (1,))
    assert layers_of(old, OWNER) - layers_of(new, OWNER) == {1}
    moving = copy_tensors(owner, 0, {1}, True)
    names = ("1.fc.weight", "1.fc.bias")
    assert set(moving) == {*(f"p/{n}" for n in names), *(
        f"o/0/{n}/{s}" for n in names for s in ("step", "exp_avg", "exp_avg_sq"))}
    fresh_owner = make_copies(topo, new, [0], [0])[(0, 0)]
    fresh_node = make_copies(topo, new, [1], [0])[(0, 1)]
    load_copy(fresh_owner, [owner], 0, {})
    load_copy(fresh_node, [node], 0, moving)
    x = ctx["x"]  # the same function, split elsewhere
    assert torch.equal(fresh_node.module(fresh_owner.module(x)), node.module(owner.module(x)))
    old_state = owner.optimizer.state[first(owner.module[1])]
    new_state = fresh_node.optimizer.state[first(fresh_node.module[0])]
    for key in ("step", "exp_avg", "exp_avg_sq"):
        assert torch.equal(new_state[key], old_state[key])
    assert torch.equal(fresh_node.optimizer.state[first(fresh_node.module[1])]["exp_avg"],
                       node.optimizer.state[first(node.module[0])]["exp_avg"])


def first(layer: torch.nn.Module) -> torch.nn.Parameter:
    return next(layer.parameters())


def test_the_fixed_planner_and_the_topology_at_measured_rates() -> None:
    topo, plan = small_topology(data_owners={"count": 2, "uplink_mbps": 50,
                                             "downlink_mbps": 40, "base_port": 6800})
    spec = topo.replan
    same = fixed_planner(spec)(topo, plan)
    assert same == plan
    at = at_rates(topo, {"owner1 uplink": 5.0})
    assert [(o.uplink_mbps, o.downlink_mbps) for o in at.owners] == [(50, 40), (5.0, 40)]


def test_per_owner_plans_layers_by_owner_and_the_fixed_planners_owner_cuts() -> None:
    topo, plan = small_topology(replan={"planner": "fixed", "owner_cuts": [
        {"owner": 1, "cuts": [1]}]})
    new = fixed_planner(topo.replan)(topo, plan)
    assert new.cuts == (2,) and new.owner_cuts == ((1, (1,)),)
    assert layers_of(new, OWNER, 0) == {0, 1} and layers_of(new, OWNER, 1) == {0}
    assert layers_of(new, "node1", 1) == {1, 2, 3} and layers_of(new, OWNER) == {0, 1}
    assert read_plan(new.to_json(), plan, topo) == new  # per-owner cuts switch too
    keep = replace(topo, replan=replace(topo.replan, owner_cuts=None))
    assert fixed_planner(keep.replan)(keep, new) == new  # keeps every owner's cuts
    fl = replace(new, owner_cuts=((1, ()),))  # an owner that would start running every layer
    with pytest.raises(SwitchError, match="owner 1 would start or stop running every layer"):
        read_plan(fl.to_json(), plan, topo)


def test_between_a_switch_and_the_next_round_the_aggregator_takes_either_plans_params() -> None:
    from tests.nodes.test_admission import params

    topo, plan = small_topology()
    new = make_plan(topo, plan.num_layers, (1,))
    old_rules, new_rules = Rules(topo, plan, "aggregator"), Rules(topo, new, "aggregator")
    either = EitherRules(topo, new, old_rules)
    old_msg, new_msg = params(old_rules, "node1"), params(new_rules, "node1")
    assert new_rules.check(old_msg) is not None and old_rules.check(new_msg) is not None
    assert either.check(old_msg) is None and either.check(new_msg) is None
    assert either.check(params(old_rules, "node9")) is not None  # neither takes it


def test_a_compute_nodes_switch_keeps_its_privacy_noise(monkeypatch) -> None:
    """The noise a compute node adds to the activations it sends (`privacy.cut_sigma`) goes on
    after a re-plan: its rebuilt runner takes the old one's noise layer."""
    from types import SimpleNamespace

    from mpsl.privacy import NoiseLayer
    from nodes import switch
    from nodes.memory import ActivationMeter
    from nodes.parts import PartRunner

    topo, plan = small_topology(owners=1)
    copies = make_copies(topo, plan, [1], [0])
    noise = NoiseLayer(0.0, 0.5, seed=7)
    sent: list[dict] = []
    node = SimpleNamespace(
        name="node1", topo=topo, plan=plan, part=1, owners=[0], active={0}, shared=False,
        averaged=3, copies=copies, meter=ActivationMeter(), latest=3, syncs={}, events=[],
        runner=PartRunner(copies, plan.num_parts - 1, noise=noise), rules=SimpleNamespace(round=3),
        _tasks={}, send=lambda *a, **kw: sent.append(kw))
    monkeypatch.setattr(switch, "hand_over", lambda n, r, out: SimpleNamespace(tensors={}))
    switch.switch_compute(node, switch.Switch(3, plan.to_json()))
    assert node.runner.noise is noise
    assert node.runner.copies is not copies and sent[-1]["type"] == "switched"
