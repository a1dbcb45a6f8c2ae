"""Batched per-owner copies in the simulator: a compute node with `batch_owners: auto` groups
its ready tasks and times each group by its batched profile (planner.batched), as
nodes.batched runs them.

Which tasks go together (nodes.batched's rule). When the node is free it takes every ready task,
in the task queue's order (a *serve*). The first task left takes along the later ones of other
owners that are of the same kind on the same micro-batch size, one per owner, each only where no
older task left of its owner is of its kind or of none (`mpsl.taskqueue.may_run_ahead`); then
the next task left, and so on. A group runs in owner order; the serve's groups run back to back,
and the node takes the next serve when the last one ends. Kinds (`kind_of`): F+B on the last
part (FUSED), F then an ACT send (FORWARD), B then a GRAD send (BACKWARD, only when its forward
ran batched); any other task runs alone.

Times. A group's batched phase takes factor(g) of its g tasks' pass seconds one by one:
- FUSED, g >= 2: the forwards (one phase), then the backwards (another);
- FORWARD, g >= MIN_FORWARD: the forwards (fewer run one by one, as without batching);
- BACKWARD (g >= 1): the recomputed forwards and the backwards, in one phase.
A phase costs the profile's wake-up time once when the processor was idle before the serve,
or last ran another owner than the group's first, or is an emulated device (every phase).
Then each task's other actions (its SENDs; its STEP unless two or more tasks of the group end
with one) run in owner order as the engine runs them (`Engine.dispatch`), then those STEPs in
one phase of their summed seconds. A phase's time is split evenly, in owner order, over its
tasks' actions in the trace, as nodes.batched writes it. A task alone runs as the engine runs
it. Every task of a group ends at the group's end (a FINISH event; the serve's last one a
DONE, which frees the node). Memory as without batching: a task's activations are held from
its forward's start to its backward's end (an upper bound where a batched forward keeps only
its input).

Not batched (as at run time): SL's shared copy, noised cuts (privacy.cut_sigma), per-owner
parts of other sizes, fewer than two owners, or no batched profile (the node's profile's
`batched`: then the node runs as with `off`). An engine with a batching node simulates every
event (no steady-state skip: which forwards ran batched is state it does not compare).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mpsl.actions import Msg
from mpsl.names import CPU
from mpsl.taskqueue import Entry, may_run_ahead
from mpsl.topology import Topology
from mpsl.trace import Event
from planner.batched import BatchedProfile
from planner.program import program, walk
from planner.simstate import DONE, SimNode
from planner.workload import BACKWARD, FORWARD, SEND, STEP, Step

if TYPE_CHECKING:
    from planner.engine import Engine

FINISH = 5  # an engine event: a task of a serve ended, its node still busy with the serve
MIN_FORWARD = 3  # nodes.batched.MIN_FORWARD: fewer forwards run one by one
FUSED, FWD, BWD = "FB", "F", "B"  # nodes.batched's kinds


def kind_of(steps: Sequence[Step], last_part: int) -> str | None:
    """FUSED, FWD or BWD for the task shapes that batch (nodes.batched.task_kind), else None."""
    if len(steps) < 2:
        return None
    a, b = steps[0], steps[1]
    if a.code == FORWARD and b.code == BACKWARD and a.part == last_part:
        return FUSED
    if a.code == FORWARD and b.code == SEND and b.key is not None and b.key[0] is Msg.ACT:
        return FWD
    if a.code == BACKWARD and b.code == SEND and b.key is not None and b.key[0] is Msg.GRAD:
        return BWD
    return None


def batchers(eng: Engine, topo: Topology, profiles: Mapping[str, Any]
             ) -> dict[SimNode, Batching]:
    """A `Batching` for every compute node that batches its owners' copies (module doc)."""
    plan = eng.plan
    if eng.sl or topo.privacy.cut_sigma:
        return {}
    out: dict[SimNode, Batching] = {}
    for spec in topo.compute_nodes:
        bprof = getattr(profiles[spec.name], "batched", None)
        owners = plan.owners_on(spec.name)
        if spec.batch_owners != "auto" or bprof is None or len(owners) < 2 or \
                len({plan.for_owner(k).cuts for k in owners}) != 1:
            continue
        node = eng.nodes[spec.name]
        out[node] = Batching(eng, node, bprof, plan.num_parts - 1)
    return out


