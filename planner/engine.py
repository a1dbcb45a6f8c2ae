"""The event engine of the cost model: processors, links, barriers, aggregation rounds."""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any

from mpsl.data import micro_batches
from mpsl.plan import Plan
from mpsl.schedule import BACKWARD, FORWARD, SEND, STEP, Task, iteration_tasks
from mpsl.topology import Topology
from planner.estimate import SimEvent
from planner.profile import Profile
from planner.resources import (
    AGGREGATOR,
    AVERAGE_BYTES_PER_S,
    HEADER_BYTES,
    Links,
    copies_on_compute,
    emulated_nodes,
    iterations_per_epoch,
    message_bytes,
    owner_samples,
)


class _Group:
    """One owner's tasks of one iteration on one node, in list order."""

    __slots__ = ("node", "insts", "done", "barrier", "waiting", "main")

    def __init__(self, node: _Node, main: bool) -> None:
        self.node, self.main = node, main
        self.insts: list[_Inst] = []
        self.done, self.barrier = 0, 0
        self.waiting: list[_Inst] = []


class _Inst:
    __slots__ = ("task", "idx", "group", "owner", "it", "rnd", "sizes", "arrival", "nbytes")

    def __init__(self, task: Task, idx: int, group: _Group, owner: int, it: int, rnd: int,
                 sizes: list[int]) -> None:
        self.task, self.idx, self.group = task, idx, group
        self.owner, self.it, self.rnd, self.sizes = owner, it, rnd, sizes
        self.arrival, self.nbytes = 0.0, 0


class _Node:
    __slots__ = ("name", "ready", "gated", "busy", "avg_queued", "avg_done", "pending", "avg_s",
                 "mem", "prof", "sleeps", "free_at", "last_owner")

    def __init__(self, name: str, prof: Profile | None, sleeps: bool = False) -> None:
        self.name, self.prof = name, prof
        self.sleeps = sleeps  # emulated slower device: it sleeps after every action
        self.free_at = -math.inf  # when its processor last finished a task
        self.last_owner = -1  # whose task (model copy) it ran last
        self.ready: list[tuple[Any, ...]] = []
        self.gated: list[tuple[Any, ...]] = []
        self.busy, self.avg_queued = False, False
        self.avg_done: float = math.inf  # rounds averaged; inf: never gated (owners)
        self.pending: list[int] = []
        self.avg_s = 0.0
        self.mem: list[tuple[float, int, int]] = []  # (time, delta, 0 act | 1 buffer)


_DONE, _MSG, _PARAMS, _GLOBAL = 0, 1, 2, 3


