"""The compute node on the task queue, fed messages by hand: what runs, what waits for the
round's averaging, and what is dropped (counted per reason, never fatal)."""

from __future__ import annotations

import torch

from mpsl.names import CPU
from mpsl.training import owner_samples
from nodes.compute import ComputeNode
from nodes.inbox import Inbox
from nodes.wire import Kind, Message
from tests.nodes.conftest import small_topology

B, N = 8, 2  # batch and micro-batches of small_topology


def act(owner: int, it: int, mb: int, *, src: str | None = None, part: int = 1,
        n_mb: int = N) -> Message:
    """The activation of part 0 of `owner` for part 1 (mlp: 64 features), labels riding along."""
    g = torch.Generator().manual_seed(100 * owner + 10 * it + mb)
    return Message(kind=Kind.ACT, src=src or f"owner{owner}", owner=owner, iter=it, mb=mb,
                   tensors={"x": torch.randn(B // N, 64, generator=g),
                            "y": torch.randint(0, 10, (B // N,), generator=g)},
                   meta={"part": part, "n_mb": n_mb, "batch": B, "epoch": 0})


def sync(owner: int, round_id: int, src: str | None = None, samples: int | None = None
         ) -> Message:
    """Owner `owner`'s sync of a round, with its real sample count unless `samples`."""
    if samples is None:
        samples = owner_samples(small_topology(owners=2)[0])[owner]
    return Message(kind=Kind.CONTROL, src=src or f"owner{owner}", owner=owner, iter=round_id,
                   meta={"type": "sync", "round": round_id, "samples": samples,
                         "epoch_end": False})


def cpu(node: ComputeNode) -> list[tuple[str, int | None, int | None]]:
    return [(e.action, e.owner, e.iter) for e in node.events if e.resource == CPU]


def test_work_runs_as_it_arrives_and_grads_go_back_for_the_part_before(shut):
    topo, plan = small_topology(owners=1)
    owner0 = shut(Inbox(shut.ctx, topo.address_of("owner0"), known_senders={"node1"}))
    node = shut(ComputeNode(topo, plan, "node1"))
    for mb in range(N):
        assert node.dispatch(act(0, 1, mb))
    assert cpu(node) == [("1F0", 0, 1), ("1B0", 0, 1), ("1F1", 0, 1), ("1B1", 0, 1),
                         ("STEP1", 0, 1)]
    grads = [owner0.recv(timeout=5) for _ in range(N)]
    assert [(g.kind, g.owner, g.iter, g.mb, g.meta["part"]) for g in grads] == [
        ("GRAD", 0, 1, mb, 0) for mb in range(N)]
    assert grads[0].tensors["g"].shape == (B // N, 64)
    assert node.states == {} and node.queue.unfinished == 0
    assert not node.dispatch(Message(kind=Kind.CONTROL, src="aggregator",
                                     meta={"type": "stop"}))


def test_unexpected_messages_are_dropped_and_counted_never_fatal(shut):
    topo, plan = small_topology(owners=2)
    node = shut(ComputeNode(topo, plan, "node1"))
    bad = [
        (act(7, 0, 0), "unknown owner"),
        (act(0, 0, 0, part=2), "wrong part"),
        (act(0, 0, 0, src="owner1"), "wrong sender"),
        (act(0, 0, 5), "wrong micro-batch"),
        (act(0, 0, 0, n_mb=B + 1), "bad meta"),
        (Message(kind=Kind.GRAD, src="owner0", owner=0, iter=0, mb=0, meta={"part": 1}),
         "bad meta"),
        (Message(kind=Kind.PARAMS, src="owner0", owner=0), "kind not taken"),
        (Message(kind=Kind.CONTROL, src="owner0", meta={"type": "stop"}), "wrong sender"),
        (sync(0, 3), "round too far ahead"),
        (sync(0, 0, src="owner1"), "wrong sender"),
    ]
    for msg, _ in bad:
        assert node.dispatch(msg)
    assert cpu(node) == [] and node.queue.unfinished == 0
    node.dispatch(act(0, 0, 0))
    node.dispatch(act(0, 0, 0))  # the same message again
    node.dispatch(act(0, 0, 1))
    node.dispatch(act(0, 0, 1, src="owner0"))  # iteration 0 is done: stale
    node.dispatch(act(1, 1, 0))
    node.dispatch(act(1, 0, 0))  # owner 1 is at iteration 1 already
    want = [r for _, r in bad] + ["duplicate", "stale or duplicate iteration",
                                  "stale or duplicate iteration"]
    assert sorted(node.dropped.elements()) == sorted(want)
    assert [a for a, *_ in cpu(node)] == ["1F0", "1B0", "1F1", "1B1", "STEP1", "1F0", "1B0"]
    summary = node.summary(0)
    assert summary["rejected_messages"] == len(want)
    assert summary["dropped"]["stale or duplicate iteration"] == 2


def test_the_next_round_waits_for_every_owners_sync_then_the_average(shut):
    topo, plan = small_topology(owners=2)
    node = shut(ComputeNode(topo, plan, "node1"))
    for mb in range(N):
        node.dispatch(act(0, 0, mb))
    node.dispatch(sync(0, 0))
    for mb in range(N):  # owner 0 is in round 1 already: held, in arrival order
        node.dispatch(act(0, 1, mb))
    assert [e for e in cpu(node) if e[2] == 1] == []
    assert node.queue.unfinished == 1
    for mb in range(N):
        node.dispatch(act(1, 0, mb))
    assert [e for e in cpu(node) if e[2] == 1] == []  # owner 1 has not synced yet
    node.dispatch(sync(1, 0))
    after_owner1 = cpu(node)[-N * 2 - 2:]
    assert after_owner1 == [("AVG1", None, 0), ("1F0", 0, 1), ("1B0", 0, 1), ("1F1", 0, 1),
                            ("1B1", 0, 1), ("STEP1", 0, 1)]
    avg = [e for e in node.events if e.action == "AVG1"]
    assert len(avg) == 1 and avg[0].mb is None
    assert node.syncs == {0: 1, 1: 1} and node.synced == {} and node.queue.open_round == 1


def test_the_average_is_sample_weighted_and_every_copy_gets_it(shut):
    topo, plan = small_topology(owners=2)
    node = shut(ComputeNode(topo, plan, "node1"))
    n0, n1 = owner_samples(topo)
    for k in range(2):
        for mb in range(N):
            node.dispatch(act(k, 0, mb))
    before = [node.copies[(k, 1)].module.state_dict() for k in range(2)]
    before = [{n: t.clone() for n, t in s.items()} for s in before]
    assert not torch.equal(before[0]["0.fc.weight"], before[1]["0.fc.weight"])
    node.dispatch(sync(0, 0))
    node.dispatch(sync(1, 0))
    want = (n0 * before[0]["0.fc.weight"] + n1 * before[1]["0.fc.weight"]) / (n0 + n1)
    for k in range(2):
        torch.testing.assert_close(node.copies[(k, 1)].module.state_dict()["0.fc.weight"], want)
