"""Executes schedule tasks on a node: F, B, SEND and STEP actions over one owner's iteration."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mpsl.schedule import ACT, BACKWARD, FORWARD, GRAD, SEND, STEP, Task
from nodes.node import Node
from nodes.parts import PartRunner
from nodes.wire import Kind, Message


@dataclass
class IterationState:
    """What one owner's iteration holds on one node between its tasks."""

    owner: int
    iteration: int
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
        return cls(msg.owner, msg.iter, int(msg.meta["epoch"]), int(msg.meta["batch"]),
                   int(msg.meta["n_mb"]))

    def absorb(self, msg: Message) -> None:
        """Keep a received ACT (and labels) or GRAD where the triggered task will find it."""
        part = int(msg.meta["part"])
        if msg.kind == ACT:
            self.inputs[(part, msg.mb)] = msg.tensors["x"]
            if "y" in msg.tensors:
                self.labels[msg.mb] = msg.tensors["y"]
        elif msg.kind == GRAD:
            self.grads_in[(part, msg.mb)] = msg.tensors["g"]
        else:
            raise ValueError(f"a task is triggered by ACT or GRAD, not {msg.kind} from {msg.src}")


def trigger_key(msg: Message) -> tuple[str, int, int]:
    return (msg.kind, int(msg.meta.get("part", -1)), msg.mb)


def run_task(node: Node, runner: PartRunner, task: Task, st: IterationState,
             labels_shared: bool) -> bool:
    """Run a task's actions in order; return True when it ended with a STEP."""
    stepped = False
    for a in task.actions:
        key = (a.part, a.mb)
        if a.kind == FORWARD:
            x = st.inputs.pop(key)
            labels = st.labels.get(a.mb) if a.part == runner.last_part else None
            with node.timed(FORWARD, st.owner, st.iteration, a.mb):
                out = runner.forward(st.owner, a.part, a.mb, x, labels,
                                     weight=x.shape[0] / st.batch, iteration=st.iteration)
            st.outputs[key] = out
        elif a.kind == BACKWARD:
            with node.timed(BACKWARD, st.owner, st.iteration, a.mb):
                g = runner.backward(st.owner, a.part, a.mb, st.grads_in.pop(key, None))
            if g is not None:
                st.grads_out[key] = g
        elif a.kind == SEND and a.msg == ACT:
            tensors = {"x": st.outputs.pop(key)}
            if labels_shared:  # labels ride with the activation to the node computing the loss
                tensors["y"] = st.labels[a.mb]
            node.send(a.dst, Kind.ACT, owner=st.owner, iteration=st.iteration, mb=a.mb,
                      tensors=tensors, part=a.part + 1, n_mb=st.n_mb, batch=st.batch,
                      epoch=st.epoch)
        elif a.kind == SEND and a.msg == GRAD:
            node.send(a.dst, Kind.GRAD, owner=st.owner, iteration=st.iteration, mb=a.mb,
                      tensors={"g": st.grads_out.pop(key)}, part=a.part - 1, n_mb=st.n_mb,
                      batch=st.batch, epoch=st.epoch)
        elif a.kind == STEP:
            parts = [a.part] if a.part >= 0 else sorted({p for (_, p) in runner.copies})
            with node.timed(STEP, st.owner, st.iteration):
                for p in parts:
                    runner.step(st.owner, p)
            stepped = True
        else:
            raise ValueError(f"unknown action {a}")
    return stepped
