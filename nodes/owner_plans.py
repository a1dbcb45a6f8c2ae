"""Aggregation under per-owner plans (owners with their own cuts, or FL beside split owners).

Owners' parts differ in size, so a compute node's copies cannot be averaged among themselves.
Aggregation works on the whole model's parameter names instead (PiPar's Algorithm 2, lines
18-23): at a round's end every holder sends what it holds of each owner, under the whole
model's keys (an owner: PARAMS of its parts; a compute node: one PARAMS per owner present, its
copy of that owner's part, `owner` naming it); the aggregator puts each owner's whole model
together, takes the sample-weighted average of the owners' models, tensor by tensor, and sends
each holder the average of what it holds (GLOBAL: to an owner its parts' keys, to a compute
node the union of its owners' parts). A compute node loads it into every copy of the round and
only then checkpoints the round, reports its links' rates (re-planning) and opens the next one.

A plan with no per-owner cuts (`Plan.uniform`) never comes here: compute nodes average their
copies locally and the aggregator averages the owners' parts, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from mpsl.actions import Msg
from mpsl.names import AGGREGATOR, OWNER
from mpsl.plan import Plan
from nodes.parts import PartCopy
from nodes.throughput import report_rates
from nodes.wire import Message

if TYPE_CHECKING:
    from nodes.compute import ComputeNode

log = logging.getLogger(__name__)
StateDict = dict[str, torch.Tensor]


def layer_of(key: str) -> int:
    """The layer a whole-model state key belongs to (`3.conv.weight` -> 3)."""
    return int(key.split(".", 1)[0])


def held_by(plan: Plan, owner: int, node: str) -> set[int]:
    """The layers of `owner`'s model that `node` holds (`OWNER` for the owner itself)."""
    mine = plan.for_owner(owner)
    return {layer for (a, b), n in zip(mine.parts, mine.placement) if n == node
            for layer in range(a, b)}


def part_of(state: Mapping[str, torch.Tensor], layers: set[int]) -> StateDict:
    """The entries of `state` of the given layers, the same tensors."""
    return {k: v for k, v in state.items() if layer_of(k) in layers}


def owner_global(plan: Plan, owner: int, state: Mapping[str, torch.Tensor]) -> StateDict:
    """What of the global `state` the owner holds (uniform plans: `state` is that already)."""
    if plan.uniform:
        return dict(state)
    return part_of(state, held_by(plan, owner, OWNER))


def compute_global(plan: Plan, node: str, state: Mapping[str, torch.Tensor]) -> StateDict:
    """What of the global `state` compute node `node` holds for any of its owners."""
    layers: set[int] = set()
    for k in plan.owners_on(node):
        layers |= held_by(plan, k, node)
    return part_of(state, layers)


def whole_models(plan: Plan, owners: list[int], from_owner: Mapping[int, Message],
                 from_compute: Mapping[tuple[str, int], Message]) -> list[StateDict]:
    """Each owner's whole model: its own PARAMS and its compute nodes' copies of its parts."""
    models = []
    for k in owners:
        state = dict(from_owner[k].tensors)
        for n in plan.for_owner(k).placement:
            if n != OWNER:
                state.update(from_compute[(n, k)].tensors)
        models.append(state)
    return models


# the compute node's side -------------------------------------------------------------------

def first_average(plan: Plan, copies: Mapping[tuple[int, int], PartCopy]) -> StateDict:
    """The copies' initial state: the first copy's (per-owner plans: every owner's part, under
    the whole model's keys)."""
    if plan.uniform:
        return next(iter(copies.values())).module.state_dict()
    return {k: v for c in copies.values() for k, v in c.full_state().items()}


def from_average(plan: Plan, c: PartCopy, last: Mapping[str, torch.Tensor]) -> None:
    """The copy becomes the last average (per-owner plans: the last GLOBAL, whole-model
    keys)."""
    if plan.uniform:
        c.module.load_state_dict(last)
    else:
        c.load_full_state(last)


def close_round(node: ComputeNode, r: int, counts: Mapping[int, int]) -> None:
    """Round `r`'s syncs are in (`counts`): send the aggregator the copy of each owner present
    and not left out (PARAMS, under the whole model's keys); the round is averaged once its
    GLOBAL comes back (`take_global`)."""
    owners = sorted(k for k in counts if k in node.active - node.skipped.get(r, set()))
    for k in owners:
        node.send(AGGREGATOR, Msg.PARAMS, owner=k, iteration=r, round=r, part=node.part,
                  tensors=node.copies[(k, node.part)].full_state())
    node.awaiting = (r, owners)
    node.rules.round = r


def take_global(node: ComputeNode, msg: Message) -> None:
    """Round r's GLOBAL: load it into the copies of the round's owners (and of those late for
    it that are done with it here), keep it for later joins and stragglers, checkpoint, and
    open round r + 1."""
    if node.awaiting is None or msg.iter != node.awaiting[0]:
        node.drop(msg, "past round", f"GLOBAL of round {msg.iter}")
        return
    r, owners = node.awaiting
    node.awaiting = None
    counts = node.synced.pop(r, {})
    late = node.skipped.pop(r, set()) & set(counts)
    node.last_avg = dict(msg.tensors)
    for k in sorted(set(owners) | late):
        node.copies[(k, node.part)].load_full_state(node.last_avg)
    node.epoch_end.pop(r, None)
    node.averaged = r
    node.save_round(r)
    report_rates(node, r)  # re-planning (nodes.throughput)
    node.queue.open(r + 1)
    node.apply_joins()
    node.close_rounds()
    log.debug("%s: round %d averaged over %s", node.name, r, owners)
