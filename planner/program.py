"""A task's steps on one simulated node, timed once for an iteration's micro-batch sizes.

The engine (planner.engine) runs a task as its program: every duration, byte count, receiving
node and link is looked up once per node, task and micro-batch sizes, not at every run; owners
alike share their tasks (planner.workload), so a node keeps one program per kind of task.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from mpsl.actions import Task
from mpsl.names import CPU
from mpsl.taskqueue import Entry
from mpsl.trace import Event
from planner.resources import message_bytes
from planner.simstate import MSG, SimNode
from planner.workload import FORWARD, SEND, STEP, label_of

if TYPE_CHECKING:
    from planner.engine import Engine

# (code, seconds warm (a SEND: its transmission's, -1 when the link is the owner's), seconds
# on a cold processor, activation bytes kept (a SEND: its bytes), the receiving node and its
# link (None: the owner's), the step)
Program = tuple[tuple[Any, ...], ...]
SpanCosts = dict[tuple[str, tuple[int, int]], tuple[float, int]]


def span_cost(costs: SpanCosts, node: SimNode, span: tuple[int, int]) -> tuple[float, int]:
    """(STEP seconds, activation bytes per sample) of a compute node's copy of layers `span`
    (per-owner plans: copies of other sizes), kept in `costs`."""
    key = (node.name, span)
    got = costs.get(key)
    if got is None:
        got = costs[key] = (node.prof.step([span], node.sleeps), node.prof.act_bytes(span))
    return got


def program(eng: Engine, node: SimNode, task: Task, sizes: list[int]) -> Program:
    """The task's timed steps on `node` for an iteration of micro-batches `sizes` (kept in
    `node.programs`). A pass on a cold processor takes the profile's wake-up time more."""
    spanned = eng.hetero and node.owner is None  # parts of other sizes per owner
    prof, out = node.prof, list[tuple[Any, ...]]()
    links = eng.wires.links
    for step in eng.work.steps(task):
        code, part, span = step.code, step.part, step.span
        if code == SEND:
            assert step.mb is not None
            nbytes = message_bytes(step.cut, sizes[step.mb], step.labels)
            if step.dst is None:  # to the owner: looked up per owner at run time
                if not node.owner_hops:
                    node.owner_hops.update((k, links(node.name, o))
                                           for k, o in enumerate(eng.onames))
                out.append((code, -1.0, 0.0, nbytes, None, None, step))
            else:  # the transmission's seconds in place of a pass's
                hop = links(node.name, step.dst)
                out.append((code, hop.tx_s(nbytes), 0.0, nbytes, eng.nodes[step.dst], hop,
                            step))
        elif code == STEP:
            d = span_cost(eng.span_costs, node, span)[0] if spanned else node.steps[part]
            out.append((code, d, d, 0, None, None, step))
        else:
            assert part is not None and step.mb is not None
            b = sizes[step.mb]
            per = span_cost(eng.span_costs, node, span)[1] if spanned else node.act[part]
            d = node.pass_s(part, span, b)[0 if code == FORWARD else 1]
            wake = prof.wake_fwd_s if code == FORWARD else prof.wake_bwd_s
            out.append((code, d + 0.0, d + wake, per * b, None, None, step))
    got = node.programs[(id(task), id(sizes))] = tuple(out)
    return got


def walk(eng: Engine, node: SimNode, entry: Entry, prog: Program, t: float, cold: bool
         ) -> float:
    """Run the task `entry` as its program on `node` from `t`, its actions back to back
    (`cold`: its first pass wakes the processor): its sends go out, the node's memory and the
    trace (when recorded) follow; its end."""
    k, j = entry.owner, entry.iteration
    mem, cur, sleeps, heap, seq = node.mem, t, node.sleeps, eng.heap, eng.seq
    act_t, act_d, push = mem.act_t, mem.act_d, heapq.heappush
    events = eng.events if eng.record else None
    put = eng.wires.put
    for code, warm, wake, act, dst, hop, step in prog:
        if code == SEND:  # `warm`: its transmission's seconds (-1: per owner, looked up)
            label = "" if events is None else label_of(step, eng.onames[k])
            if dst is None:
                dst, hop = eng.owner_nodes[k], node.owner_hops[k]
                warm = hop.tx_s(act)
            arrive = put(hop, warm, node.name, act, cur, label, k, j, step.mb, mem)
            push(heap, (arrive, next(seq), MSG, dst, (k, j, step.key, act)))
            continue
        if code == STEP:
            d = warm
        else:
            d = wake if cold else warm
            if act:  # activations kept from a forward, freed at a backward's end
                if code == FORWARD:
                    act_t.append(cur)
                    act_d.append(act)
                else:
                    act_t.append(cur + d)
                    act_d.append(-act)
            cold = sleeps
        if events is not None:
            events.append(Event(node.name, CPU, step.label, k, j, step.mb, cur, cur + d))
        cur += d
    return cur
