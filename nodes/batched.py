"""Batched per-owner copies on a compute node (`compute_nodes[].batch_owners: auto`).

When tasks of several owners for the node's part are ready at once, their passes run in one
call on the owners' own copies (nodes.folding: bitwise what each copy computes alone), each
owner keeping its own weights, `.grad`, optimizer state and loss. The copies' tensors move
into a stack (nodes.stack) when the node starts.

Which tasks go together. `serve` takes the ready tasks in the task queue's order (nothing
becomes ready while it runs them: a compute node's tasks all wait for a message). The first task
left takes along the later ready tasks of other owners that have the same passes on the same
part and micro-batches of the same shape, up to one per owner, each only where no older task
left of its owner is of its kind or of no batching kind (`mpsl.taskqueue.may_run_ahead`: an
owner's forwards keep their order, and its backwards, in which its gradients add up); then the
next task left, and so on. So a task runs earlier than the queue's order only to join an older
one; the order of everything else is the queue's. Within a group, tasks run in owner order (the
stack's). Before it serves, the node routes every message already waiting (`take_waiting`), so
that work which arrived during a long call is ready at once; with `off` it still serves after
each message.

How. The passes of a group run batched, then each task's other actions by `run_task` as
usual (its SEND), then the STEPs of the group's tasks that end with one: one SGD step on the
stack where that equals each copy's own (nodes.stack), else each copy's optimizer in turn.
- F+B in one task (the last part, labels shared): one batched forward with every owner's
  loss (nodes.folded_loss), one backward of all of them.
- F alone (a middle part), of at least MIN_FORWARD owners (fewer run alone): one batched
  forward without autograd; each owner's input is kept.
- B alone, whose forward was batched: the forward is recomputed, batched over the owners
  whose gradients are ready together (alone when one is), then the backward. It costs a
  forward more and keeps only the input in between (activation checkpointing): one owner's
  backward cannot use a graph shared with others without computing theirs too, so a batched
  forward keeps no graph. A forward run alone keeps its graph and its backward runs as before.
  BatchNorm's running statistics are updated by the first forward only.
A task alone runs as with `off` (but a backward that recomputes).

Trace. Every task still gets an event per action, on its owner and iteration: a batched
phase's wall time is split evenly, in owner order, over its tasks' actions of that phase (all
F, then all B of a fused group; the STEPs). `compute_scale` stretches a phase as a whole.
The activation meter counts what a batched call keeps for its backward while the call runs.

Not batched: SL's shared copy, noised parts, a part with a layer nodes.folding cannot fold
(the node then runs as with `off`), fewer than two owners.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import zmq

from mpsl.actions import Action, Msg, Op
from mpsl.names import CPU
from mpsl.taskqueue import Entry, may_run_ahead
from mpsl.trace import Event
from nodes.executor import IterationState, run_task
from nodes.folded_loss import FoldedLoss
from nodes.folding import FoldedPart, fold, gather, split
from nodes.parts import PartRunner

if TYPE_CHECKING:
    from nodes.compute import ComputeNode

MODES = ("auto", "off")
MIN_FORWARD = 3  # fewer forwards run alone: they keep their graphs, no recomputation
FUSED, FORWARD, BACKWARD = "FB", "F", "B"


def task_kind(actions: Sequence[Action], last_part: int) -> str | None:
    """FUSED, FORWARD or BACKWARD for the task shapes that batch, else None."""
    ops = [a.op for a in actions]
    if ops[:2] == [Op.FORWARD, Op.BACKWARD] and actions[0].part == last_part:
        return FUSED
    if ops[:2] == [Op.FORWARD, Op.SEND] and actions[1].msg is Msg.ACT:
        return FORWARD
    if ops[:2] == [Op.BACKWARD, Op.SEND] and actions[1].msg is Msg.GRAD:
        return BACKWARD
    return None


class Batcher:
    """Runs a compute node's ready tasks, batching those of several owners (module doc)."""

    def __init__(self, runner: PartRunner, part: int, owners: Sequence[int]) -> None:
        self.runner, self.part = runner, part
        self.position = {k: i for i, k in enumerate(sorted(owners))}  # its row in the stack
        self.folded = FoldedPart([runner.copies[(k, part)].module for k in sorted(owners)])
        self.loss = FoldedLoss()
        if runner.meter is not None:  # the copies' tensors moved into the stack
            runner.meter.exclude(self.folded.stack.tensors.values())
        self.limit = len(owners)
        self.calls: dict[int, int] = {}  # group size -> batched calls (for tests, results)

    @classmethod
    def make(cls, runner: PartRunner, part: int, owners: Sequence[int],
             shared: bool) -> Batcher | None:
        """A batcher for the part's copies, or None where batching does not apply (before
        it moves the copies' tensors into a stack)."""
        if shared or runner.noise is not None or len(owners) < 2 or \
                fold(runner.copies[(owners[0], part)].module, 1) is None:
            return None
        return cls(runner, part, owners)

    # which tasks go together ------------------------------------------------------------------
    def key(self, node: ComputeNode, entry: Entry) -> tuple[object, ...] | None:
        """What a task must share with others to run batched with them; None: alone."""
        a = entry.task.actions
        kind = task_kind(a, self.runner.last_part)
        st = node.states[(entry.owner, entry.iteration)]
        mb = a[0].mb
        assert mb is not None
        if kind is None or a[0].part != self.part:
            return None
        if kind == BACKWARD:
            x = self.runner.kept.get((entry.owner, self.part, mb))
            g = st.grads_in.get((self.part, mb))
            return None if x is None or g is None else (kind, x.shape, g.shape)
        x = st.inputs.get((self.part, mb))
        if x is None or (kind == FUSED and mb not in st.labels):
            return None
        return (kind, x.shape)

    def serve(self, node: ComputeNode) -> None:
        """Run every ready task, batching as the module doc says, until none is ready."""
        while True:
            ready: list[Entry] = []
            while (e := node.queue.pop()) is not None:
                ready.append(e)
            if not ready:
                return
            keys = [self.key(node, e) for e in ready]
            kinds = [task_kind(e.task.actions, self.runner.last_part) for e in ready]
            while ready:
                head, key, kind = ready.pop(0), keys.pop(0), kinds.pop(0)
                group = [head]
                if key is not None:
                    before = {head.owner: {kind}}
                    for i, e in enumerate(ready):
                        if len(group) == self.limit:
                            break
                        if may_run_ahead(before, e.owner, kinds[i]) and keys[i] == key:
                            group.append(e)
                    for e in group[1:]:
                        i = ready.index(e)
                        del ready[i], keys[i], kinds[i]
                    group.sort(key=lambda e: e.owner)  # the stack's order
                self.run(node, group, None if key is None else str(key[0]))

    def take_waiting(self, node: ComputeNode) -> bool:
        """Route every message already at the node, without waiting for one (at most four
        per owner), so that their tasks can batch; False once the stop came (what is ready
        then ran)."""
        for _ in range(4 * self.limit):
            # a message waits on the inbox's PULL socket: `poll` reads it without waiting
            if not node._pending and not node.inbox._sock.poll(0, zmq.POLLIN):
                break
            msg = node.poll(lambda m: True, time.monotonic() + 0.001)
            if msg is None:
                break
            if not node.route_one(msg):
                node.serve()
                return False
        return True

    # running a group ----------------------------------------------------------------------------
    def run(self, node: ComputeNode, group: list[Entry], kind: str | None) -> None:
        """Run a group's passes batched, then each task's remaining actions; a task alone
        whose forward kept a graph (or that cannot batch) runs as without batching."""
        states = [node.states[(e.owner, e.iteration)] for e in group]
        start = 0
        if kind == FUSED and len(group) > 1:
            self._fused(node, group, states)
            start = 2
        elif kind == FORWARD and len(group) >= MIN_FORWARD:
            self._forward(node, group, states)
            start = 1
        elif kind == BACKWARD:
            self._backward(node, group, states)
            start = 1
        if start:
            self.calls[len(group)] = self.calls.get(len(group), 0) + 1
        last = self.part
        stepping = [e for e in group if start and e.task.actions[-1] == Action.step(last)]
        if len(stepping) < 2:
            stepping = []
        for e, st in zip(group, states):
            stop = -1 if e in stepping else None
            run_task(node, self.runner, e.task, st, not node.plan.labels_local, start, stop)
        if stepping:
            self._step(node, stepping)
        for e, st in zip(group, states):
            node.finish_task(e, st)

    def _step(self, node: ComputeNode, group: list[Entry]) -> None:
        """The STEP that ends each task of the group: one SGD step on the stack where that
        is each copy's own step (nodes.stack), else each copy's optimizer in turn."""
        copies = [self.runner.copies[(e.owner, self.part)] for e in group]
        with _phase(node, group, -1):
            if not self.folded.stack.sgd_step([self.position[e.owner] for e in group],
                                              [c.optimizer for c in copies]):
                for e in group:
                    self.runner.step(e.owner, self.part)

    def _fused(self, node: ComputeNode, group: list[Entry], states: list[IterationState]
               ) -> None:
        r, p = self.runner, self.part
        mbs = [_mb(e) for e in group]
        xs = [st.inputs.pop((p, mb)).detach().to(r.device).requires_grad_(True)
              for st, mb in zip(states, mbs)]
        weights = [x.shape[0] / st.batch for x, st in zip(xs, states)]
        with self._metered():
            with _phase(node, group, 0):
                call = self.folded.run([self.position[e.owner] for e in group], xs)
                losses = self.loss(call.out, [st.labels[mb].to(r.device)
                                              for st, mb in zip(states, mbs)])
                for st, value, weight in zip(states, losses.tolist(), weights):
                    r.losses.append((st.owner, st.iteration, value * weight))
                # as each owner's loss * weight: float32 products, gradient weight each
                weighted = losses * torch.tensor(weights, dtype=losses.dtype,
                                                 device=losses.device)
            with _phase(node, group, 1):
                torch.autograd.backward(weighted, torch.ones_like(weighted))
                self.folded.settle(call)
        for x, st, mb in zip(xs, states, mbs):
            assert x.grad is not None
            st.grads_out[(p, mb)] = x.grad.cpu()

    def _forward(self, node: ComputeNode, group: list[Entry], states: list[IterationState]
                 ) -> None:
        r, p = self.runner, self.part
        mbs = [_mb(e) for e in group]
        xs = [st.inputs.pop((p, mb)).detach().to(r.device) for st, mb in zip(states, mbs)]
        with _phase(node, group, 0), torch.no_grad():
            call = self.folded.run([self.position[e.owner] for e in group], xs)
            outs = split(call.out, len(group))
        for e, x, st, mb, out in zip(group, xs, states, mbs, outs):
            r.keep(e.owner, p, mb, x)
            st.outputs[(p, mb)] = out.cpu()

    def _backward(self, node: ComputeNode, group: list[Entry], states: list[IterationState]
                  ) -> None:
        r, p = self.runner, self.part
        mbs = [_mb(e) for e in group]
        xs = [r.take_kept(e.owner, p, mb).requires_grad_(True) for e, mb in zip(group, mbs)]
        grads = [st.grads_in.pop((p, mb)).to(r.device) for st, mb in zip(states, mbs)]
        with _phase(node, group, 0), self._metered(), torch.enable_grad():
            call = self.folded.run([self.position[e.owner] for e in group], xs, stats=False)
            torch.autograd.backward(call.out, gather(grads))
            self.folded.settle(call)
        for x, st, mb in zip(xs, states, mbs):
            assert x.grad is not None
            st.grads_out[(p, mb)] = x.grad.cpu()

    @contextlib.contextmanager
    def _metered(self) -> Iterator[None]:
        """Count what autograd keeps during a batched call as held by the meter, until the
        call ends (its graph is gone by then), each storage once, the stack's not at all:
        the meter's own hooks without a finalizer per tensor."""
        meter = self.runner.meter
        if meter is None:
            yield
            return
        seen = {t.untyped_storage().data_ptr() for t in self.folded.stack.tensors.values()}
        held = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal held
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                held += storage.nbytes()
                meter.hold(storage.nbytes())
            return t

        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                yield
        finally:
            meter.hold(-held)


def _mb(e: Entry) -> int:
    mb = e.task.actions[0].mb
    assert mb is not None
    return mb


@contextlib.contextmanager
def _phase(node: ComputeNode, group: list[Entry], index: int) -> Iterator[None]:
    """Time one batched phase: action `index` of every task of the group, its wall time split
    evenly over them in the group's order; `compute_scale` stretches the whole phase."""
    t0, c0 = time.time(), time.thread_time()
    yield
    node.settle()
    node.emulate_device(t0, c0)
    t1 = time.time()
    step = (t1 - t0) / len(group)
    for i, e in enumerate(group):
        a = e.task.actions[index]
        node.events.append(Event(node.name, CPU, str(a), e.owner, e.iteration, a.mb,
                                 t0 + i * step, t0 + (i + 1) * step))
    node.heartbeat()
