"""The data owner on the task queue: what it takes, what it drops, the order its passes run in
under either schedule, and the trace of an iteration."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from mpsl.actions import Msg
from mpsl.names import CPU
from mpsl.plan import Plan
from mpsl.schedule import iteration_tasks
from nodes.compute import ComputeNode
from nodes.data_owner import DataOwner
from nodes.executor import IterationState, trigger_sources
from nodes.link import Outbox
from nodes.node import NodeError, RunOver
from nodes.wire import Kind, Message
from tests.nodes.conftest import small_topology


def grad(mb: int, *, owner: int = 0, it: int = 2, src: str = "node1", part: int = 0,
         tensors: dict | None = None, kind: str = Kind.GRAD) -> Message:
    return Message(kind=kind, src=src, owner=owner, iter=it, mb=mb,
                   tensors={"g": torch.ones(4, 64)} if tensors is None else tensors,
                   meta={"part": part, "n_mb": 2, "batch": 8, "epoch": 0})


def test_the_owner_takes_what_a_task_waits_for_and_drops_the_rest(shut):
    topo, plan = small_topology(owners=1)
    owner = shut(DataOwner(topo, plan, 0))
    st = IterationState(0, 2, 0, 8, 2)
    tasks = [t for t in iteration_tasks(plan, 0, 2) if t.node == "owner0"]
    sources = trigger_sources(tasks)
    owner.queue.add(0, 2, tasks, time.time())
    wrong = "not of this owner's current iteration"
    none = "no task takes it"
    for msg, reason in [(grad(0, owner=1), wrong), (grad(0, it=3), wrong),
                        (grad(0, src="aggregator"), none), (grad(0, part=1), none),
                        (grad(7), none), (grad(0, tensors={}), none),
                        (grad(0, kind=Kind.ACT, tensors={"x": torch.ones(4, 64)}), none)]:
        assert not owner.take(msg, st, sources), reason
    assert owner.take(grad(1), st, sources)
    assert not owner.take(grad(1), st, sources)
    assert set(st.grads_in) == {(0, 1)}
    assert dict(owner.dropped) == {wrong: 2, none: 5, "duplicate": 1}
    assert owner.rejected_messages == 8
    first = owner.queue.pop()  # the forwards' barrier; the backward waits behind it
    assert first is not None and first.task.trigger is None and owner.queue.pop() is None


def test_an_fl_iteration_is_one_barrier_of_passes_then_the_step(shut):
    topo, _ = small_topology(owners=1, mode="fl", plan={"cuts": [], "micro_batches": 1})
    plan = Plan(4, (), ("owner",), (2,))
    owner = shut(DataOwner(topo, plan, 0))
    it = 1 * owner.iterations[0] + 3  # epoch 1, its fourth iteration: counted over the run
    owner.iteration(1, it, np.arange(8))
    owner.outboxes["aggregator"].flush(5)
    assert [(e.action, e.owner, e.iter, e.mb) for e in owner.events if e.resource == CPU] == [
        ("0F0", 0, it, 0), ("0B0", 0, it, 0), ("0F1", 0, it, 1), ("0B1", 0, it, 1),
        ("STEP", 0, it, None)]
    (loss,) = [e for e in owner.events if e.resource != CPU]
    assert (loss.node, loss.resource, loss.action, loss.owner, loss.iter, loss.mb) == (
        "owner0", "owner0->aggregator", ">aggregator:METRICS", 0, it, None)
    assert owner.queue.unfinished == 0


def _one_iteration(shut, schedule: object) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Owner 0 and node1 in this process, over real sockets: the owner's passes in the
    order they ran, and both parts' weights after one iteration of N = 4."""
    topo, plan = small_topology(owners=1, plan={"cuts": [2], "micro_batches": 4},
                                schedule=schedule)
    node = shut(ComputeNode(topo, plan, "node1"))
    owner = shut(DataOwner(topo, plan, 0))
    failed: list[BaseException] = []

    def work() -> None:
        try:
            owner.iteration(0, 0, np.arange(8))
        except BaseException as err:  # reported by the test below
            failed.append(err)

    th = threading.Thread(target=work, daemon=True)
    th.start()
    while th.is_alive():
        try:
            msg = node.inbox.recv(timeout=0.05)
        except TimeoutError:
            continue
        assert node.dispatch(msg)
    assert not failed, failed
    assert node.queue.unfinished == 0 and owner.queue.unfinished == 0
    order = [e.action for e in owner.events if e.resource == CPU]
    state = owner.copies[(0, 0)].full_state() | node.copies[(0, 1)].full_state()
    return order, state


