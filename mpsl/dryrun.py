"""The dry run: every owner's iteration executed by the task queue, without models or time.

It checks a plan before any node starts: a schedule whose tasks cannot all run (a message
nobody sends, one sent twice or never used, a barrier that waits forever) raises
`ScheduleError` naming the node and the stuck tasks. Durations and link delays are
functions, so tests can shake the timing; the default is one time unit per pass and STEP,
messages arriving at once, in order per link.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Mapping, Sequence

from mpsl.actions import Action, Msg, Op, Task, TriggerKey
from mpsl.names import CPU, OWNER, link_name, owner_name
from mpsl.plan import Plan
from mpsl.schedule import iteration_tasks
from mpsl.taskqueue import Entry, TaskQueue
from mpsl.trace import Event

Duration = Callable[[str, Action], float]  # (node, action) -> seconds
Delay = Callable[[str, str], float]  # (src, dst) -> seconds of a message on that link


class ScheduleError(ValueError):
    """A schedule that cannot run to its end: one line naming the node and the tasks."""


def _unit(node: str, a: Action) -> float:
    return 0.0 if a.op is Op.SEND else 1.0


def _instant(src: str, dst: str) -> float:
    return 0.0


def dry_run(plan: Plan, tasks: Mapping[int, Sequence[Task]] | None = None, *,
            duration: Duration = _unit, delay: Delay = _instant) -> list[Event]:
    """One iteration of every owner under the execution rule; the trace of what ran.

    `tasks` maps each owner to its iteration's tasks (default: the plan's schedule with the
    owner's N). Nodes run one task at a time; links deliver in order. Raises ScheduleError
    on a deadlock or a message that no task takes.
    """
    if tasks is None:
        tasks = {k: iteration_tasks(plan.for_owner(k), k, n)
                 for k, n in enumerate(plan.micro_batches)}
    sim = _DryRun(plan, tasks, duration, delay)
    sim.run_to_end()
    assert sim.events is not None
    _check_all_ran(sim.queues, tasks, sim.events)
    return sim.events


def run_order(plan: Plan, tasks: Mapping[int, Sequence[Task]]) -> list[tuple[Task, int, str]]:
    """`dry_run` (unit durations, instant links) without its trace: every action in the order
    it ran, as (task, the action's index, CPU or the link it went on). Raises ScheduleError
    as `dry_run` does."""
    sim = _DryRun(plan, tasks, _unit, _instant, events=False)
    sim.run_to_end()
    if any(q.unfinished for q in sim.queues.values()):
        dry_run(plan, tasks)  # raises, naming the stuck tasks
    return sim.order


class _DryRun:
    """The nodes' queues, the messages in flight and the passes under way, advanced by instants."""

    def __init__(self, plan: Plan, tasks: Mapping[int, Sequence[Task]],
                 duration: Duration, delay: Delay, events: bool = True) -> None:
        # free nodes pick their next task in a fixed order at each instant: owners, then the chain
        chain = [n for n in plan.placement if n != OWNER]
        self.queues = {n: TaskQueue() for n in [owner_name(k) for k in sorted(tasks)] + chain}
        for k, ts in tasks.items():
            for node, mine in _by_node(ts).items():
                self.queues.setdefault(node, TaskQueue()).add(k, 0, mine, 0.0)
        self.duration, self.delay = duration, delay
        self.events: list[Event] | None = [] if events else None  # the trace
        self.order: list[tuple[Task, int, str]] = []  # without the trace: what ran, in order
        self.messages: list[tuple[float, int, str, int, TriggerKey, Action]] = []  # (at, seq..)
        self.ends: list[tuple[float, int, str, Entry]] = []
        self.seq = itertools.count()
        self.busy: dict[str, bool] = dict.fromkeys(self.queues, False)
        self.link_free: dict[str, float] = {}
        self.rank = {n: i for i, n in enumerate(self.queues)}

    def run_to_end(self) -> None:
        for node in self.queues:
            self.start(node, 0.0)
        while self.messages or self.ends:
            now = min(h[0][0] for h in (self.messages, self.ends) if h)
            for node in sorted(self.settle(now), key=self.rank.__getitem__):
                if not self.busy[node] and self.queues[node]:
                    self.start(node, now)

    def start(self, node: str, now: float) -> None:
        """Run `node`'s next ready task from `now`: its passes, and its sends onto the links."""
        entry = self.queues[node].pop()
        if entry is None:
            return
        self.busy[node] = True
        clock = now
        for i, a in enumerate(entry.task.actions):
            d = self.duration(node, a)
            if a.op is Op.SEND:
                self.send(node, entry, i, clock)
            elif self.events is None:
                self.order.append((entry.task, i, CPU))
            else:
                self.events.append(Event(node, CPU, str(a), entry.owner, 0, a.mb, clock, clock + d))
            clock += d
        heapq.heappush(self.ends, (clock, next(self.seq), node, entry))

    def send(self, node: str, entry: Entry, i: int, clock: float) -> None:
        a = entry.task.actions[i]
        assert a.dst is not None and a.msg is not None and a.mb is not None
        to = entry.task.sent_part(i) + (1 if a.msg is Msg.ACT else -1)
        link = link_name(node, a.dst)
        at = max(clock + self.delay(node, a.dst), self.link_free.get(link, 0.0))
        self.link_free[link] = at
        if self.events is None:
            self.order.append((entry.task, i, link))
        else:
            self.events.append(Event(node, link, str(a), entry.owner, 0, a.mb, clock, at))
        key = (a.msg, to, a.mb)
        heapq.heappush(self.messages, (at, next(self.seq), a.dst, entry.owner, key, a))

    def settle(self, now: float) -> set[str]:
        """Deliver every message and end every task due at `now`; the nodes this woke.

        Everything that happens at one instant happens before any node picks its next task.
        """
        woken: set[str] = set()
        messages, ends = self.messages, self.ends
        while messages or ends:
            if messages and (not ends or messages[0][:2] < ends[0][:2]):
                if messages[0][0] != now:
                    break
                _, _, dst, owner, key, sent = heapq.heappop(messages)
                queue = self.queues.get(dst)
                if queue is None or queue.deliver(owner, 0, key, now) is None:
                    raise ScheduleError(f"{dst}: no task of owner {owner} takes {sent} "
                                        f"(sent twice, or to the wrong node)")
                woken.add(dst)
            else:
                if ends[0][0] != now:
                    break
                _, _, node, done = heapq.heappop(ends)
                self.queues[node].finish(done, now)
                self.busy[node] = False
                woken.add(node)
        return woken


def _by_node(tasks: Sequence[Task]) -> dict[str, list[Task]]:
    out: dict[str, list[Task]] = {}
    for t in tasks:
        out.setdefault(t.node, []).append(t)
    return out


def _check_all_ran(queues: Mapping[str, TaskQueue], tasks: Mapping[int, Sequence[Task]],
                   events: Sequence[Event]) -> None:
    stuck = [(n, q) for n, q in queues.items() if q.unfinished]  # in node order
    if not stuck:
        return
    ran = {(e.node, e.owner, e.action) for e in events if e.resource == CPU}
    lines = []
    for node, _ in stuck:
        waiting = [str(t) for k, ts in tasks.items() for t in ts if t.node == node
                   and not all((node, k, str(a)) in ran for a in t.actions if a.op is not Op.SEND)]
        lines.append(f"{node}: {' '.join(waiting)}")
    raise ScheduleError("deadlock, never ran: " + "; ".join(lines))


def check_schedule(plan: Plan) -> None:
    """Raise ScheduleError unless every owner's iteration of `plan` runs to its end."""
    dry_run(plan)
