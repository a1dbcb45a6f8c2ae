"""Executes a task's actions on a node: F, B, SEND and STEP over one owner's iteration."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from mpsl.actions import Action, Msg, Op, Task, TriggerKey
from nodes.node import Node
from nodes.parts import PartRunner
from nodes.wire import Message


@dataclass
class IterationState:
    """What one owner's iteration holds on one node between its tasks."""

    owner: int
    iteration: int  # the owner's iteration counted over the whole run
    epoch: int
    batch: int  # samples in this iteration's batch (the last one of an epoch may be short)
    n_mb: int
    inputs: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    labels: dict[int, torch.Tensor] = field(default_factory=dict)
    outputs: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    grads_in: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    grads_out: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_message(cls, msg: Message) -> IterationState:
        """The iteration an ACT or GRAD belongs to, from its meta; ValueError if malformed."""
        try:
            epoch, batch, n_mb = (msg.meta[k] for k in ("epoch", "batch", "n_mb"))
        except KeyError as err:
            raise ValueError(f"meta without {err}") from None
        if any(type(v) is not int for v in (epoch, batch, n_mb)) or not 1 <= n_mb <= batch:
            raise ValueError(f"meta epoch {epoch!r}, batch {batch!r}, n_mb {n_mb!r}")
        return cls(msg.owner, msg.iter, epoch, batch, n_mb)

    def absorb(self, msg: Message) -> None:
        """Keep a received ACT (and labels) or GRAD where the triggered task will find it."""
        part = int(msg.meta["part"])
        if msg.kind == Msg.ACT:
            self.inputs[(part, msg.mb)] = msg.tensors["x"]
            if "y" in msg.tensors:
                self.labels[msg.mb] = msg.tensors["y"]
        elif msg.kind == Msg.GRAD:
            self.grads_in[(part, msg.mb)] = msg.tensors["g"]
        else:
            raise ValueError(f"a task is triggered by ACT or GRAD, not {msg.kind} from {msg.src}")


def message_key(msg: Message) -> TriggerKey | None:
    """(kind, part it is for, mb) of an ACT or GRAD, as `Task.key`; None if it has no such key."""
    part = msg.meta.get("part")
    if msg.kind not in (Msg.ACT, Msg.GRAD) or type(part) is not int:
        return None
    return (Msg(msg.kind), part, msg.mb)


def payload_fits(msg: Message) -> bool:
    """Whether an ACT carries `x` (and maybe `y`) and a GRAD carries `g`."""
    want = {"x"} if msg.kind == Msg.ACT else {"g"}
    return want <= set(msg.tensors) <= want | ({"y"} if msg.kind == Msg.ACT else set())


def trigger_sources(tasks: Iterable[Task]) -> dict[TriggerKey, str]:
    """The sender each triggered task's message must come from, by its key."""
    return {t.key: t.trigger.src for t in tasks if t.key is not None and t.trigger is not None}


def run_task(node: Node, runner: PartRunner, task: Task, st: IterationState,
             labels_shared: bool, start: int = 0, stop: int | None = None) -> None:
    """Run a task's actions in order, those in [start, stop) (the others ran batched, see
    nodes.batched), each pass and step timed on the node's processor."""
    for i, a in enumerate(task.actions[start:stop], start):
        if a.op is Op.FORWARD:
            _forward(node, runner, a, st)
        elif a.op is Op.BACKWARD:
            assert a.part is not None and a.mb is not None
            with node.timed(a, st.owner, st.iteration):
                g = runner.backward(st.owner, a.part, a.mb, st.grads_in.pop((a.part, a.mb), None))
            if g is not None:
                st.grads_out[(a.part, a.mb)] = g
        elif a.op is Op.SEND:
            _send(node, a, task.sent_part(i), st, labels_shared)
        elif a.op is Op.STEP:
            parts = [a.part] if a.part is not None else sorted({p for (_, p) in runner.copies})
            with node.timed(a, st.owner, st.iteration):
                for p in parts:
                    runner.step(st.owner, p)
        else:
            raise ValueError(f"{node.name}: a task of an iteration cannot run {a}")


def _forward(node: Node, runner: PartRunner, a: Action, st: IterationState) -> None:
    assert a.part is not None and a.mb is not None
    x = st.inputs.pop((a.part, a.mb))
    labels = st.labels.get(a.mb) if a.part == runner.last_part else None
    with node.timed(a, st.owner, st.iteration):
        out = runner.forward(st.owner, a.part, a.mb, x, labels, weight=x.shape[0] / st.batch,
                             iteration=st.iteration)
    st.outputs[(a.part, a.mb)] = out


def _send(node: Node, a: Action, sent: int, st: IterationState, labels_shared: bool) -> None:
    """An ACT (the forward output of part `sent`, for part sent + 1) or a GRAD (the input
    gradient of part `sent`, for part sent - 1), handed to the link without a snapshot.

    Safe because nothing writes these tensors again: the output is detached from the stash that
    backward reads (and never writes), the gradient is the `.grad` of a stashed input that
    backward has just dropped, and labels are this iteration's batch (or a received one), read
    by the loss only. Each may alias a received message's buffer, which is private and read
    only. None is a view of parameters, buffers or optimizer state, which a STEP overwrites.
    """
    assert a.dst is not None and a.mb is not None
    if a.msg is Msg.ACT:
        tensors = {"x": st.outputs.pop((sent, a.mb))}
        if labels_shared:  # labels ride with the activation to the node computing the loss
            tensors["y"] = st.labels[a.mb]
        part = sent + 1
    elif a.msg is Msg.GRAD:
        tensors = {"g": st.grads_out.pop((sent, a.mb))}
        part = sent - 1
    else:
        raise ValueError(f"{node.name}: a task sends ACT or GRAD, not {a}")
    node.send(a.dst, a.msg, owner=st.owner, iteration=st.iteration, mb=a.mb, tensors=tensors,
              part=part, n_mb=st.n_mb, batch=st.batch, epoch=st.epoch, copy=False)
