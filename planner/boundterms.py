"""One owner's iteration as lower-bound terms (`planner.bound`): busy seconds per resource as
linear forms in the cuts, and the iteration's length as a path graph, both without wake-ups.

The terms are the cut model's (`planner.taskwalk`, `planner.taskpath`) walked for a single
owner at one batch size, with every wake-up set to zero: the simulator charges a wake-up only
on a cold pass (or, on an emulated node, on every pass, which the action forms already hold),
so each term is at most what the simulator charges.

The path graph states s_v >= s_u + w for the orders a dry run of the lone owner gives: a link's
messages in sending order, a stream's tasks in arrival order. Those orders hold in every run,
whatever the other owners do, when each is forced by causality: `orders_forced` checks that
every two messages sent in a row on a link by different tasks u, v have v after u in the
precedence of the execution rule (a barrier after the node's earlier tasks of the iteration,
a triggered task after the barrier before it, a task after the task whose message triggers
it, a stream's tasks in the order their messages are sent). By induction over the graph's
topological order every edge then holds in the simulator, and the longest path is at most
the owner's simulated iteration. Where a check fails the path is not used. The same edges
bound each task's (each message's) start from below (`head`) and the time from its start to
the iteration's end (so, less its work, `tail`): `PathTerms`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mpsl.actions import Msg, Task
from mpsl.data import micro_batch_count
from mpsl.schedule import in_flight, tasks_by_node
from planner.forms import Form, PathGraph, static_order, values_all
from planner.taskpath import iteration_graph
from planner.taskwalk import GroupWalk, OwnerGroup, Setting

CHUNK = 4096  # cut rows per evaluation of a path graph (its start times: vertices x rows)


class NoWakeWalk(GroupWalk):
    """The cut model's walk of one owner with every wake-up zero."""

    def wake(self, task: Task) -> float:
        return 0.0


@dataclass
class PathTerms:
    """An iteration's least `length` per cut row and, per processor or link, the tasks and
    messages on it whose work ends before a path to the iteration's end starts (each as a
    mask per row): their seconds (`busy`), the earliest start of one (`head`) and the least
    time from the end of one to the iteration's end (`tail`; +inf where there is none)."""

    length: np.ndarray
    busy: dict[str, np.ndarray]
    head: dict[str, np.ndarray]
    tail: dict[str, np.ndarray]


class IterationTerms:
    """One iteration of one owner: `loads`, busy seconds per resource (simulator names), and
    `own`, the owner's own; `path` its `PathTerms` from the path graph (made on first use),
    or, where the graph's orders are not forced, its length from `own` alone."""

    def __init__(self, walk: NoWakeWalk, forced: dict[tuple[int, int], bool]) -> None:
        self.walk, self.forced = walk, forced
        self._graph: PathGraph | None = None
        self.loads = walk.loads()
        self.own = self.loads.get(walk.g.rep, Form())

    def path(self, bounds: np.ndarray) -> PathTerms:
        """The iteration's `PathTerms` for every row of `bounds`."""
        n = self.walk.g.n
        key = (n, in_flight(self.walk.s.plan, n))  # the tasks' shape, whatever the batch
        if key not in self.forced:
            self.forced[key] = orders_forced(self.walk)
        if not self.forced[key]:
            return PathTerms(self.own.values(bounds), {}, {}, {})
        if self._graph is None:
            self._graph = iteration_graph(self.walk)
        graph = self._graph
        parts = [path_terms(graph, bounds[i:i + CHUNK]) for i in range(0, len(bounds), CHUNK)]
        if len(parts) == 1:
            return parts[0]
        return PathTerms(np.concatenate([p.length for p in parts]),
                         *({r: np.concatenate([getattr(p, f)[r] for p in parts])
                            for r in parts[0].busy} for f in ("busy", "head", "tail")))


def iteration_terms(setting: Setting, group: OwnerGroup, batch: int, n: int,
                    forced: dict[tuple[int, int], bool] | None = None) -> IterationTerms:
    """The terms of `group.rep`'s iteration of `batch` samples in its micro-batches under N =
    `n` (`mpsl.data.micro_batch_count`).
    `forced` keeps `orders_forced` by (N, in flight) for the next batch size (same setting
    and owner: the tasks do not depend on the batch size)."""
    s = dataclasses.replace(setting, batch=batch, split=False)
    g = dataclasses.replace(group, members=[group.rep],
                            n=micro_batch_count(batch, n, setting.smallest))
    return IterationTerms(NoWakeWalk(s, g), {} if forced is None else forced)


