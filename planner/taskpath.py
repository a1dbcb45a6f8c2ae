"""One owner's iteration as a graph of start times: the cut model's path term.

The vertices are the iteration's start (time 0), every task of the owner's iteration (the
moment its first action begins) and every message (the moment its transmission begins). An
edge (u, v, w) says s_v >= s_u + w, w a linear form in the cuts:

- send: task -> each message it sends, w = the task's actions before the SEND;
- link: a message -> the next one on the same link, w = its transmission (a link sends one
  message at a time, in the order they were sent);
- arrival: a message -> the task it triggers, w = transmission + latency + the task's
  wake-up (its processor waited for the message: the simulator's cold first pass);
- barrier: every earlier task of the node -> a barrier, w = that task's duration; a barrier
  -> the first task of each stream after it, w = the barrier's duration;
- stream: the tasks of a node triggered over one link (a stream) run in the order their
  messages arrive, since links keep their order and the task queue takes the oldest arrival
  first: each -> the next of its stream, w = its duration;
- the owner's first task starts at 0 plus its wake-up (the first iteration starts cold).

The iteration ends with the owner's tasks from its last barrier on (its STEP): the next one
starts there; what compute nodes run later overlaps it and is in their busy time. Minimizing
T >= every end makes T the longest path, with O(edges) constraints.

The orders (of a stream, of a link) are a dry run's (`mpsl.dryrun`, the execution rule).
Where every node receives the owner's messages over one link (PiPar, SFL, SL, MP-SL with
one compute node), the order does not depend on the durations, the graph orders every pair
of tasks on a node, and its longest path is the simulated iteration of a lone owner (with
wake-ups of zero: a wake-up is charged whenever the message's arrival bounds the start, the
simulator only when it comes after the processor went idle). A node fed over two links (the
middle of a longer chain) runs its two streams interleaved as their messages come; the
graph does not order tasks of different streams, so there the path is a lower bound, and
the node's busy time holds their sum.
"""

from __future__ import annotations

from mpsl.actions import Msg, Task
from mpsl.schedule import tasks_by_node
from planner.forms import Form, GraphBuilder, PathGraph
from planner.taskwalk import GroupWalk

Vertices = dict[int, int]  # id(task) -> vertex


def iteration_graph(walk: GroupWalk) -> PathGraph:
    """The start-time graph of the group representative's iteration."""
    gb = GraphBuilder()
    rank, links = walk.run_order()
    vertex = {id(t): gb.vertex(f"{t.node} [{t.actions[0]} ...]", t.node, walk.duration(t))
              for t in walk.tasks}  # a name to read, not a key: the first action alone
    _messages(walk, gb, vertex, links)
    by_node = tasks_by_node(walk.tasks)
    for tasks in by_node.values():
        _sequence(walk, gb, vertex, rank, tasks)
    owner = by_node[walk.g.rep]
    last = max((i for i, t in enumerate(owner) if t.trigger is None), default=0)
    for t in owner[last:]:
        gb.end(vertex[id(t)], walk.duration(t))
    return gb.graph()


def _messages(walk: GroupWalk, gb: GraphBuilder, vertex: Vertices,
              links: dict[str, list[tuple[Task, int]]]) -> None:
    """Send, link and arrival edges of every message, link by link in sending order."""
    receiver = {(t.node, t.key): t for t in walk.tasks if t.key is not None}
    arrivals: dict[tuple[int, float], Form] = {}  # by transmission form and the rest: shared

    def arrival(tx: Form, rest: float) -> Form:
        got = arrivals.get((id(tx), rest))
        if got is None:
            got = arrivals[(id(tx), rest)] = tx.plus(Form(rest))
        return got

    for link, sends in links.items():
        prev: tuple[int, Form] | None = None
        for task, i in sends:
            a = task.actions[i]
            hop, tx = walk.message(task, i)
            m = gb.vertex(f"{link} {a}", link, tx)
            gb.edge(vertex[id(task)], m, walk.prefixes(task)[i])
            if prev is not None:
                gb.edge(prev[0], m, prev[1])
            assert a.dst is not None and a.msg is not None and a.mb is not None
            to = task.sent_part(i) + (1 if a.msg is Msg.ACT else -1)
            target = receiver[(a.dst, (a.msg, to, a.mb))]
            gb.edge(m, vertex[id(target)], arrival(tx, hop.latency_s + walk.wake(target)))
            prev = (m, tx)


def _sequence(walk: GroupWalk, gb: GraphBuilder, vertex: Vertices, rank: dict[int, int],
              tasks: list[Task]) -> None:
    """Barrier and stream edges of one node's tasks (list order)."""
    barrier: Task | None = None
    segment: list[Task] = []  # triggered tasks since the last barrier

    def close() -> None:
        streams: dict[str, list[Task]] = {}
        for t in segment:
            assert t.trigger is not None
            streams.setdefault(t.trigger.src, []).append(t)
        for chain in streams.values():
            chain.sort(key=lambda t: rank[id(t)])
            if barrier is not None:
                gb.edge(vertex[id(barrier)], vertex[id(chain[0])], walk.duration(barrier))
            for u, v in zip(chain, chain[1:]):
                gb.edge(vertex[id(u)], vertex[id(v)], walk.duration(u))

    for t in tasks:
        if t.trigger is not None:
            segment.append(t)
            continue
        close()
        before = segment + ([barrier] if barrier is not None else [])
        if not before:
            gb.edge(0, vertex[id(t)], Form(walk.wake(t)))
        for u in before:
            gb.edge(vertex[id(u)], vertex[id(t)], walk.duration(u))
        barrier, segment = t, []
    close()