def test_the_owner_runs_either_schedule_to_the_same_weights(shut):
    gpipe, w_gpipe = _one_iteration(shut, "gpipe")
    assert gpipe == ["0F0", "0F1", "0F2", "0F3", "0B0", "0B1", "0B2", "0B3", "STEP"]
    one, w_one = _one_iteration(shut, {"name": "1f1b", "max_in_flight": 1})
    assert one == ["0F0", "0B0", "0F1", "0B1", "0F2", "0B2", "0F3", "0B3", "STEP"]
    assert w_gpipe.keys() == w_one.keys()
    for k in w_gpipe:
        torch.testing.assert_close(w_one[k], w_gpipe[k], rtol=1e-6, atol=1e-7, msg=k)


@pytest.mark.parametrize("kind", [Msg.GLOBAL, Msg.CONTROL])
def test_other_kinds_wait_for_a_later_receive(shut, kind):
    """An iteration receives only ACT and GRAD: a GLOBAL meanwhile is kept for the download,
    as is the start; what the rules refuse (a GLOBAL without tensors) is dropped instead."""
    topo, plan = small_topology(owners=1)
    owner = shut(DataOwner(topo, plan, 0))
    if kind == Msg.GLOBAL:
        good = Message(kind=kind, src="aggregator", owner=0, iter=0, meta={"round": 0},
                       tensors=owner.copies[(0, 0)].full_state())
        bad = Message(kind=kind, src="aggregator", owner=0, iter=0, meta={"round": 0})
    else:
        good = Message(kind=kind, src="aggregator", meta={"type": "start"})
        bad = Message(kind=kind, src="node1", meta={"type": "start"})
    owner._pending += [bad, good]
    with pytest.raises(Exception, match="no ACT/GRAD of iteration 0"):
        owner.recv(lambda m: m.kind in (Msg.ACT, Msg.GRAD), "ACT/GRAD of iteration 0",
                   time.monotonic() + 0.2)
    assert owner._pending == [good]
    assert sum(owner.dropped.values()) == 1


def test_a_wait_that_times_out_names_the_silent_peer(shut):
    """An iteration whose gradients never come fails naming the node that should send them."""
    topo, plan = small_topology(owners=1, runtime={"timeout_s": 0.5})
    owner = shut(DataOwner(topo, plan, 0))
    idx = np.arange(min(owner.samples, topo.training.batch_size))
    with pytest.raises(NodeError, match=r"^owner0: no ACT/GRAD of iteration 0 from node1 "
                                        r"within 0.5 s$"):
        owner.iteration(0, 0, idx)


def test_a_stop_from_the_aggregator_ends_a_straggling_owners_wait(shut):
    """The run ended while the owner was behind: its wait ends (RunOver), a stop from anyone
    else is dropped."""
    topo, plan = small_topology(owners=1)
    owner = shut(DataOwner(topo, plan, 0))
    owner.run_id = "r"
    forged = Message(kind=Msg.CONTROL, src="node1", meta={"type": "stop"}, run="r")
    stop = Message(kind=Msg.CONTROL, src="aggregator", meta={"type": "stop"}, run="r")
    box = Outbox(shut.ctx, owner.inbox.address, name="aggregator->owner0")
    try:
        for msg in (forged, stop):
            box.send(msg)
        with pytest.raises(RunOver, match="owner0: the run ended while it was behind"):
            owner.recv(lambda m: m.kind == Msg.GRAD, "GRAD", time.monotonic() + 5)
    finally:
        box.close(drain=False, timeout=1)
    assert owner.dropped == {"wrong sender": 1}