class Engine:
    """One epoch of every owner's tasks (see planner.cost for the rules)."""

    def __init__(self, topo: Topology, plan: Plan, profs: dict[str, Profile],
                 iterations: int | None, samples: list[int] | None, record: bool) -> None:
        self.topo, self.plan, self.record = topo, plan, record
        self.K = len(topo.owners)
        self.onames = [o.name for o in topo.owners]
        self.sl = topo.mode == "sl"
        self.labels = topo.labels == "shared" and plan.num_parts > 1
        self.links = Links(topo)
        self.link_free: dict[str, float] = {}
        self.busy: dict[str, float] = {}
        self.events: list[SimEvent] = []
        self.heap: list[tuple[Any, ...]] = []
        self.seq = itertools.count()
        self.dirty: set[_Node] = set()
        self.registry: dict[tuple[Any, ...], _Inst] = {}
        bprof = profs[self.onames[0]]
        self.cut_out = [0] + [bprof.out_bytes(c - 1) for c in plan.bounds[1:-1]]
        emulated = emulated_nodes(topo)
        self.nodes = {n: _Node(n, profs[n], n in emulated) for n in self.onames}
        for n in plan.placement[1:]:
            if n != "owner" and n not in self.nodes:
                self.nodes[n] = _Node(n, profs[n], n in emulated)
        self.part_cost: dict[tuple[int, bool, int], tuple[float, int]] = {}
        self.pass_cost: dict[tuple[int, int, int], tuple[float, float]] = {}
        self.owner_params = sum(bprof.param_bytes(plan.parts[p]) for p in plan.parts_on("owner"))
        # per owner: the batch sizes of its iterations, grouped in aggregation rounds
        B = topo.training.batch_size
        if samples is None and iterations is None:
            samples = owner_samples(topo)
        self.batches: list[list[int]] = []
        for k in range(self.K):
            if iterations is not None:
                self.batches.append([B] * iterations)
            else:
                n_it = iterations_per_epoch(topo, samples[k])
                self.batches.append([min(B, samples[k] - j * B) for j in range(n_it)])
        every = topo.training.aggregate_every
        longest = max(len(b) for b in self.batches)
        self.rounds = 1 if self.sl or every is None else max(1, math.ceil(longest / every))
        self.every = every if every is not None and not self.sl else max(longest, 1)
        self.tasks_cache: dict[tuple[int, int], dict[str, list[Task]]] = {}
        self._rounds_setup()
        self.it_start = [0.0] * self.K
        self.it_next = [0] * self.K
        self.it_times: list[float] = []
        self.params_in = [0] * self.rounds
        self.end = 0.0

    # ---------------------------------------------------------------------------- set-up

    def _tasks(self, k: int, n_mb: int) -> dict[str, list[Task]]:
        key = (k, n_mb)
        got = self.tasks_cache.get(key)
        if got is None:
            got = {}
            for t in iteration_tasks(self.plan, k, n_mb):
                got.setdefault(t.node, []).append(t)
            self.tasks_cache[key] = got
        return got

    def _n_mb(self, k: int, b: int) -> int:
        return min(self.plan.micro_batches[k], b)

    def _round_span(self, k: int, r: int) -> range:
        n = len(self.batches[k])
        return range(min(r * self.every, n), min((r + 1) * self.every, n))

    def _rounds_setup(self) -> None:
        copies = copies_on_compute(self.topo, self.K)
        for node in self.nodes.values():
            if node.name in self.onames or copies < 2:
                continue
            node.avg_done = 0
            node.pending = [0] * self.rounds
            params = sum(node.prof.param_bytes(self.plan.parts[p])
                         for p in self.plan.parts_on(node.name))
            node.avg_s = copies * params / AVERAGE_BYTES_PER_S
        gated = [n for n in self.nodes.values() if n.pending]
        if not gated:
            return
        for k in range(self.K):
            for r in range(self.rounds):
                for j in self._round_span(k, r):
                    by_node = self._tasks(k, self._n_mb(k, self.batches[k][j]))
                    for node in gated:
                        node.pending[r] += len(by_node.get(node.name, ()))

    def _cost(self, node: _Node, part: int) -> tuple[float, int]:
        """(STEP seconds, activation bytes kept per sample) of a part on the node."""
        key = (id(node.prof), node.sleeps, part)
        c = self.part_cost.get(key)
        if c is None:
            prof = node.prof
            if part < 0:  # the owner's STEP: every part it runs
                spans = [self.plan.parts[p] for p in self.plan.parts_on("owner")]
                c = (prof.step(spans, node.sleeps), 0)
            else:
                span = self.plan.parts[part]
                c = (prof.step([span], node.sleeps), prof.act_bytes(span))
            self.part_cost[key] = c
        return c

    def _pass_s(self, node: _Node, part: int, b: int) -> tuple[float, float]:
        """(forward, backward) seconds of a part on the node for a micro-batch of `b`."""
        key = (id(node.prof), part, b)
        d = self.pass_cost.get(key)
        if d is None:
            span = self.plan.parts[part]
            d = self.pass_cost[key] = (node.prof.fwd(span, b), node.prof.bwd(span, b))
        return d

    # ---------------------------------------------------------------------------- running

    def push(self, t: float, kind: int, a: Any, b: Any = None) -> None:
        heapq.heappush(self.heap, (t, next(self.seq), kind, a, b))

    def make_ready(self, inst: _Inst, key: float) -> None:
        node = inst.group.node
        entry = (key, inst.owner, next(self.seq), inst)
        if inst.rnd > node.avg_done:
            node.gated.append(entry)
        else:
            heapq.heappush(node.ready, entry)
            self.dirty.add(node)

    def start_iteration(self, k: int, t: float) -> None:
        j = self.it_next[k]
        b = self.batches[k][j]
        sizes = micro_batches(b, self._n_mb(k, b))
        rnd = j // self.every
        self.it_start[k] = t
        me = self.onames[k]
        for name, tasks in self._tasks(k, len(sizes)).items():
            group = _Group(self.nodes[name], name == me)
            first = len(tasks)
            for i, task in enumerate(tasks):
                inst = _Inst(task, i, group, k, j, rnd, sizes)
                group.insts.append(inst)
                if task.trigger is None:
                    first = min(first, i)
                else:
                    tr = task.trigger
                    self.registry[(k, j, tr.msg, tr.part, tr.mb)] = inst
            group.barrier = first
            if first == 0:
                self.make_ready(group.insts[0], t)

    def dispatch(self, node: _Node, t: float) -> None:
        _, _, _, item = heapq.heappop(node.ready)
        node.busy = True
        if item is None:  # averaging of the copies
            end = t + node.avg_s
            self._event(node.name, "AVG", -1, node.avg_done, -1, t, end)
            self.busy[node.name] = self.busy.get(node.name, 0.0) + node.avg_s
            self.push(end, _DONE, node, None)
            return
        inst: _Inst = item
        if inst.nbytes:
            node.mem.append((t, -inst.nbytes, 1))
        cur, k, it, sizes = t, inst.owner, inst.it, inst.sizes
        # the first pass of a task wakes (caches refilled) after an idle processor or when it
        # works on another owner's copy than the task before
        cold = t > node.free_at or inst.owner != node.last_owner
        node.last_owner = inst.owner
        prof = node.prof
        for a in inst.task.actions:
            kind = a.kind
            if kind == SEND:
                self.send(node, inst, a.part, a.mb, a.msg, a.dst, cur)
                continue
            opt_s, act = self._cost(node, a.part)
            if kind == FORWARD:
                b = sizes[a.mb]
                d = self._pass_s(node, a.part, b)[0] + (prof.wake_fwd_s if cold or node.sleeps
                                                         else 0.0)
                cold = False
                if act:
                    node.mem.append((cur, act * b, 0))
            elif kind == BACKWARD:
                b = sizes[a.mb]
                d = self._pass_s(node, a.part, b)[1] + (prof.wake_bwd_s if cold or node.sleeps
                                                         else 0.0)
                cold = False
                if act:
                    node.mem.append((cur + d, -act * b, 0))
            else:
                d = opt_s
            if self.record:
                label = kind if kind == STEP else f"{a.part}{kind}"
                self._event(node.name, label, k, it, a.mb, cur, cur + d)
            cur += d
        self.busy[node.name] = self.busy.get(node.name, 0.0) + (cur - t)
        self.push(cur, _DONE, node, inst)

    def transmit(self, src: str, dst: str, nbytes: int, t: float, label: str, k: int, it: int,
                 mb: int) -> float:
        """Queue a message on the link; return its arrival time."""
        h = self.links(src, dst)
        start = max(t, self.link_free.get(h.name, 0.0))
        end = start + h.tx_s(nbytes)
        self.link_free[h.name] = end
        self.busy[h.name] = self.busy.get(h.name, 0.0) + (end - start)
        self._event(h.name, label, k, it, mb, start, end)
        if src in self.nodes:
            mem = self.nodes[src].mem
            mem.append((t, nbytes, 1))
            mem.append((end, -nbytes, 1))
        return end + h.latency_s

    def send(self, node: _Node, inst: _Inst, part: int, mb: int, msg: str, dst: str,
             t: float) -> None:
        b = inst.sizes[mb]
        if msg == "ACT":
            nbytes, to = message_bytes(self.cut_out[part + 1], b, self.labels), part + 1
        else:
            nbytes, to = message_bytes(self.cut_out[part], b), part - 1
        arrive = self.transmit(node.name, dst, nbytes, t, msg, inst.owner, inst.it, mb)
        self.push(arrive, _MSG, (inst.owner, inst.it, msg, to, mb), nbytes)

    def on_message(self, key: tuple[Any, ...], nbytes: int, t: float) -> None:
        inst = self.registry.pop(key)
        inst.arrival, inst.nbytes = t, nbytes
        inst.group.node.mem.append((t, nbytes, 1))
        group = inst.group
        if inst.idx < group.barrier:
            self.make_ready(inst, t)
        else:
            group.waiting.append(inst)

    def on_done(self, node: _Node, inst: _Inst | None, t: float) -> None:
        node.busy = False
        node.free_at = t
        self.dirty.add(node)
        if inst is None:
            node.avg_done += 1
            self._release_gated(node)
            self._maybe_average(node, t)
            return
        group = inst.group
        group.done += 1
        if inst.task.trigger is None:  # a barrier: move to the next one, free the waiting
            nxt = len(group.insts)
            for i in range(inst.idx + 1, len(group.insts)):
                if group.insts[i].task.trigger is None:
                    nxt = i
                    break
            group.barrier = nxt
            still = []
            for w in group.waiting:
                if w.idx < nxt:
                    self.make_ready(w, w.arrival)
                else:
                    still.append(w)
            group.waiting = still
        if group.barrier < len(group.insts) and group.done == group.barrier:
            self.make_ready(group.insts[group.barrier], t)
        if node.pending:
            node.pending[inst.rnd] -= 1
            self._maybe_average(node, t)
        if group.main and group.done == len(group.insts):
            self.iteration_done(inst.owner, t)

    def _maybe_average(self, node: _Node, t: float) -> None:
        r = int(node.avg_done)
        if r < self.rounds and node.pending[r] == 0 and not node.avg_queued:
            node.avg_queued = True  # one averaging queued at a time
            heapq.heappush(node.ready, (t, -1, next(self.seq), None))
            self.dirty.add(node)

    def _release_gated(self, node: _Node) -> None:
        node.avg_queued = False
        keep = []
        for e in node.gated:
            if e[3].rnd <= node.avg_done:
                heapq.heappush(node.ready, e)
            else:
                keep.append(e)
        node.gated = keep

    def iteration_done(self, k: int, t: float) -> None:
        self.it_times.append(t - self.it_start[k])
        j = self.it_next[k]
        self.it_next[k] = j + 1
        if j + 1 < len(self.batches[k]) and (j + 1) % self.every:
            self.start_iteration(k, t)
        else:
            self.upload(k, j // self.every, t)

    def upload(self, k: int, rnd: int, t: float) -> None:
        nbytes = self.owner_params + HEADER_BYTES
        arrive = self.transmit(self.onames[k], AGGREGATOR, nbytes, t, "PARAMS", k, rnd, -1)
        self.push(arrive, _PARAMS, k, rnd)

    def on_params(self, k: int, rnd: int, t: float) -> None:
        nbytes = self.owner_params + HEADER_BYTES
        if self.sl:  # hand the part on to the next owner (owner 0 at the end of the epoch)
            nxt = (k + 1) % self.K
            arrive = self.transmit(AGGREGATOR, self.onames[nxt], nbytes, t, "GLOBAL", nxt, 0, -1)
            self.push(arrive, _GLOBAL, nxt, -1 if nxt == 0 else 0)
            return
        self.params_in[rnd] += 1
        if self.params_in[rnd] < self.K:
            return
        d = self.K * self.owner_params / AVERAGE_BYTES_PER_S
        self.busy[AGGREGATOR] = self.busy.get(AGGREGATOR, 0.0) + d
        self._event(AGGREGATOR, "AVG", -1, rnd, -1, t, t + d)
        for i, name in enumerate(self.onames):
            arrive = self.transmit(AGGREGATOR, name, nbytes, t + d, "GLOBAL", i, rnd, -1)
            self.push(arrive, _GLOBAL, i, rnd + 1)

    def on_global(self, k: int, rnd: int, t: float) -> None:
        if rnd < 0 or rnd >= self.rounds:
            self.end = max(self.end, t)
        elif self.it_next[k] < len(self.batches[k]):
            self.start_iteration(k, t)
        else:  # nothing left this round: join the aggregation at once
            self.upload(k, rnd, t)

    def _event(self, res: str, kind: str, k: int, it: int, mb: int, t0: float, t1: float) -> None:
        if self.record:
            self.events.append(SimEvent(res, kind, k, it, mb, t0, t1))

    def run(self) -> None:
        for k in range(1 if self.sl else self.K):
            if self.batches[k]:
                self.start_iteration(k, 0.0)
            else:  # no data: join the first aggregation (or hand on the turn) at once
                self.upload(k, 0, 0.0)
        heap, pop = self.heap, heapq.heappop
        while heap or self.dirty:
            t = heap[0][0] if heap else self.end
            while heap and heap[0][0] == t:
                _, _, kind, a, b = pop(heap)
                if kind == _DONE:
                    self.on_done(a, b, t)
                elif kind == _MSG:
                    self.on_message(a, b, t)
                elif kind == _PARAMS:
                    self.on_params(a, b, t)
                else:
                    self.on_global(a, b, t)
            for node in self.dirty:
                if not node.busy and node.ready:
                    self.dispatch(node, t)
            self.dirty.clear()
            self.end = max(self.end, t)