def path_terms(graph: PathGraph, bounds: np.ndarray) -> PathTerms:
    """The graph's `PathTerms` (`PathGraph.longest_all` for the length), every distinct form
    (by coefficients) evaluated once, a level of edges at a time (`PathGraph.layers`)."""
    lay = graph.layers()
    weight = values_all(lay.distinct, bounds)
    R = len(bounds)
    s = graph.starts_all(weight)  # earliest starts
    to_end = np.full((len(graph.names), R), -np.inf)  # longest path from a start to an end
    np.maximum.at(to_end, lay.end_u, weight[lay.end_w])
    for g in lay.backward:
        to_end[g.heads] = np.maximum(to_end[g.heads], g.reduce(weight[g.w] + to_end[g.v]))
    length = np.maximum(0.0, np.max(s[lay.end_u] + weight[lay.end_w], axis=0, initial=0.0))
    work = weight[lay.work].reshape(len(graph.names), R)
    slack = to_end - work
    counted = (slack >= 0) & (work > 0)
    busy, head, tail = {}, {}, {}
    for r, on in graph.on_resources().items():
        m = counted[on]
        busy[r] = np.where(m, work[on], 0.0).sum(axis=0)
        head[r] = np.where(m, s[on], np.inf).min(axis=0)
        tail[r] = np.where(m, slack[on], np.inf).min(axis=0)
    return PathTerms(length, busy, head, tail)


def orders_forced(walk: GroupWalk) -> bool:
    """Whether every two messages sent in a row on a link by different tasks are ordered by
    the execution rule's precedence (see the module's docstring)."""
    rank, links = walk.run_order()
    tasks = walk.tasks
    index = {id(t): i for i, t in enumerate(tasks)}
    after: list[set[int]] = [set() for _ in tasks]

    def edge(u: Task, v: Task) -> None:
        after[index[id(u)]].add(index[id(v)])

    receiver = {(t.node, t.key): t for t in tasks if t.key is not None}
    for sends in links.values():
        for task, i in sends:
            a = task.actions[i]
            assert a.dst is not None and a.msg is not None and a.mb is not None
            to = task.sent_part(i) + (1 if a.msg is Msg.ACT else -1)
            edge(task, receiver[(a.dst, (a.msg, to, a.mb))])
    for mine in tasks_by_node(tasks).values():
        _node_edges(mine, rank, edge)
    reach = _descendants(after)
    for sends in links.values():
        for (u, _), (v, _) in zip(sends, sends[1:]):
            if u is not v and not reach[index[id(u)]] >> index[id(v)] & 1:
                return False
    return True


def _node_edges(tasks: list[Task], rank: dict[int, int],
                edge: Callable[[Task, Task], None]) -> None:
    """Precedence on one node (list order): barriers after every earlier task, triggered
    tasks after the barrier before them, each stream's tasks in their dry-run order."""
    barrier: Task | None = None
    segment: list[Task] = []
    for t in [*tasks, None]:
        if t is not None and t.trigger is not None:
            if barrier is not None:
                edge(barrier, t)
            segment.append(t)
            continue
        streams: dict[str, list[Task]] = {}
        for u in segment:
            assert u.trigger is not None
            streams.setdefault(u.trigger.src, []).append(u)
        for chain in streams.values():
            chain.sort(key=lambda u: rank[id(u)])
            for u, v in zip(chain, chain[1:]):
                edge(u, v)
        if t is not None:
            for u in segment + ([barrier] if barrier is not None else []):
                edge(u, t)
        barrier, segment = t, []


def _descendants(after: list[set[int]]) -> list[int]:
    """Per vertex, the bit mask of the vertices reachable from it."""
    order = static_order(len(after), [(u, v, None) for u, vs in enumerate(after) for v in vs])
    reach = [0] * len(after)
    for u in reversed(order):
        for v in after[u]:
            reach[u] |= (1 << v) | reach[v]
    return reach
