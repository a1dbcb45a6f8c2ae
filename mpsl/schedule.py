"""Schedules as data: the tasks every node runs in one iteration of one data owner.

One function, `iteration_tasks`, turns a plan into the work of one owner's iteration; the
plan names its schedule (`gpipe` or `1f1b`). The runtime executes the tasks, the cost model
simulates them and derives the ILP's terms from them, and the report draws them, so an
estimate and a measurement compare action by action. Tasks run by one rule everywhere
(`mpsl.taskqueue`): a triggered task is ready once its message has arrived and the barriers
before it are done; among ready tasks the one whose message arrived first runs first.

GPipe (PiPar), two parts, N = 3 (owner o, server s)::

    o: [0F0 >s:ACT0 0F1 >s:ACT1 0F2 >s:ACT2]  [<s:GRAD0 0B0]  [<s:GRAD1 0B1]  [<s:GRAD2 0B2]
       [STEP]
    s: [<o:ACT0 1F0 1B0 >o:GRAD0]  [<o:ACT1 1F1 1B1 >o:GRAD1]  [<o:ACT2 1F2 1B2 >o:GRAD2 STEP1]

1F1B, the same with `max_in_flight` W = 2: the owner keeps at most W micro-batches between
forward and backward, and each returning gradient lets the next forward go::

    o: [0F0 >s:ACT0 0F1 >s:ACT1]  [<s:GRAD0 0B0 0F2 >s:ACT2]  [<s:GRAD1 0B1]  [<s:GRAD2 0B2]  [STEP]

MP-SL's U-shape adds the owner's tail part: ACT comes back to the owner, which runs the last
part and the loss, and sends the gradient back up the chain. Compute nodes run the same
tasks under either schedule; only the owner's first part differs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mpsl.actions import Action, Msg, Task, Trigger
from mpsl.names import owner_name
from mpsl.plan import Plan

Schedule = Callable[[Plan, int, int], list[Task]]


def iteration_tasks(plan: Plan, owner: int, n_mb: int) -> list[Task]:
    """All tasks of one iteration of `owner` with `n_mb` micro-batches, grouped by node (the
    owner first, then the chain), in list order per node, by the plan's schedule.

    The last part computes the loss in its forward action and starts the backward pass at once;
    a compute node steps its part's optimizer after its last backward action of the iteration,
    the owner steps all its parts at its final barrier.
    """
    if n_mb < 1:
        raise ValueError(f"an iteration has at least one micro-batch, got {n_mb}")
    return SCHEDULES[plan.schedule](plan, owner, n_mb)


def in_flight(plan: Plan, n_mb: int) -> int:
    """How many micro-batches the owner's first part sends before its first backward: the
    one number in which the schedules' tasks differ (1F1B with a window of at least `n_mb`
    makes GPipe's tasks)."""
    if plan.schedule == "gpipe" or plan.num_parts == 1:
        return n_mb
    return min(plan.max_in_flight or plan.num_parts, n_mb)


def gpipe_tasks(plan: Plan, owner: int, n_mb: int) -> list[Task]:
    """Every forward of the owner's first part back to back, then the backwards as the
    gradients return (GPipe's fill and drain, PiPar's pipeline)."""
    return _tasks(plan, owner, n_mb, n_mb)


def one_f_one_b_tasks(plan: Plan, owner: int, n_mb: int) -> list[Task]:
    """At most `plan.max_in_flight` micro-batches between the owner's forward and backward of
    its first part: each backward lets the next forward go (1F1B, PipeDream-flush)."""
    return _tasks(plan, owner, n_mb, in_flight(plan, n_mb))  # FL: nothing in flight


SCHEDULES: dict[str, Schedule] = {"gpipe": gpipe_tasks, "1f1b": one_f_one_b_tasks}


def _tasks(plan: Plan, owner: int, n_mb: int, window: int) -> list[Task]:
    me = owner_name(owner)
    last = plan.num_parts - 1
    node = [plan.node_of(p, me) for p in range(plan.num_parts)]
    tasks: list[Task] = []

    def add(p: int, trigger: Trigger | None, actions: Iterable[Action]) -> None:
        tasks.append(Task(node[p], owner, trigger, tuple(actions)))

    def first_forward(mb: int) -> list[Action]:
        """Forward of part 0, sent on at once (or, in FL, followed by its backward)."""
        if last == 0:
            return [Action.forward(0, mb), Action.backward(0, mb)]
        return [Action.forward(0, mb), Action.send(Msg.ACT, node[1], mb)]

    add(0, None, [a for mb in range(window) for a in first_forward(mb)])
    for p in range(1, last + 1):
        for mb in range(n_mb):
            acts = [Action.forward(p, mb)]
            if p == last:
                acts += [Action.backward(p, mb), Action.send(Msg.GRAD, node[p - 1], mb)]
                acts += _step_after(plan, p, mb, n_mb, node[p], me)
            else:
                acts.append(Action.send(Msg.ACT, node[p + 1], mb))
            add(p, Trigger(node[p - 1], Msg.ACT, mb), acts)
        if p == last:
            continue
        for mb in range(n_mb):
            acts = [Action.backward(p, mb), Action.send(Msg.GRAD, node[p - 1], mb)]
            add(p, Trigger(node[p + 1], Msg.GRAD, mb), acts + _step_after(plan, p, mb, n_mb,
                                                                          node[p], me))
    if last > 0:
        for mb in range(n_mb):
            acts = [Action.backward(0, mb)]
            if mb + window < n_mb:
                acts += first_forward(mb + window)
            add(0, Trigger(node[1], Msg.GRAD, mb), acts)
    add(0, None, [Action.step()])
    return _in_node_order(tasks, node)


def _step_after(plan: Plan, p: int, mb: int, n_mb: int, node: str, me: str) -> list[Action]:
    """A compute node's STEP of its part, after the part's last backward of the iteration."""
    return [Action.step(p)] if mb == n_mb - 1 and node != me else []


def _in_node_order(tasks: list[Task], node: list[str]) -> list[Task]:
    """Group tasks by node (owner first, then the chain), keeping each node's list order."""
    order = list(dict.fromkeys(node))
    return sorted(tasks, key=lambda t: order.index(t.node))


def tasks_by_node(tasks: Iterable[Task]) -> dict[str, list[Task]]:
    out: dict[str, list[Task]] = {}
    for t in tasks:
        out.setdefault(t.node, []).append(t)
    return out
