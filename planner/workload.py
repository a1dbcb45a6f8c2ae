"""What one simulated epoch runs: every owner's batches and aggregation rounds, and the tasks of
its iterations (`mpsl.schedule.iteration_tasks`), each compiled once into the steps the
engine walks.

Owners alike in plan (cuts, placement, schedule) and micro-batches share their compiled tasks:
they are made once for a stand-in owner (`STAND_IN`); a node name of None and a step's `dst`
of None mean the owner's own node, which the engine puts in."""

from __future__ import annotations

import functools
from typing import NamedTuple

from mpsl.actions import Action, Msg, Op, Task, TriggerKey
from mpsl.data import micro_batch_count, micro_batches
from mpsl.names import owner_name
from mpsl.plan import Plan
from mpsl.schedule import iteration_tasks, tasks_by_node
from mpsl.topology import Topology
from mpsl.training import iterations_per_epoch, owner_samples, round_ends, smallest_micro_batch
from planner.profile import Profile

FORWARD, BACKWARD, SEND, STEP = 0, 1, 2, 3
_CODES = {Op.FORWARD: FORWARD, Op.BACKWARD: BACKWARD, Op.SEND: SEND, Op.STEP: STEP}
_CACHE_SIZE = 4096  # compiled iterations kept across simulations (the planner repeats them)
STAND_IN = -1  # the owner index tasks are compiled for (any owner alike takes them)
_ME = owner_name(STAND_IN)


class Step(NamedTuple):
    """One action of a task, ready to time: `label` is the printed action."""

    code: int
    part: int | None  # F, B and a compute node's STEP: the part; None otherwise
    mb: int | None
    label: str  # a SEND to the owner: without the owner's name (`:GRAD0`, see `label_of`)
    span: tuple[int, int]  # F and B: the part's layers
    dst: str | None  # SEND: the receiving node (None: the owner)
    key: TriggerKey | None  # SEND: (msg, part it is for, mb) of the task it triggers
    cut: int  # SEND: bytes per sample at the cut it crosses
    labels: bool  # SEND: labels ride along (an ACT, labels shared)


class Workload:
    """Batches per owner and iteration, the round ends, and the tasks of every iteration."""

    def __init__(self, topo: Topology, plan: Plan, prof: Profile, iterations: int | None,
                 samples: list[int] | None) -> None:
        self.plan = plan
        self.owners = len(topo.owners)
        self.sl = topo.mode == "sl"
        self.labels = topo.labels == "shared" and plan.num_parts > 1
        self.prof = prof
        self.cut_out = self._cut_out(plan)
        B = topo.training.batch_size
        smallest = smallest_micro_batch(topo)
        # owners of the same sample count share one list of batches (read, never written)
        if iterations is not None:
            self.batches = [[B] * iterations] * self.owners
        else:
            counts = owner_samples(topo) if samples is None else samples
            made: dict[int, list[int]] = {}
            for n in counts:
                if n not in made:
                    n_it = iterations_per_epoch(topo.training, n)
                    made[n] = [min(B, n - j * B) for j in range(n_it)]
            self.batches = [made[n] for n in counts]
        every = None if self.sl else topo.training.aggregate_every
        self.ends = round_ends([len(b) for b in self.batches], every)
        self.rounds = len(self.ends)
        sizes: dict[tuple[int, int], list[int]] = {}  # (N, batch): shared by owners alike
        self.sizes: list[list[list[int]]] = []  # owner, iteration: micro-batch sizes
        shared: dict[tuple[int, int], list[list[int]]] = {}  # by (N, id of the batches)
        for k, bs in enumerate(self.batches):
            n = plan.micro_batches[k]
            got = shared.get((n, id(bs)))
            if got is None:
                for b in set(bs):
                    if (n, b) not in sizes:
                        sizes[(n, b)] = micro_batches(b, micro_batch_count(b, n, smallest))
                got = shared[(n, id(bs))] = [sizes[(n, b)] for b in bs]
            self.sizes.append(got)
        self._tasks: dict[tuple[int, int], NodeTasks] = {}
        self._steps: dict[int, tuple[Step, ...]] = {}

    def _cut_out(self, plan: Plan) -> list[int]:
        """Bytes per sample of the activation at each cut of `plan` (0 before the first part)."""
        return [0] + [self.prof.out_bytes(c - 1) for c in plan.bounds[1:-1]]

    def tasks(self, owner: int, n_mb: int) -> NodeTasks:
        """Each node's tasks of one iteration of `owner` with `n_mb` micro-batches, by the
        owner's own plan (its cuts; an FL owner's: every layer on it): (node name, None for
        the owner's own node; its tasks), owner first."""
        mine = self.plan.for_owner(owner)
        key = (-1 if mine is self.plan else owner, n_mb)  # owners of the common plan share
        got = self._tasks.get(key)
        if got is None:
            cut_out = self.cut_out if mine is self.plan else self._cut_out(mine)
            got, steps = _compiled(mine, n_mb, tuple(cut_out), self.labels and mine.num_parts > 1)
            self._tasks[key] = got
            self._steps.update(steps)
        return got

    def steps(self, task: Task) -> tuple[Step, ...]:
        """The task's actions as steps (tasks come from `tasks`)."""
        return self._steps[id(task)]


