"""Schedules as data: the tasks every node runs in one iteration of one data owner.

One function, `iteration_tasks`, turns a plan into the work of one owner's iteration. The
runtime executes it, the cost model simulates it, and the report draws it, so an estimate and a
measurement compare action by action.

A node's work is a list of tasks. A task is a list of actions run back to back on the node's
processor. It is triggered by one message (an ACT or GRAD of one micro-batch) or, without a
trigger, it is a barrier that waits for every earlier task of the same owner on that node.
Execution rule, the same everywhere: a triggered task is ready once its message has arrived and
the barriers before it are done; among ready tasks the one whose message arrived first runs
first (compute nodes thus serve the K owners oldest first).

PiPar, two parts, N = 3 (owner o, server s; `0F1` = forward of part 0 on micro-batch 1)::

    o: [0F0 >s 0F1 >s 0F2 >s]  [<s 0B0]  [<s 0B1]  [<s 0B2]  [STEP]
    s:            [<o 1F0 1B0 >o]  [<o 1F1 1B1 >o]  [<o 1F2 1B2 >o STEP]

MP-SL's U-shape adds the owner's tail part: ACT comes back to the owner, which runs the last
part and the loss, and sends the gradient back up the chain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mpsl.plan import Plan

FORWARD, BACKWARD, SEND, STEP = "F", "B", "SEND", "STEP"
ACT, GRAD = "ACT", "GRAD"


@dataclass(frozen=True)
class Action:
    """One step of a task: F or B of a part on a micro-batch, SEND of a message, or STEP."""

    kind: str
    part: int = -1
    mb: int = -1
    msg: str = ""  # ACT or GRAD, for SEND
    dst: str = ""  # receiving node, for SEND

    def __str__(self) -> str:
        if self.kind in (FORWARD, BACKWARD):
            return f"{self.part}{self.kind}{self.mb}"
        if self.kind == SEND:
            return f">{self.dst}:{self.msg}{self.mb}"
        return f"STEP{self.part}" if self.part >= 0 else "STEP"


@dataclass(frozen=True)
class Trigger:
    """The message a task waits for: `msg` of micro-batch `mb` for `part`, sent by `src`."""

    msg: str
    mb: int
    part: int
    src: str

    def __str__(self) -> str:
        return f"<{self.src}:{self.msg}{self.mb}"


@dataclass(frozen=True)
class Task:
    node: str
    owner: int
    trigger: Trigger | None
    actions: tuple[Action, ...]

    def __str__(self) -> str:
        head = [str(self.trigger)] if self.trigger else []
        return "[" + " ".join(head + [str(a) for a in self.actions]) + "]"


def owner_name(owner: int) -> str:
    return f"owner{owner}"


def iteration_tasks(plan: Plan, owner: int, n_mb: int) -> list[Task]:
    """All tasks of one iteration of `owner` with `n_mb` micro-batches, in list order per node.

    The last part computes the loss in its forward action and starts the backward pass at once;
    a compute node steps its part's optimizer after its last backward action of the iteration,
    the owner steps all its parts at its final barrier.
    """
    if n_mb < 1:
        raise ValueError(f"an iteration has at least one micro-batch, got {n_mb}")
    me = owner_name(owner)
    last = plan.num_parts - 1
    node = [plan.node_of(p, me) for p in range(plan.num_parts)]
    tasks: list[Task] = []

    def add(p: int, trigger: Trigger | None, actions: Iterable[Action]) -> None:
        tasks.append(Task(node[p], owner, trigger, tuple(actions)))

    # The owner's forward burst: every micro-batch through part 0, each sent on as it exists.
    burst: list[Action] = []
    for mb in range(n_mb):
        burst.append(Action(FORWARD, 0, mb))
        if last == 0:
            burst.append(Action(BACKWARD, 0, mb))
        else:
            burst.append(Action(SEND, 0, mb, ACT, node[1]))
    add(0, None, burst)

    for p in range(1, last + 1):
        for mb in range(n_mb):
            acts = [Action(FORWARD, p, mb)]
            if p == last:
                acts += [Action(BACKWARD, p, mb), Action(SEND, p, mb, GRAD, node[p - 1])]
                if mb == n_mb - 1 and node[p] != me:
                    acts.append(Action(STEP, p))
            else:
                acts.append(Action(SEND, p, mb, ACT, node[p + 1]))
            add(p, Trigger(ACT, mb, p, node[p - 1]), acts)
        if p == last:
            continue
        for mb in range(n_mb):
            acts = [Action(BACKWARD, p, mb), Action(SEND, p, mb, GRAD, node[p - 1])]
            if mb == n_mb - 1 and node[p] != me:
                acts.append(Action(STEP, p))
            add(p, Trigger(GRAD, mb, p, node[p + 1]), acts)

    if last > 0:
        for mb in range(n_mb):
            add(0, Trigger(GRAD, mb, 0, node[1]), [Action(BACKWARD, 0, mb)])
    add(0, None, [Action(STEP)])
    return _in_node_order(tasks, node)


def _in_node_order(tasks: list[Task], node: list[str]) -> list[Task]:
    """Group tasks by node (owner first, then the chain), keeping each node's list order."""
    order = list(dict.fromkeys(node))
    return sorted(tasks, key=lambda t: order.index(t.node))


def tasks_by_node(tasks: Iterable[Task]) -> dict[str, list[Task]]:
    out: dict[str, list[Task]] = {}
    for t in tasks:
        out.setdefault(t.node, []).append(t)
    return out


def format_tasks(tasks: Iterable[Task]) -> str:
    """One line per node, e.g. `owner0: [0F0 >server:ACT0] [<server:GRAD0 0B0] [STEP]`."""
    return "\n".join(
        f"{n}: " + " ".join(str(t) for t in ts) for n, ts in tasks_by_node(tasks).items()
    )
