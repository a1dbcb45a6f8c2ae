"""The execution rule, once: which task of a node runs next.

Used by the data owner and the compute node (wall-clock times), by the simulator (simulated
times) and by the dry run that checks a plan for deadlocks. The rule:

- a node's tasks of one owner's iteration keep their list order (`iteration_tasks`);
- a barrier (a task without a trigger) is ready once every earlier task of that iteration on
  the node is done;
- a triggered task is ready once its message has arrived and the barriers before it are done;
- among ready tasks, the one that became ready first runs first: for a triggered task, the
  time its message arrived; ties go to the lower owner index, then to the order of readiness;
- with round gating (a compute node that averages its copies), tasks of a round wait until
  `open` has admitted that round.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from typing import Any

from mpsl.actions import Task, TriggerKey


class _Iteration:
    """One owner's tasks of one iteration on this node."""

    __slots__ = ("entries", "done", "barrier", "barriers", "waiting", "round")

    def __init__(self, round_id: int) -> None:
        self.entries: list[Entry] = []
        self.done = 0
        self.barrier = 0  # index of the next barrier (len(entries): none left)
        self.barriers: list[int] = []  # the indices of the barriers after it, last first
        self.waiting: list[Entry] = []  # arrived, behind a barrier not yet done
        self.round = round_id


class Entry:
    """A task of one owner's iteration, with what its message brought (`payload`)."""

    __slots__ = ("task", "index", "group", "owner", "iteration", "arrival", "payload")

    def __init__(self, task: Task, index: int, group: _Iteration, owner: int,
                 iteration: int) -> None:
        self.task, self.index, self.group = task, index, group
        self.owner, self.iteration = owner, iteration
        self.arrival = 0.0
        self.payload: Any = None

    @property
    def round(self) -> int:
        return self.group.round

    def __repr__(self) -> str:
        return f"Entry(owner {self.owner}, iteration {self.iteration}, {self.task})"


