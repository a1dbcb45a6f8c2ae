"""A node's side of a plan switch at an aggregation boundary (the aggregator's: nodes.replan).

At the end of round r, with nothing in flight (the owners wait for round r's GLOBAL), the
aggregator sends every node `switch` with the new plan. A node then
1. sends `handover`: what leaves it under the new plan: the state of every layer it runs now
   and will not run then, for some owner (parameters and buffers under the whole model's keys,
   `p/KEY`: from a compute node of a plan with one cut tuple for all; an owner's, and every
   layer under per-owner plans, are in the global model the aggregator holds) and, per owner,
   the optimizer state of that owner's layers that leave (`o/OWNER/KEY/NAME`);
2. takes `handin`: the layers that come to it, in the same form;
3. rebuilds its copies for the new plan: layers that stay keep their parameters and optimizer
   state, layers that come take what came, and it answers `switched` (a compute node; an owner
   goes on with round r's GLOBAL, which carries its new parts).
Under per-owner plans (`Plan.owner_cuts`) each owner's layers move between that owner and its
own compute nodes by its own cuts: an owner whose cuts stay moves nothing. The placement stays,
and so does the set of owners that run every layer themselves (FL beside split owners).
So the global model, and every owner's optimizer state, is the same after the switch as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from mpsl.actions import Action, Msg
from mpsl.models.split import full_key
from mpsl.names import AGGREGATOR, CPU, OWNER
from mpsl.plan import Plan, PlanError, check_plan_fits
from mpsl.trace import Event
from mpsl.training import num_layers
from nodes.admission import Rules
from nodes.owner_plans import held_by
from nodes.parts import PartCopy, PartRunner, make_copies
from nodes.wire import Message

if TYPE_CHECKING:
    from nodes.compute import ComputeNode
    from nodes.data_owner import DataOwner

log = logging.getLogger(__name__)
Tensors = dict[str, torch.Tensor]


class Switch(Exception):
    """The aggregator switches the run to another plan at the end of round `round_id`."""

    def __init__(self, round_id: int, plan: Any) -> None:
        super().__init__(f"switch to another plan after round {round_id}")
        self.round_id, self.plan = round_id, plan


class SwitchError(RuntimeError):
    """A switch message that does not fit (its plan, or the tensors of its layers)."""


def layer_of(key: str) -> int:
    """The layer of a whole-model state key (`3.conv.weight` -> 3)."""
    return int(key.split(".", 1)[0])


def layers_of(plan: Plan, node: str, owner: int | None = None) -> set[int]:
    """The layers `node` (a compute node's name, or OWNER) runs under `plan` for `owner` (None:
    for any owner)."""
    owners = range(len(plan.micro_batches)) if owner is None else [owner]
    return {i for k in owners for i in held_by(plan, k, node)}


def read_plan(data: Any, current: Plan, topo: Any) -> Plan:
    """The plan a `switch` names, checked against the topology (SwitchError)."""
    try:
        plan = Plan.from_json(data, "switch")
        check_plan_fits(plan, topo, num_layers(topo), "switch")
    except PlanError as err:
        raise SwitchError(str(err)) from None
    if plan.placement != current.placement:
        raise SwitchError(f"switch to {plan.describe()}: another placement")
    fl = [k for k in range(len(plan.micro_batches)) if plan.is_fl_owner(k)
          != current.is_fl_owner(k)]
    if fl:
        raise SwitchError(f"switch to {plan.describe()}: owner {fl[0]} would start or stop "
                          "running every layer (FL)")
    return plan


def copy_tensors(c: PartCopy, owner: int, layers: set[int], params: bool) -> Tensors:
    """The state of `c`'s layers in `layers`: parameters and buffers (`p/KEY`, with `params`)
    and the optimizer state (`o/OWNER/KEY/NAME`), on the CPU."""
    out: Tensors = {}
    if params:
        out.update((f"p/{k}", v) for k, v in c.full_state().items() if layer_of(k) in layers)
    names = [full_key(c.start, n) for n, _ in c.module.named_parameters()]
    state = c.optimizer.state_dict()["state"]
    for i, name in enumerate(names):
        if layer_of(name) in layers:
            for sk, v in state.get(i, {}).items():
                if torch.is_tensor(v):
                    out[f"o/{owner}/{name}/{sk}"] = v.detach().to("cpu", copy=True)
    return out


def load_copy(new: PartCopy, olds: Iterable[PartCopy], owner: int,
              came: Mapping[str, torch.Tensor]) -> None:
    """Fill `new` (a fresh copy of the new plan) layer by layer: from the node's `olds` (its
    copies of the old plan for `owner`) where a layer stays, else from `came`
    (`copy_tensors`' form); SwitchError when a layer is missing or does not fit."""
    state: Tensors = {}
    opt: Tensors = {}
    for old in olds:
        state.update(old.full_state())
        every = set(range(old.start, old.start + len(old.module)))
        opt.update((k.split("/", 2)[2], v) for k, v in
                   copy_tensors(old, owner, every, False).items())
    state.update((k[2:], v) for k, v in came.items() if k.startswith("p/"))
    prefix = f"o/{owner}/"
    opt.update((k[len(prefix):], v) for k, v in came.items() if k.startswith(prefix))
    names = [full_key(new.start, n) for n, _ in new.module.named_parameters()]
    saved = new.optimizer.state_dict()
    saved["state"] = {}
    for i, name in enumerate(names):
        entry = {k.rpartition("/")[2]: v for k, v in opt.items() if k.rpartition("/")[0] == name}
        if entry:
            saved["state"][i] = entry
    try:
        new.load_full_state(state)
        new.optimizer.load_state_dict(saved)
    except (KeyError, RuntimeError, ValueError) as err:
        raise SwitchError(f"switch: layers that do not fit ({err})"[:300]) from None


def hand_over(node: DataOwner | ComputeNode, r: int, out: Tensors) -> Message:
    """Send what leaves the node to the aggregator, and wait for what comes (`handin`)."""
    node.send(AGGREGATOR, Msg.CONTROL, iteration=r, type="handover", round=r, tensors=out)
    return node.recv(lambda m: m.kind == Msg.CONTROL and m.src == AGGREGATOR
                     and m.meta.get("type") == "handin" and m.iter == r,
                     f"handin of the switch after round {r}")


def switch_owner(node: DataOwner, sw: Switch) -> None:
    """A data owner's switch (it waits for round `sw.round_id`'s GLOBAL, which follows)."""
    r, k = sw.round_id, node.index
    plan = read_plan(sw.plan, node.plan, node.topo)
    t0 = time.time()
    leaving = layers_of(node.plan, OWNER, k) - layers_of(plan, OWNER, k)
    out: Tensors = {}
    for p in node.parts:
        out.update(copy_tensors(node.copies[(k, p)], k, leaving, False))
    came = hand_over(node, r, out).tensors
    t1 = time.time()
    mine = plan.for_owner(k)
    parts = mine.parts_on(OWNER)
    copies = make_copies(node.topo, plan, parts, [k])
    for p in parts:
        load_copy(copies[(k, p)], node.copies.values(), k, came)
    for c in copies.values():
        node.meter.exclude(c.module.parameters())
    node.plan, node.mine = plan, mine
    node.n, node.parts, node.copies = plan.micro_batches[k], parts, copies
    node.runner = PartRunner(copies, mine.num_parts - 1, node.meter, node.runner.noise)
    rules = Rules(node.topo, plan, node.name)
    rules.iteration, rules.round = node.rules.iteration, node.rules.round
    node.rules = rules
    node.events.append(_event(node.name, r, t1, time.time()))
    log.info("%s: switched to %s after round %d (%.3f s)", node.name, plan.describe(), r,
             time.time() - t0)


def receive_switching(node: DataOwner, match: Callable[[Message], bool], what: str) -> Message:
    """`node.recv(match, what)`, carrying out a switch that comes first (an owner waiting for a
    round's GLOBAL)."""
    try:
        return node.recv(match, what)
    except Switch as sw:
        switch_owner(node, sw)
        return node.recv(match, what)


def switch_compute(node: ComputeNode, sw: Switch) -> None:
    """A compute node's switch: once it averaged the round (its syncs may come after the
    switch), hand over, take what comes, rebuild its copies, and answer `switched`."""
    from nodes.batched import Batcher

    r = sw.round_id
    plan = read_plan(sw.plan, node.plan, node.topo)
    while node.averaged < r:
        if not node.route(node.recv_any(f"the syncs of round {r}, before the switch")):
            raise SwitchError(f"{node.name}: stopped during the switch after round {r}")
    owners = sorted(node.active) or list(node.owners)
    out: Tensors = {}
    leaving: set[int] = set()
    for k in node.owners:
        mine = layers_of(node.plan, node.name, k) - layers_of(plan, node.name, k)
        out.update(copy_tensors(node.copies[(k, node.part)], k, mine, False))
        leaving |= mine
    if node.plan.uniform:  # the parameters of the layers that leave for some owner, from an
        # owner present (after averaging, every copy's); per-owner plans: none, the aggregator
        # holds the whole global model
        state = copy_tensors(node.copies[(owners[0], node.part)], owners[0], leaving, True)
        out.update((key, v) for key, v in state.items() if key.startswith("p/"))
    came = hand_over(node, r, out).tensors
    t1 = time.time()
    spec = node.topo.compute(node.name)
    copies = make_copies(node.topo, plan, [node.part], node.owners, device=spec.device)
    for k in node.owners:
        load_copy(copies[(k, node.part)], [node.copies[(k, node.part)]], k, came)
    for c in copies.values():
        node.meter.exclude(c.module.parameters())
    node.plan, node.copies = plan, copies
    node.runner = PartRunner(copies, plan.num_parts - 1, node.meter, node.runner.noise,
                             device=spec.device)
    same = len({plan.for_owner(k).cuts for k in node.owners}) == 1  # parts of one size
    node.batcher = Batcher.make(node.runner, node.part, node.owners, node.shared) \
        if spec.batch_owners == "auto" and same else None
    node._tasks.clear()
    rules = Rules(node.topo, plan, node.name)
    rules.iteration, rules.syncs, rules.active = node.latest, node.syncs, node.active
    rules.round = node.rules.round
    node.rules = rules
    present = sorted(node.owners, key=lambda k: k in owners)  # owners present last
    node.last_avg = last_average(plan, [copies[(k, node.part)] for k in present])
    node.events.append(_event(node.name, r, t1, time.time()))
    node.send(AGGREGATOR, Msg.CONTROL, iteration=r, type="switched", round=r, trace=False)
    log.info("%s: switched to %s after round %d", node.name, plan.describe(), r)


def last_average(plan: Plan, copies: list[PartCopy]) -> Tensors:
    """A compute node's last average after a switch, from its new copies (the last of
    `copies`, an owner present, wins): the copy's state (one cut tuple for all), else every
    copy's under the whole model's keys."""
    if plan.uniform:
        return {k: v.detach().clone() for k, v in copies[-1].module.state_dict().items()}
    return {k: v for c in copies for k, v in c.full_state().items()}


def _event(node: str, r: int, t0: float, t1: float) -> Event:
    """The node's PLAN span on the timeline: from the layers' arrival to the switch's end."""
    return Event(node, CPU, str(Action.plan()), None, r, None, t0, t1)