def on_finish(eng: Engine, node: SimNode, entry: Entry, t: float) -> None:
    """A FINISH event: the task ended at `t`, the node goes on with its serve."""
    if node.queue.finish(entry, t):
        eng.done(node, entry, t)


class Batching:
    """One compute node's serves: groups formed and timed as the module doc says."""

    def __init__(self, eng: Engine, node: SimNode, profile: BatchedProfile,
                 last_part: int) -> None:
        self.eng, self.node, self.profile, self.last_part = eng, node, profile, last_part
        self.recompute: set[tuple[int, int]] = set()  # (owner, mb) whose forward ran batched

    def kind(self, entry: Entry) -> str | None:
        """The task's batching kind (`kind_of`), None for a task that never batches."""
        return kind_of(self.eng.work.steps(entry.task), self.last_part)

    def key(self, entry: Entry) -> tuple[str, int] | None:
        """What a task must share with others to run batched with them; None: alone."""
        steps = self.eng.work.steps(entry.task)
        kind = kind_of(steps, self.last_part)
        mb = steps[0].mb
        if kind is None or mb is None:
            return None
        if kind == BWD and (entry.owner, mb) not in self.recompute:
            return None
        return (kind, self.eng.sizes[entry.owner][entry.iteration][mb])

    def groups(self, ready: list[Entry]) -> list[tuple[list[Entry], str | None]]:
        """The serve's groups in the order they run, each in owner order, with its kind."""
        keys = [self.key(e) for e in ready]
        kinds = [self.kind(e) for e in ready]
        out: list[tuple[list[Entry], str | None]] = []
        taken = [False] * len(ready)
        for i, head in enumerate(ready):
            if taken[i]:
                continue
            group, key = [head], keys[i]
            if key is not None:
                before = {head.owner: {kinds[i]}}
                for j in range(i + 1, len(ready)):
                    e = ready[j]
                    if taken[j]:
                        continue
                    if may_run_ahead(before, e.owner, kinds[j]) and keys[j] == key:
                        group.append(e)
                        taken[j] = True
                group.sort(key=lambda e: e.owner)
            out.append((group, None if key is None else key[0]))
        return out

    def dispatch(self, entry: Entry, t: float) -> None:
        """Serve from `t`: `entry` (just popped) and every other ready task."""
        node, eng = self.node, self.eng
        node.busy = True
        ready = [entry]
        while (e := node.queue.pop()) is not None:
            ready.append(e)
        cur, idle = t, t > node.free_at
        ends: list[tuple[float, Entry]] = []
        for group, kind in self.groups(ready):
            cur = self.run(group, kind, cur, idle)
            idle = False
            ends += [(cur, e) for e in group]
        eng.busy[node.name] = eng.busy.get(node.name, 0.0) + (cur - t)
        for i, (end, e) in enumerate(ends):
            event = DONE if i == len(ends) - 1 else FINISH
            heapq.heappush(eng.heap, (end, next(eng.seq), event, node, e))

    def run(self, group: list[Entry], kind: str | None, t: float, idle: bool) -> float:
        """Run a group from `t` (`idle`: the processor was idle before): its end."""
        node = self.node
        for e in group:
            if e.payload:
                node.mem.buf(t, -e.payload)
        progs = [self._program(e) for e in group]
        g, cur, start = len(group), t, 0
        cold = idle or group[0].owner != node.last_owner or node.sleeps
        if kind == FUSED and g > 1:
            cur = self._phase(group, progs, 0, cur, cold)
            cur = self._phase(group, progs, 1, cur, node.sleeps)
            start = 2
        elif kind == FWD and g >= MIN_FORWARD:
            cur = self._phase(group, progs, 0, cur, cold)
            self.recompute.update((e.owner, p[0][6].mb) for e, p in zip(group, progs))
            start = 1
        elif kind == BWD:
            cur = self._phase(group, progs, 0, cur, cold, recompute=True)
            self.recompute.difference_update((e.owner, p[0][6].mb) for e, p in zip(group, progs))
            start = 1
        if start:
            node.last_owner = group[-1].owner
        stepping = [i for i, p in enumerate(progs) if start and p[-1][0] == STEP]
        if len(stepping) < 2:
            stepping = []
        for i, (e, prog) in enumerate(zip(group, progs)):
            if start:  # its passes ran batched: the rest (no pass)
                stop = len(prog) - 1 if i in stepping else len(prog)
                cur = walk(self.eng, self.node, e, prog[start:stop], cur, False)
            else:  # alone, as Engine.dispatch runs a task
                cold = (idle and i == 0) or e.owner != node.last_owner or node.sleeps
                node.last_owner = e.owner
                cur = walk(self.eng, self.node, e, prog, cur, cold)
        if stepping:
            cur = self._steps([group[i] for i in stepping], [progs[i][-1] for i in stepping],
                              cur)
        return cur

    def _program(self, e: Entry) -> tuple[tuple[Any, ...], ...]:
        sizes = self.eng.sizes[e.owner][e.iteration]
        prog = self.node.programs.get((id(e.task), id(sizes)))
        return prog if prog is not None else program(self.eng, self.node, e.task, sizes)

    def _phase(self, group: list[Entry], progs: list[tuple[tuple[Any, ...], ...]], index: int,
               t: float, cold: bool, recompute: bool = False) -> float:
        """Action `index` (a pass) of every task of the group in one batched call: its end."""
        node = self.node
        acts = [p[index] for p in progs]
        warm = sum(a[1] for a in acts)
        if recompute:  # the forwards again, then the backwards
            sizes = self.eng.sizes
            warm += sum(node.pass_s(a[6].part, a[6].span,
                                    sizes[e.owner][e.iteration][a[6].mb])[0]
                        for e, a in zip(group, acts))
        d = self.profile.pass_time(warm, len(group))
        if cold:
            d += acts[0][2] - acts[0][1]  # the wake-up, once
        end = t + d
        for a in acts:
            if a[3]:
                if a[0] == FORWARD:
                    node.mem.act(t, a[3])
                else:
                    node.mem.act(end, -a[3])
        self._events(group, [a[6] for a in acts], t, end)
        return end

    def _steps(self, group: list[Entry], acts: list[tuple[Any, ...]], t: float) -> float:
        """The STEPs of the group's tasks that end with one, in one phase: its end."""
        end: float = t + sum(a[1] for a in acts)
        self._events(group, [a[6] for a in acts], t, end)
        return end

    def _events(self, group: list[Entry], steps: list[Step], t0: float, t1: float) -> None:
        """A phase's trace: its time split evenly over the group's actions, in owner order."""
        events = self.eng.events if self.eng.record else None
        if events is None:
            return
        d = (t1 - t0) / len(group)
        for i, (e, s) in enumerate(zip(group, steps)):
            events.append(Event(self.node.name, CPU, s.label, e.owner, e.iteration, s.mb,
                                t0 + i * d, t0 + (i + 1) * d))


def batching(topo: Topology, profiles: Mapping[str, Any]) -> bool:
    """Whether some compute node may batch its owners' copies (batch_owners: auto with a
    batched profile): the planner's busy-term lower bounds (planner.bound), which take one
    task at a time, do not hold then."""
    return topo.mode != "sl" and not topo.privacy.cut_sigma and any(
        c.batch_owners == "auto" and getattr(profiles.get(c.name), "batched", None) is not None
        for c in topo.compute_nodes)