class TaskQueue:
    """One node's tasks of every owner's iterations, released by the execution rule."""

    def __init__(self, gated: bool = False) -> None:
        self._ready: list[tuple[float, int, int, Entry]] = []
        self._gated: list[tuple[float, int, int, Entry]] = []
        self._expected: dict[tuple[int, int, TriggerKey], Entry] = {}
        self._seq = itertools.count()
        self.open_round = 0 if gated else math.inf  # rounds up to this one may run
        self.unfinished = 0  # iterations added and not yet done
        self._live: dict[_Iteration, None] = {}  # those iterations, in the order added

    def add(self, owner: int, iteration: int, tasks: Sequence[Task], t: float,
            round_id: int = 0) -> None:
        """Register this node's tasks (list order) of one iteration of `owner` at time `t`."""
        group = _Iteration(round_id)
        entries, expected, barriers = group.entries, self._expected, group.barriers
        for i, task in enumerate(tasks):
            entry = Entry(task, i, group, owner, iteration)
            entries.append(entry)
            key = task.key
            if key is None:
                barriers.append(i)
            else:
                expected[(owner, iteration, key)] = entry
        barriers.append(len(tasks))
        barriers.reverse()
        group.barrier = barriers.pop()
        if not entries:
            return
        self.unfinished += 1
        self._live[group] = None
        if group.barrier == 0:
            self._make_ready(group.entries[0], t)

    def expects(self, owner: int, iteration: int, key: TriggerKey) -> bool:
        return (owner, iteration, key) in self._expected

    def deliver(self, owner: int, iteration: int, key: TriggerKey, t: float,
                payload: Any = None) -> Entry | None:
        """A message arrived at `t`: the task it triggers, or None if no task waits for it."""
        entry = self._expected.pop((owner, iteration, key), None)
        if entry is None:
            return None
        entry.arrival, entry.payload = t, payload
        group = entry.group
        if entry.index < group.barrier:  # _make_ready, inline (the simulator's hot path)
            item = (t, owner, next(self._seq), entry)
            if group.round > self.open_round:
                self._gated.append(item)
            else:
                heapq.heappush(self._ready, item)
        else:
            group.waiting.append(entry)
        return entry

    def pop(self) -> Entry | None:
        """The ready task to run next, or None when none is ready."""
        return heapq.heappop(self._ready)[3] if self._ready else None

    def __bool__(self) -> bool:
        """Whether a task is ready."""
        return bool(self._ready)

    def finish(self, entry: Entry, t: float) -> bool:
        """`entry` ended at `t`; True when it was the last task of its iteration here."""
        group = entry.group
        group.done += 1
        if entry.task.trigger is None:  # a barrier: move to the next one, free the waiting
            nxt = group.barrier = group.barriers.pop()
            still = []
            for w in group.waiting:
                if w.index < nxt:
                    self._make_ready(w, w.arrival)
                else:
                    still.append(w)
            group.waiting = still
        if group.barrier < len(group.entries) and group.done == group.barrier:
            self._make_ready(group.entries[group.barrier], t)
        finished = group.done == len(group.entries)
        if finished:
            self.unfinished -= 1
            del self._live[group]
            group.entries = []  # no cycle left: the iteration is freed once its entries are
        return finished

    def drop_owner(self, owner: int) -> int:
        """Forget every task of `owner` (a data owner lost mid-iteration); the iterations
        dropped."""
        groups = [g for g in self._live if g.entries[0].owner == owner]
        for g in groups:
            del self._live[g]
        self.unfinished -= len(groups)
        self._ready = [i for i in self._ready if i[1] != owner]
        heapq.heapify(self._ready)
        self._gated = [i for i in self._gated if i[1] != owner]
        self._expected = {k: e for k, e in self._expected.items() if k[0] != owner}
        return len(groups)

    def open(self, round_id: int) -> None:
        """Admit the tasks of rounds up to `round_id` (after a compute node's averaging)."""
        self.open_round = round_id
        keep = []
        for item in self._gated:
            if item[3].round <= round_id:
                heapq.heappush(self._ready, item)
            else:
                keep.append(item)
        self._gated = keep

    def sizes(self) -> tuple[int, int, int, int]:
        """Ready, gated and expected tasks, unfinished iterations (a cheap summary)."""
        return len(self._ready), len(self._gated), len(self._expected), self.unfinished

    def state(self, t: float, base: Sequence[int]) -> tuple[tuple[Any, ...], list[float]]:
        """What decides this queue's future, relative to time `t` and to each owner's
        iteration `base[owner]`: (the discrete part, the times). Two queues whose states are
        equal (times within a tolerance) release their tasks alike (planner.steady)."""
        disc: list[Any] = [self.open_round, self.unfinished]
        times: list[float] = []
        for g in self._live:
            e0 = g.entries[0]
            disc.append((e0.owner, e0.iteration - base[e0.owner], g.round, g.done, g.barrier,
                         tuple(w.index for w in g.waiting)))
            times.extend(w.arrival - t for w in g.waiting)
        for key, owner, _, e in sorted(self._ready, key=lambda i: (i[0], i[1], i[2])):
            disc.append((owner, e.iteration - base[owner], e.index))
            times.append(key - t)
        for key, owner, _, e in self._gated:
            disc.append((owner, e.iteration - base[owner], e.index))
            times.append(key - t)
        disc.append(frozenset((o, j - base[o], k) for o, j, k in self._expected))
        return tuple(disc), times

    def shift(self, dt: float, steps: Sequence[int]) -> None:
        """Every time `dt` later and owner k's iterations `steps[k]` on (whole periods of a
        steady state skipped, planner.steady); the order of ready tasks is kept."""
        for g in self._live:
            for e in g.entries:
                e.iteration += steps[e.owner]
                e.arrival += dt
        self._ready = [(k + dt, o, s, e) for k, o, s, e in self._ready]
        self._gated = [(k + dt, o, s, e) for k, o, s, e in self._gated]
        self._expected = {(o, j + steps[o], k): e for (o, j, k), e in self._expected.items()}

    def stuck(self) -> list[Entry]:
        """Tasks still waiting for a message (for deadlock reports)."""
        return list(self._expected.values())

    def _make_ready(self, entry: Entry, key: float) -> None:
        item = (key, entry.owner, next(self._seq), entry)
        if entry.group.round > self.open_round:
            self._gated.append(item)
        else:
            heapq.heappush(self._ready, item)


def may_run_ahead(before: dict[int, set[str | None]], owner: int, kind: str | None) -> bool:
    """Whether an owner's ready task of `kind` (a batching kind; None: none) may run ahead of
    that owner's earlier tasks left, whose kinds `before` holds by owner (and gets this one's):
    only where none of them is of its kind or of none, so that an owner's forwards keep their
    order among themselves, and its backwards theirs (their gradients add up in it)."""
    seen = before.setdefault(owner, set())
    ok = kind is not None and kind not in seen and None not in seen
    seen.add(kind)
    return ok
