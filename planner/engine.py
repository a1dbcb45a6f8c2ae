"""The cost model's event engine: every owner's tasks run by `mpsl.taskqueue.TaskQueue` on
each node, messages queued on the links, and the aggregation rounds (see planner.cost)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from mpsl.actions import Action, Msg
from mpsl.names import AGGREGATOR, CPU, OWNER
from mpsl.plan import Plan
from mpsl.taskqueue import Entry
from mpsl.topology import Topology
from mpsl.trace import Event
from planner.batchsim import batchers, on_finish
from planner.profile import Profile
from planner.program import SpanCosts, program, walk
from planner.rate import RateSkip, owner_classes
from planner.resources import (
    AVERAGE_BYTES_PER_S,
    HEADER_BYTES,
    copies_on_compute,
    emulated_nodes,
)
from planner.simstate import DONE as _DONE
from planner.simstate import GLOBAL as _GLOBAL
from planner.simstate import MSG as _MSG
from planner.simstate import PARAMS as _PARAMS
from planner.simstate import SYNC as _SYNC
from planner.simstate import SimNode, Wires
from planner.steady import SteadyState
from planner.workload import Workload, send_label

_METRICS = send_label(Msg.METRICS, AGGREGATOR)  # a loss report's printed SEND


class Engine:
    """One epoch of every owner's tasks and aggregation rounds (see planner.cost's rules);
    with `steady`, whole periods of a steady state are skipped (planner.steady)."""

    def __init__(self, topo: Topology, plan: Plan, profs: dict[str, Profile],
                 iterations: int | None, samples: list[int] | None, record: bool,
                 steady: bool = False) -> None:
        self.plan, self.record = plan, record
        self.steady = SteadyState(rate=RateSkip()) if steady and not record else None
        self._mark = False  # a checkpoint is due at the end of this instant
        self.onames = [o.name for o in topo.owners]
        self.K = len(self.onames)
        bprof = profs[self.onames[0]]
        self.work = Workload(topo, plan, bprof, iterations, samples)
        self.sl = self.work.sl
        self.classes = owner_classes(topo, plan, self.work.batches)  # owners alike
        self.busy: dict[str, float] = {}
        self.events: list[Event] = []
        self.wires = Wires(topo, self.busy, self.events if record else None)
        self.owner_params = sum(bprof.param_bytes(plan.parts[p]) for p in plan.parts_on(OWNER))
        # per-owner plans: each owner's parameters, the owners a node serves, no skipping
        self.hetero = not plan.uniform
        self.owner_bytes = [sum(bprof.param_bytes(v.parts[p]) for p in v.parts_on(OWNER))
                            for v in map(plan.for_owner, range(self.K))]
        self.hosts = {n: len(plan.owners_on(n)) for n in plan.placement if n != OWNER}
        self.span_costs: SpanCosts = {}
        if self.hetero:
            self.steady = None
        self.nodes = self._make_nodes(topo, profs)
        self.owner_nodes = [self.nodes[name] for name in self.onames]
        self.sizes = self.work.sizes
        self.rank = {node: i for i, node in enumerate(self.nodes.values())}  # owners, chain
        self.metrics_from = None if plan.labels_local else plan.placement[-1]
        self.heap: list[tuple[Any, ...]] = []
        self.seq = itertools.count()
        self.dirty: dict[SimNode, None] = {}  # nodes that may start something (insertion order)
        self.it_start = [0.0] * self.K
        self.it_next = [0] * self.K
        self.round_now = [0] * self.K
        self.it_times: list[float] = []
        self.params_in = [0] * self.work.rounds
        self.end = 0.0  # the clock: the last event's time
        # the epoch's end: every owner has its last GLOBAL (SL: the aggregator the last
        # PARAMS) and every node has run its last task and averaging; messages that trigger
        # nothing (METRICS, a compute node's PARAMS) arrive when they do
        self.last = 0.0
        self.batchers = batchers(self, topo, profs)  # batch_owners: auto (planner.batchsim)
        if self.batchers:
            self.steady = None

    # ---------------------------------------------------------------------------- set-up

    def _make_nodes(self, topo: Topology, profs: dict[str, Profile]) -> dict[str, SimNode]:
        plan = self.plan
        emulated = emulated_nodes(topo)
        nodes: dict[str, SimNode] = {}
        mine = plan.parts_on(OWNER)
        alike: dict[tuple[object, ...], SimNode] = {}  # owners alike share their costs
        for k, name in enumerate(self.onames):
            node = nodes[name] = SimNode(name, profs[name], name in emulated, k)
            view = plan.for_owner(k)
            key = (id(node.prof), node.sleeps, id(view))
            same = alike.get(key)
            if same is None:
                alike[key] = node
                self._set_costs(node, view.parts_on(OWNER) if self.hetero else mine, True, view)
            else:
                node.act, node.param_bytes, node.steps = same.act, same.param_bytes, same.steps
                node.passes = same.passes
        copies = copies_on_compute(topo, self.K)
        for p, name in enumerate(plan.placement):
            if name == OWNER or name in nodes:
                continue
            parts = plan.parts_on(name)
            # a copy per owner, averaged at every round's end (one owner: one copy, averaged
            # all the same, as the runtime does); SL's one shared copy is not averaged
            node = nodes[name] = SimNode(name, profs[name], name in emulated, None, not self.sl)
            self._set_costs(node, parts, owner=False)
            after = plan.placement[p + 1] if p + 1 < plan.num_parts else OWNER
            node.next = None if after == OWNER else after
            node.synced = [0] * self.work.rounds
            node.avg_s = copies * node.param_bytes / AVERAGE_BYTES_PER_S
            if self.hetero:  # copies of other sizes
                node.avg_s = sum(node.prof.param_bytes(plan.for_owner(k).parts[p])
                                 for k in plan.owners_on(name)) / AVERAGE_BYTES_PER_S
            node.avg_label = str(Action.avg(parts[0] if len(parts) == 1 else None))
        return nodes

    def _set_costs(self, node: SimNode, parts: list[int], owner: bool,
                   plan: Plan | None = None) -> None:
        """Activation bytes per sample and STEP seconds of the node's parts (of `plan`, an
        owner's own; default the plan's)."""
        spans = [(plan or self.plan).parts[p] for p in parts]
        node.act = {p: node.prof.act_bytes(s) for p, s in zip(parts, spans)}
        node.param_bytes = sum(node.prof.param_bytes(s) for s in spans)
        if owner:
            node.steps = {None: node.prof.step(spans, node.sleeps)}
        else:
            node.steps = {p: node.prof.step([s], node.sleeps) for p, s in zip(parts, spans)}

    # ---------------------------------------------------------------------------- running

    def run(self) -> None:
        """Simulate the epoch to its end (`last`). It makes no cycles, so its caller may
        pause the cyclic collector (`planner.cost.simulate` does: `planner.gcpause`)."""
        try:
            self._run()
        finally:
            for node in self.nodes.values():
                node.programs.clear()  # they name other nodes: no cycle left behind

    def _run(self) -> None:
        if self.sl:  # the owners take turns: the aggregator hands the owner part to the first
            self.send_global(0, 0, 0.0)
        else:
            for k in range(self.K):
                self.begin_round(k, 0, 0.0)
        handlers: tuple[Callable[[Any, Any, float], None], ...] = (
            self.on_done, self.on_message, self.on_sync, self.on_params, self.on_global,
            lambda a, b, t: on_finish(self, a, b, t))
        heap, pop, dirty, start_free = self.heap, heapq.heappop, self.dirty, self._start_free
        owners, rounds, hosts = self.K, self.work.rounds, self.hosts
        while heap or dirty:
            t = heap[0][0] if heap else self.end
            while heap and heap[0][0] == t:
                _, _, kind, a, b = pop(heap)
                if kind == _MSG:  # on_message, inline: the most frequent event
                    k, j, key, nbytes = b
                    if a.queue.deliver(k, j, key, t, nbytes) is None:
                        self.on_message(a, b, t)  # raises
                    mem = a.mem  # the receiver buffers it (MemoryLog.buf, inline)
                    mem.buf_t.append(t)
                    mem.buf_d.append(nbytes)
                    if not a.busy:  # a busy node looks again when its task is done
                        dirty[a] = None
                elif kind == _DONE:  # on_done, inline
                    a.busy = False
                    a.free_at = self.last = t
                    dirty[a] = None
                    if b is None or a.queue.finish(b, t):
                        self.done(a, b, t)
                else:
                    handlers[kind](a, b, t)
            if len(dirty) == 1:  # one node: _start_free's common case (no round due), inline
                node = next(iter(dirty))
                synced = node.synced
                if not node.busy and (synced is None or node.round >= rounds or synced[
                        node.round] != hosts.get(node.name, owners)):
                    dirty.clear()
                    entry = node.queue.pop()
                    if entry is not None:
                        self.dispatch(node, entry, t)
                else:
                    start_free(t)
            elif dirty:
                start_free(t)
            if self._mark:
                self._mark = False
                assert self.steady is not None
                t += self.steady.checkpoint(self, t)
            self.end = t

    def _start_free(self, t: float) -> None:
        """Every free node that can: closes a round whose syncs are in, or runs a ready task."""
        owners, rounds, hosts = self.K, self.work.rounds, self.hosts
        # at one instant, free nodes start in a fixed order (owners, then the chain), as in
        # mpsl.dryrun: the order of their sends breaks ties of arrival elsewhere
        dirty = sorted(self.dirty, key=self.rank.__getitem__) if len(self.dirty) > 1 else (
            self.dirty)
        for node in dirty:
            if node.busy:
                continue
            synced = node.synced
            while synced is not None and not node.busy and node.round < rounds and synced[
                    node.round] == hosts.get(node.name, owners):
                self.close_round(node, t)
            if not node.busy:
                entry = node.queue.pop()
                if entry is not None:
                    self.dispatch(node, entry, t)
        self.dirty.clear()

    def push(self, t: float, kind: int, a: Any, b: Any = None) -> None:
        heapq.heappush(self.heap, (t, next(self.seq), kind, a, b))

    def start_iteration(self, k: int, t: float) -> None:
        j = self.it_next[k]
        self.it_start[k] = t
        if (k == 0 or self.sl) and self.steady is not None and self.steady.active:
            self._mark = True
        n_mb = len(self.work.sizes[k][j])
        r, dirty = self.round_now[k], self.dirty
        for name, tasks in self.work.tasks(k, n_mb):
            node = self.owner_nodes[k] if name is None else self.nodes[name]
            node.queue.add(k, j, tasks, t, r)
            dirty[node] = None

    def dispatch(self, node: SimNode, entry: Entry, t: float) -> None:
        """Run the node's ready task `entry` (just popped): its actions back to back from `t`."""
        if self.batchers and node in self.batchers:  # with the others ready (planner.batchsim)
            self.batchers[node].dispatch(entry, t)
            return
        node.busy = True
        k, j = entry.owner, entry.iteration
        if entry.payload:  # the message's buffer is let go (MemoryLog.buf, inline)
            mem = node.mem
            mem.buf_t.append(t)
            mem.buf_d.append(-entry.payload)
        sizes = self.sizes[k][j]
        # the first pass of a task wakes (caches refilled) after an idle processor or when it
        # works on another owner's copy than the task before; an emulated device, every pass
        cold = t > node.free_at or k != node.last_owner or node.sleeps
        node.last_owner = k
        task = entry.task
        prog = node.programs.get((id(task), id(sizes)))
        if prog is None:
            prog = program(self, node, task, sizes)
        cur = walk(self, node, entry, prog, t, cold)
        self.busy[node.name] = self.busy.get(node.name, 0.0) + (cur - t)
        heapq.heappush(self.heap, (cur, next(self.seq), _DONE, node, entry))

    def on_message(self, node: SimNode, msg: tuple[Any, ...], t: float) -> None:
        """An ACT or GRAD arrived: the task it triggers may go (the receiver buffers it)."""
        k, j, key, nbytes = msg
        if node.queue.deliver(k, j, key, t, nbytes) is None:
            raise RuntimeError(f"{node.name}: no task of owner {k} iteration {j} takes {key}")
        node.mem.buf(t, nbytes)
        self.dirty[node] = None

    def on_done(self, node: SimNode, entry: Entry | None, t: float) -> None:
        """A task (None: an averaging) ended on the node."""
        node.busy = False
        node.free_at = self.last = t
        self.dirty[node] = None
        if entry is None or node.queue.finish(entry, t):
            self.done(node, entry, t)

    def done(self, node: SimNode, entry: Entry | None, t: float) -> None:
        """After an averaging, or the node's last task of an iteration (`entry`)."""
        if entry is None:
            self.round_closed(node, t)
        elif node.owner is not None:
            self.iteration_done(node.owner, t)
        elif node.name == self.metrics_from:
            self.metrics(node, entry.owner, entry.iteration, t)

    def metrics(self, node: SimNode, k: int, j: int, t: float) -> None:
        """The loss report of owner k's iteration j, from the node that ran the last part."""
        got = node.to_aggregator  # its link and the report's transmission, kept
        if got is None:
            hop = self.wires.links(node.name, AGGREGATOR)
            got = node.to_aggregator = (hop, hop.tx_s(HEADER_BYTES))
        self.wires.put(*got, node.name, HEADER_BYTES, t, _METRICS, k, j, None, node.mem)

    # ---------------------------------------------------------------------------- rounds

    def iteration_done(self, k: int, t: float) -> None:
        """Owner k's tasks of its iteration are done: the next iteration, or its upload."""
        self.it_times.append(t - self.it_start[k])
        j = self.it_next[k]
        self.it_next[k] = j + 1
        if self.metrics_from is None:
            self.metrics(self.nodes[self.onames[k]], k, j, t)
        r = self.round_now[k]
        if j + 1 < len(self.work.batches[k]) and j + 1 < self.work.ends[r]:
            self.start_iteration(k, t)
        else:
            self.upload(k, r, t)

    def begin_round(self, k: int, r: int, t: float) -> None:
        """Owner k's first iteration of round r, or (nothing left) its upload at once."""
        self.round_now[k] = r
        if self.it_next[k] < len(self.work.batches[k]):
            self.start_iteration(k, t)
        else:
            self.upload(k, r, t)

    def upload(self, k: int, r: int, t: float) -> None:
        """Owner k's PARAMS to the aggregator, then its sync to the first compute node."""
        me = self.nodes[self.onames[k]]
        nbytes = self.owner_bytes[k] + HEADER_BYTES
        arrive = self.wires.send(me.name, AGGREGATOR, nbytes, t,
                                 send_label(Msg.PARAMS, AGGREGATOR), k, r, None, me.mem)
        self.push(arrive, _PARAMS, k, r)
        mine = self.plan.for_owner(k)
        first = mine.placement[1] if mine.num_parts > 1 else OWNER
        if first != OWNER:
            self.sync(me, first, k, r, t)

    def sync(self, node: SimNode, dst: str, k: int, r: int, t: float) -> None:
        arrive = self.wires.send(node.name, dst, HEADER_BYTES, t,
                                 send_label(Msg.CONTROL, dst), k, r, None, node.mem)
        self.push(arrive, _SYNC, self.nodes[dst], (k, r))

    def on_sync(self, node: SimNode, msg: tuple[int, int], t: float) -> None:
        """Owner k's sync of round r reached a compute node: forwarded down the chain at once;
        the node closes the round once every owner's is in and it is free."""
        k, r = msg
        if node.next is not None:
            self.sync(node, node.next, k, r, t)
        assert node.synced is not None
        node.synced[r] += 1
        self.dirty[node] = None

    def close_round(self, node: SimNode, t: float) -> None:
        """A compute node averages its copies (AVG{part}); in SL (one shared copy) it has
        nothing to average."""
        if not node.gated:
            self.round_closed(node, t)
            return
        node.busy = True
        end = t + node.avg_s
        self.busy[node.name] = self.busy.get(node.name, 0.0) + node.avg_s
        if self.record:
            self.events.append(Event(node.name, CPU, node.avg_label, None, node.round, None,
                                     t, end))
        self.push(end, _DONE, node, None)

    def round_closed(self, node: SimNode, t: float) -> None:
        """After a compute node's averaging: its PARAMS at the epoch's end, the next round."""
        r = node.round
        node.round = r + 1
        if r == self.work.rounds - 1:
            self.wires.send(node.name, AGGREGATOR, node.param_bytes + HEADER_BYTES, t,
                            send_label(Msg.PARAMS, AGGREGATOR), None, r, None, node.mem)
        if node.gated:
            node.queue.open(r + 1)

    def on_params(self, k: int, r: int, t: float) -> None:
        """Owner k's PARAMS at the aggregator: in SL the next owner's turn, else once all are
        in, the average (AVG) and GLOBAL to every owner."""
        if self.sl:
            if k + 1 < self.K:
                self.send_global(k + 1, r, t)
            else:
                self.last = max(self.last, t)
            return
        self.params_in[r] += 1
        if self.params_in[r] < self.K:
            return
        d = sum(self.owner_bytes) / AVERAGE_BYTES_PER_S
        self.busy[AGGREGATOR] = self.busy.get(AGGREGATOR, 0.0) + d
        if self.record:
            self.events.append(Event(AGGREGATOR, CPU, "AVG", None, r, None, t, t + d))
        for i in range(self.K):
            self.send_global(i, r, t + d)

    def send_global(self, k: int, r: int, t: float) -> None:
        name = self.onames[k]
        arrive = self.wires.send(AGGREGATOR, name, self.owner_bytes[k] + HEADER_BYTES, t,
                                 send_label(Msg.GLOBAL, name), k, r, None, None)
        self.push(arrive, _GLOBAL, k, r)

    def on_global(self, k: int, r: int, t: float) -> None:
        """GLOBAL of round r at owner k: in SL its turn starts, else its next round."""
        self.last = max(self.last, t)
        if self.sl:
            self.begin_round(k, r, t)
        elif r + 1 < self.work.rounds:
            self.begin_round(k, r + 1, t)