@functools.lru_cache(maxsize=256)
def send_label(msg: Msg, dst: str) -> str:
    """The printed SEND of a message without a micro-batch: `>aggregator:PARAMS`."""
    return str(Action.send(msg, dst))


def label_of(step: Step, owner: str) -> str:
    """The printed action of `step` run for the owner called `owner`."""
    return f">{owner}{step.label}" if step.code == SEND and step.dst is None else step.label


NodeTasks = list[tuple[str | None, list[Task]]]
Compiled = tuple[NodeTasks, dict[int, tuple[Step, ...]]]
_compiled_cache: dict[tuple[object, ...], Compiled] = {}


def _compiled(plan: Plan, n_mb: int, cut_out: tuple[int, ...], labels: bool) -> Compiled:
    """The tasks of one iteration of an owner (`STAND_IN`) by node, and each task's steps (by
    the task's id)."""
    key = (plan.num_layers, plan.cuts, plan.placement, plan.schedule, plan.max_in_flight,
           n_mb, cut_out, labels)
    got = _compiled_cache.get(key)
    if got is None:
        if len(_compiled_cache) >= _CACHE_SIZE:
            _compiled_cache.clear()
        by_node = tasks_by_node(iteration_tasks(plan, STAND_IN, n_mb))
        steps = {id(t): _compile(plan, t, cut_out, labels) for ts in by_node.values() for t in ts}
        got = _compiled_cache[key] = ([(None if n == _ME else n, ts) for n, ts in by_node.items()],
                                      steps)
    return got


def _compile(plan: Plan, task: Task, cut_out: tuple[int, ...], labels: bool) -> tuple[Step, ...]:
    parts = plan.parts
    out = []
    for i, a in enumerate(task.actions):
        code = _CODES[a.op]
        if code == SEND:
            assert a.dst is not None and a.mb is not None
            src = task.sent_part(i)
            act = a.msg is Msg.ACT
            to = src + 1 if act else src - 1
            cut = cut_out[src + 1] if act else cut_out[src]
            key = (Msg.ACT if act else Msg.GRAD, to, a.mb)
            label, dst = (str(a), a.dst) if a.dst != _ME else (str(a)[len(_ME) + 1:], None)
            out.append(Step(code, None, a.mb, label, (0, 0), dst, key, cut, act and labels))
        else:
            span = parts[a.part] if a.part is not None else (0, 0)
            out.append(Step(code, a.part, a.mb, str(a), span, None, None, 0, False))
    return tuple(out)
