"""The admission rules, per role and per reason, without processes; the bounded pending list
and the inbox's own refusals, counted per reason, over real loopback sockets."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest
import torch
import zmq

from mpsl.actions import Msg
from mpsl.data import micro_batches
from nodes import admission as adm
from nodes.admission import Rules
from nodes.data_owner import DataOwner
from nodes.inbox import Inbox, wire_reason
from nodes.node import NodeError
from nodes.results import node_row as _node_row
from nodes.wire import Message, WireError, encode
from tests.nodes.conftest import small_topology


def rules(name: str, **extra: Any) -> Rules:
    """The rules of `name` in small_topology (mlp, 2 owners, node1 runs part 1 of 2, N = 2)."""
    topo, plan = small_topology(owners=2, **extra)
    return Rules(topo, plan, name)


def work(r: Rules, kind: Msg, *, owner: int = 0, it: int = 0, mb: int = 0,
         part: int | None = None, src: str | None = None, **meta: Any) -> Message:
    """A valid ACT (for part 1, from the owner) or GRAD (for part 0, from node1), unless
    changed by the arguments."""
    if part is None:
        part = r.parts[-1] if kind == Msg.ACT else r.parts[0]
    k = owner if owner in r.owners else 0
    batch = r._batch(k, it)
    n_mb = min(r.plan.micro_batches[k], batch)
    size = micro_batches(batch, n_mb)[mb] if 0 <= mb < n_mb else 1
    if kind == Msg.ACT:
        tensors = {"x": torch.zeros(size, *r.model.part_in[part])}
        if not r.plan.labels_local:
            tensors["y"] = torch.zeros(size, dtype=torch.int64)
    else:
        tensors = {"g": torch.zeros(size, *r.model.part_out[part])}
    default_src = f"owner{owner}" if kind == Msg.ACT and r.role == "compute" else "node1"
    return Message(kind=kind, src=src or default_src, owner=owner, iter=it, mb=mb,
                   tensors=tensors,
                   meta={"part": part, "n_mb": n_mb, "batch": batch,
                         "epoch": it // r.per_epoch[k], **meta})


def params(r: Rules, src: str, round_id: int = 0, **meta: Any) -> Message:
    """Valid PARAMS of `src` (an owner, or node1) for the aggregator."""
    if src.startswith("owner"):
        k = int(src[5:])
        specs = r.model.params_of(r.plan.parts_on("owner"))
        meta = {"round": round_id, "samples": r.samples[k], "epoch_end": False, **meta}
    else:
        k = -1
        parts = r.plan.parts_on(src) or [1]
        specs = r.model.params_of(parts)
        meta = {"round": round_id, "part": parts[0], **meta}
    tensors = {n: torch.zeros(shape, dtype=dt) for n, (shape, dt) in specs.items()}
    return Message(kind=Msg.PARAMS, src=src, owner=k, iter=round_id, tensors=tensors, meta=meta)


def reason(r: Rules, msg: Message, run_id: str = "") -> str | None:
    refused = r.check(msg, run_id)
    return None if refused is None else refused[0]


def with_tensor(msg: Message, name: str, t: torch.Tensor | None) -> Message:
    tensors = dict(msg.tensors)
    if t is None:
        del tensors[name]
    else:
        tensors[name] = t
    msg.tensors = tensors
    return msg


def test_the_vocabulary_is_fixed():
    assert len(set(adm.REASONS)) == len(adm.REASONS)


def test_a_compute_node_takes_work_of_its_part_from_the_planned_sender():
    r = rules("node1")
    ok = work(r, Msg.ACT)
    assert r.check(ok) is None and r.check(work(r, Msg.ACT, owner=1, mb=1)) is None
    x = ok.tensors["x"]
    cases = [
        (Message(kind=Msg.PARAMS, src="owner0"), adm.KIND),
        (Message(kind=Msg.GLOBAL, src="aggregator"), adm.KIND),
        (Message(kind=Msg.METRICS, src="owner0", meta={"type": "loss"}), adm.KIND),
        (work(r, Msg.ACT, owner=7), adm.OWNER_),
        (work(r, Msg.ACT, owner=-1), adm.OWNER_),
        (work(r, Msg.ACT, part=0), adm.PART),
        (work(r, Msg.ACT, part=True), adm.META),
        (work(r, Msg.ACT, epoch="0"), adm.META),
        (work(r, Msg.ACT, batch=7), adm.META),
        (work(r, Msg.ACT, n_mb=1), adm.META),
        (work(r, Msg.ACT, epoch=1), adm.META),
        (Message(kind=Msg.ACT, src="owner0", owner=0, meta={"part": 1}), adm.META),
        (work(r, Msg.ACT, mb=2), adm.MB),
        (work(r, Msg.ACT, mb=-1), adm.MB),
        (work(r, Msg.GRAD, part=1), adm.NO_TASK),  # the last part gets no gradient
        (work(r, Msg.ACT, src="owner1"), adm.SENDER),
        (work(r, Msg.ACT, src="aggregator"), adm.SENDER),
        (with_tensor(work(r, Msg.ACT), "y", None), adm.TENSORS),
        (with_tensor(work(r, Msg.ACT), "z", x), adm.TENSORS),
        (with_tensor(work(r, Msg.ACT), "x", torch.zeros(x.shape[0] + 1, *x.shape[1:])),
         adm.SHAPE),
        (with_tensor(work(r, Msg.ACT), "x", torch.zeros(x.shape[0], 3)), adm.SHAPE),
        (with_tensor(work(r, Msg.ACT), "x", x.double()), adm.DTYPE),
        (with_tensor(work(r, Msg.ACT), "y", torch.zeros(x.shape[0], dtype=torch.int32)),
         adm.DTYPE),
        (with_tensor(work(r, Msg.ACT), "y", torch.full((x.shape[0],), 10)), adm.LABELS),
        (with_tensor(work(r, Msg.ACT), "y", torch.full((x.shape[0],), -1)), adm.LABELS),
        (work(r, Msg.ACT, it=3), adm.AHEAD_ITER),  # the node is at -1: at most 2 ahead
        (work(r, Msg.ACT, it=10**9), adm.AHEAD_ITER),
    ]
    for msg, want in cases:
        assert reason(r, msg) == want, (msg, r.check(msg))
    r.iteration[0] = 5
    assert reason(r, work(r, Msg.ACT, it=3)) == adm.PAST_ITER
    assert reason(r, work(r, Msg.ACT, it=4)) is None  # one back: it may still be running
    assert reason(r, work(r, Msg.ACT, it=7)) is None
    last = r.epochs * r.per_epoch[0]
    r.iteration[0] = last - 1
    assert reason(r, work(r, Msg.ACT, it=last)) == adm.AHEAD_ITER  # past the run's end


def sync(r: Rules, owner: int = 0, round_id: int = 0, src: str | None = None,
         **meta: Any) -> Message:
    m = {"type": "sync", "round": round_id, "samples": r.samples[owner % 2], "epoch_end": True}
    return Message(kind=Msg.CONTROL, src=src or f"owner{owner}", owner=owner, iter=round_id,
                   meta={**m, **meta})


def test_a_compute_node_takes_control_from_the_aggregator_and_syncs_in_its_window():
    r = rules("node1", training={"epochs": 4, "batch_size": 8, "lr": 0.1, "optimizer": "sgd",
                                 "seed": 0})
    def ctl(typ: str, src: str = "aggregator") -> Message:
        return Message(kind=Msg.CONTROL, src=src, meta={"type": typ})

    assert r.check(ctl("stop"), "run") is None and r.check(ctl("abort"), "run") is None
    assert r.check(ctl("start")) is None and r.check(sync(r)) is None
    cases = [
        (ctl("stop", "owner0"), adm.SENDER), (ctl("abort", "node1"), adm.SENDER),
        (ctl("hello"), adm.TYPE), (ctl("nonsense"), adm.TYPE),
        (Message(kind=Msg.CONTROL, src="aggregator", meta={"type": [1]}), adm.TYPE),
        (sync(r, owner=7), adm.OWNER_), (sync(r, src="owner1"), adm.SENDER),
        (sync(r, samples=None), adm.META), (sync(r, samples=3), adm.META),
        (sync(r, round="0"), adm.META), (sync(r, epoch_end="yes"), adm.META),
        (sync(r, round_id=3), adm.AHEAD_ROUND), (sync(r, round_id=4), adm.AHEAD_ROUND),
    ]
    for msg, want in cases:
        assert reason(r, msg) == want, (msg, r.check(msg))
    assert reason(r, ctl("start"), "run") == adm.TYPE  # the run has started already
    r.syncs[0] = 2
    assert reason(r, sync(r, round_id=1)) == adm.PAST_ROUND
    assert reason(r, sync(r, round_id=2)) is None and reason(r, sync(r, round_id=3)) is None


def test_leave_join_and_heartbeats_come_from_the_aggregator_for_an_owner_and_round():
    r = rules("node1", training={"epochs": 4, "batch_size": 8, "lr": 0.1, "optimizer": "sgd",
                                 "seed": 0})

    def ctl(typ: str, src: str = "aggregator", owner: int = 1, **meta: Any) -> Message:
        return Message(kind=Msg.CONTROL, src=src, owner=owner, meta={"type": typ, **meta})

    for typ in ("leave", "join"):
        assert reason(r, ctl(typ, round=1), "run") is None
        assert reason(r, ctl(typ, "owner1", round=1), "run") == adm.SENDER
        assert reason(r, ctl(typ, owner=5, round=1), "run") == adm.META
        assert reason(r, ctl(typ, round=r.rounds), "run") == adm.META
        assert reason(r, ctl(typ, round="1"), "run") == adm.META
    owner = rules("owner0", training={"epochs": 4, "batch_size": 8, "lr": 0.1,
                                      "optimizer": "sgd", "seed": 0})
    assert reason(owner, ctl("start", resume_round=2)) is None
    assert reason(owner, ctl("start", resume_round=-1)) == adm.META
    assert reason(owner, ctl("start", resume_round=10**6)) == adm.META
    assert reason(owner, ctl("heartbeat", "node1"), "run") == adm.TYPE  # the aggregator's
    r.active = {0}  # owner 1 left: its late work is the compute node's to sort out
    r.iteration[1] = 0
    assert reason(r, work(r, Msg.ACT, owner=1, it=40)) is None
    assert reason(r, work(r, Msg.ACT, owner=0, it=40)) == adm.AHEAD_ITER


def global_(r: Rules, round_id: int = 0, owner: int = 0, src: str = "aggregator") -> Message:
    specs = r.model.params_of(r.parts)
    return Message(kind=Msg.GLOBAL, src=src, owner=owner, iter=round_id,
                   tensors={n: torch.zeros(s, dtype=d) for n, (s, d) in specs.items()},
                   meta={"round": round_id})


def test_a_data_owner_takes_its_gradients_and_the_aggregators_global():
    r = rules("owner0")
    r.iteration[0] = 3
    assert r.check(work(r, Msg.GRAD, it=3)) is None and r.check(global_(r)) is None
    g = global_(r)
    first = next(iter(g.tensors))
    cases = [
        (params(r, "owner0"), adm.KIND),
        (Message(kind=Msg.METRICS, src="node1", meta={"type": "loss"}), adm.KIND),
        (Message(kind=Msg.CONTROL, src="owner0", meta={"type": "stop"}, owner=0), adm.SENDER),
        (Message(kind=Msg.CONTROL, src="node1", meta={"type": "sync"}), adm.TYPE),
        (Message(kind=Msg.CONTROL, src="node1", meta={"type": "abort"}), adm.SENDER),
        (work(r, Msg.GRAD, it=3, owner=1), adm.OWNER_),
        (work(r, Msg.GRAD, it=3, src="owner1"), adm.SENDER),
        (work(r, Msg.GRAD, it=3, part=1), adm.PART),
        (work(r, Msg.ACT, it=3, part=0), adm.NO_TASK),
        (with_tensor(work(r, Msg.GRAD, it=3), "g", torch.zeros(1, 64)), adm.SHAPE),
        (work(r, Msg.GRAD, it=2), adm.PAST_ITER),
        (work(r, Msg.GRAD, it=6), adm.AHEAD_ITER),
        (global_(r, src="node1"), adm.SENDER),
        (global_(r, src="owner1"), adm.SENDER),
        (global_(r, owner=1), adm.META),
        (Message(kind=Msg.GLOBAL, src="aggregator", owner=0, iter=0, tensors=g.tensors,
                 meta={"round": 1}), adm.META),
        (with_tensor(global_(r), first, None), adm.TENSORS),
        (with_tensor(global_(r), first, torch.zeros(2, 2)), adm.SHAPE),
        (with_tensor(global_(r), first, g.tensors[first].double()), adm.DTYPE),
        (global_(r, round_id=1), adm.AHEAD_ROUND),  # one round per epoch, one epoch
    ]
    for msg, want in cases:
        assert reason(r, msg) == want, (msg, r.check(msg))
    r.round = 1
    assert reason(r, global_(r)) == adm.PAST_ROUND


def test_an_owner_in_a_u_shape_takes_the_last_activation_without_labels():
    r = rules("owner0", mode="mpsl", labels="local", plan={"cuts": [1, 2], "micro_batches": 2})
    assert r.plan.labels_local and r.parts == [0, 2]
    act = work(r, Msg.ACT, part=2)
    assert r.check(act) is None
    assert reason(r, with_tensor(work(r, Msg.ACT, part=2), "y",
                                 torch.zeros(4, dtype=torch.int64))) == adm.TENSORS


def summary(src: str, **meta: Any) -> Message:
    m = {"type": "summary", "node": src, "peak_rss_bytes": 1, "peak_tensor_bytes": 1,
         "state_bytes": 1, "activation_peak_bytes": 0, "rejected_messages": 0,
         "refused_connections": 0,
         "dropped": {"wire: another run": 2},
         "events": [["owner0", "cpu", "0F0", 0, 1, 0, 1.0, 2.0, 0]]}
    return Message(kind=Msg.METRICS, src=src, meta={**m, **meta})


def loss(src: str = "node1", owner: int = 0, it: int = 0, **meta: Any) -> Message:
    m = {"type": "loss", "epoch": 0, "loss": 2.3, "samples": 8}
    return Message(kind=Msg.METRICS, src=src, owner=owner, iter=it, meta={**m, **meta})


def test_the_aggregator_takes_params_metrics_and_hellos():
    r = rules("aggregator")
    hello = Message(kind=Msg.CONTROL, src="owner0",
                    meta={"type": "hello", "settings": {}, "digest": "d"})
    for ok in (params(r, "owner0"), params(r, "owner1"), params(r, "node1"),
               params(r, "owner1", round_id=0, epoch_end=True), summary("node1"), loss()):
        assert r.check(ok, "run") is None, r.check(ok, "run")
    assert r.check(hello) is None
    p = params(r, "owner0")
    first = next(iter(p.tensors))
    cases = [
        (work(rules("node1"), Msg.ACT), adm.KIND), (global_(rules("owner0")), adm.KIND),
        (Message(kind=Msg.CONTROL, src="owner0", meta={"type": "stop"}), adm.TYPE),
        (Message(kind=Msg.METRICS, src="owner0", meta={"type": "other"}), adm.TYPE),
        (params(r, "aggregator"), adm.SENDER),
        (loss(src="owner0"), adm.SENDER),  # labels shared: node1 computes the loss
        (summary("aggregator"), adm.SENDER),
        (loss(owner=9), adm.OWNER_),
        (params(r, "owner0", samples=None), adm.META),  # once a KeyError
        (params(r, "owner0", samples=1), adm.META),
        (params(r, "owner0", epoch_end=None), adm.META),
        (params(r, "owner0", round=1), adm.META),
        (params(r, "node1", part=None), adm.META),
        (params(r, "node1", part=0), adm.PART),
        (with_tensor(params(r, "owner0"), first, None), adm.TENSORS),
        (with_tensor(params(r, "owner0"), "x", torch.zeros(1)), adm.TENSORS),
        (with_tensor(params(r, "owner0"), first, torch.zeros(1)), adm.SHAPE),
        (with_tensor(params(r, "owner0"), first, p.tensors[first].half()), adm.DTYPE),
        (params(r, "owner0", round_id=1), adm.AHEAD_ROUND),
        (loss(loss="high"), adm.META), (loss(loss=True), adm.META), (loss(samples=3), adm.META),
        (loss(epoch=None), adm.META), (loss(it=10**6), adm.AHEAD_ITER),
        (Message(kind=Msg.METRICS, src="node1", tensors={"x": torch.zeros(1)},
                 meta={"type": "loss"}), adm.TENSORS),
        (summary("node1", node="owner0"), adm.META), (summary("node1", dropped=[]), adm.META),
        (summary("node1", state_bytes=1.5), adm.META),
        (summary("node1", events=[["x"]]), adm.META),
        (summary("node1", events=[["a", "b", "c", "0", 1, 0, 1.0, 2.0, 0]]), adm.META),
    ]
    for msg, want in cases:
        assert reason(r, msg, "run") == want, (msg, r.check(msg, "run"))
    assert reason(r, hello, "run") is None  # an owner that rejoins says hello again
    node_hello = Message(kind=Msg.CONTROL, src="node1", meta=dict(hello.meta))
    assert reason(r, node_hello) is None and reason(r, node_hello, "run") == adm.SENDER
    beat = Message(kind=Msg.CONTROL, src="node1", meta={"type": "heartbeat"})
    assert reason(r, beat) == adm.TYPE and reason(r, beat, "run") is None
    assert reason(r, Message(kind=Msg.CONTROL, src="owner0", meta={"type": "hello"})) == adm.META
    assert reason(r, Message(kind=Msg.CONTROL, src="aggregator", meta={"type": "hello"})) \
        == adm.SENDER
    r.round = 1
    assert reason(r, params(r, "owner0"), "run") == adm.PAST_ROUND


def test_the_results_name_the_drops_per_reason():
    row = _node_row(summary("node1").meta, 1.0, 3.0)
    assert row["dropped"] == {"wire: another run": 2} and row["idle_s"] == 2.0


def test_pending_is_bounded_and_keeps_only_what_a_later_receive_can_match(shut, monkeypatch):
    topo, plan = small_topology(owners=1)
    owner = shut(DataOwner(topo, plan, 0))
    monkeypatch.setattr("nodes.node.PENDING_CAP", 3)
    push = shut.ctx.socket(zmq.PUSH)
    push.connect(owner.inbox.address)
    good = Message(kind=Msg.GLOBAL, src="aggregator", owner=0, iter=0, meta={"round": 0},
                   tensors=owner.copies[(0, 0)].full_state())
    for i in range(5):
        good.seq = i
        push.send_multipart(encode(good))
    push.send_multipart(encode(Message(kind=Msg.PARAMS, src="owner0", owner=0)))
    with pytest.raises(NodeError):
        owner.recv(lambda m: m.kind == Msg.ACT, "an ACT", time.monotonic() + 1.0)
    assert [m.seq for m in owner._pending] == [0, 1, 2]
    assert dict(owner.dropped) == {adm.PENDING: 2, adm.KIND: 1}
    owner.rules.round = 1  # the GLOBALs of round 0 can no longer be matched: dropped
    with pytest.raises(NodeError):
        owner.recv(lambda m: m.kind == Msg.ACT, "an ACT", time.monotonic() + 0.1)
    assert owner._pending == [] and owner.dropped[adm.PAST_ROUND] == 3
    assert owner.summary(0)["dropped"] == {adm.PENDING: 2, adm.KIND: 1, adm.PAST_ROUND: 3}
    push.close(linger=0)


def test_the_inbox_counts_its_refusals_per_reason(shut):
    inbox = shut(Inbox(shut.ctx, "tcp://127.0.0.1:0", known_senders={"owner0"}))
    push = shut.ctx.socket(zmq.PUSH)
    push.connect(inbox.address)
    ok = encode(Message(kind=Msg.ACT, src="owner0", tensors={"x": torch.zeros(2)}))
    head = msgpack.unpackb(ok[0])
    huge = dict(head, tensors=[{"name": "x", "dtype": "float32", "shape": [1 << 40, 1 << 40]}])
    sends = [
        [b"\xc1not msgpack"],
        [msgpack.packb({"v": 1})],
        [msgpack.packb(dict(head, src="mallory")), ok[1]],
        [msgpack.packb(huge), ok[1]],  # claims 2**80 floats: refused before any allocation
        [msgpack.packb(dict(head, tensors=[{"name": "x", "dtype": "object", "shape": [2]}])),
         ok[1]],
        [ok[0], ok[1] + b"\0"],
        [ok[0]],
        [msgpack.packb(dict(head, run="other")), ok[1]],
    ]
    inbox.run = ""
    for frames in sends:
        push.send_multipart(frames)
    with pytest.raises(TimeoutError):
        inbox.recv(timeout=1.0)
    assert dict(inbox.reasons) == {"not msgpack": 1, "malformed header": 1,
                                   "unknown sender": 1, "oversize": 1, "dtype not allowed": 1,
                                   "frame length": 1, "frame count": 1, "another run": 1}
    assert inbox.rejected == len(sends)
    assert wire_reason(WireError("meta nested deeper than 32")) == "oversize"
    push.close(linger=0)


def test_the_aggregator_keeps_one_loss_per_iteration(shut):
    from nodes.aggregator import Aggregator

    topo, plan = small_topology(owners=2)
    agg = shut(Aggregator(topo, plan))
    assert agg.rules.check(loss(), "run") is None
    agg.on_metrics(loss())
    agg.on_metrics(loss())  # forged or repeated: the first one stands
    agg.on_metrics(summary("node1"))
    assert len(agg.losses) == 1 and dict(agg.dropped) == {adm.DUPLICATE: 1}
    assert set(agg.summaries) == {"node1"}


def test_rollbacks_come_from_the_aggregator_and_saved_and_rolled_go_to_it():
    training = {"epochs": 4, "batch_size": 8, "lr": 0.1, "optimizer": "sgd", "seed": 0}
    node = rules("node1", training=training, failure={"checkpoint": True})
    owner = rules("owner0", training=training, failure={"checkpoint": True})
    agg = rules("aggregator", training=training, failure={"checkpoint": True})

    def ctl(typ: str, src: str = "aggregator", it: int = 1, **meta: Any) -> Message:
        return Message(kind=Msg.CONTROL, src=src, iter=it, meta={"type": typ, **meta})

    back = {"round": 1, "run": "ab12" * 4}
    for r in (node, owner):
        assert reason(r, ctl("rollback", **back), "run") is None
        assert reason(r, ctl("rollback", params=True, **back), "run") is None
        assert reason(r, ctl("rollback", **back)) == adm.TYPE  # before the run started
        assert reason(r, ctl("rollback", "node1", **back), "run") == adm.SENDER
        for bad in ({"round": r.rounds}, {"round": -1}, {"round": "1"}, {"run": ""},
                    {"run": "x" * 65}, {"run": "a b"}, {"run": 5}, {"params": 1}):
            assert reason(r, ctl("rollback", **{**back, **bad}), "run") == adm.META, bad
        assert reason(r, ctl("saved", "node1", round=1), "run") == adm.TYPE
    assert reason(agg, ctl("saved", "node1", round=1), "run") is None
    assert reason(agg, ctl("saved", "owner0", round=1), "run") == adm.SENDER
    assert reason(agg, ctl("saved", "node1", round=1)) == adm.TYPE  # before the run started
    assert reason(agg, ctl("saved", "node1", round=2), "run") == adm.META  # not its iter
    assert reason(agg, ctl("saved", "node1", it=agg.rounds + 1, round=agg.rounds + 1),
                  "run") == adm.META
    for src in ("owner1", "node1"):
        assert reason(agg, ctl("rolled", src, round=1, redone=3), "run") is None
    assert reason(agg, ctl("rolled", "aggregator", round=1), "run") == adm.SENDER
    for bad in (-1, "3", 10**6):
        assert reason(agg, ctl("rolled", "owner0", round=1, redone=bad), "run") == adm.META


def test_a_compute_node_says_hello_during_the_run_only_when_the_run_keeps_checkpoints():
    hello = Message(kind=Msg.CONTROL, src="node1",
                    meta={"type": "hello", "settings": {}, "digest": "d"})
    assert reason(rules("aggregator"), hello, "run") == adm.SENDER
    assert reason(rules("aggregator", failure={"checkpoint": True}), hello, "run") is None


def test_the_inbox_logs_a_flood_once_a_second_but_the_first_of_each_other_run(shut, caplog):
    inbox = shut(Inbox(shut.ctx, "tcp://127.0.0.1:0", known_senders={"owner0"}))
    push = shut.ctx.socket(zmq.PUSH)
    push.connect(inbox.address)
    ok = encode(Message(kind=Msg.ACT, src="owner0", tensors={"x": torch.zeros(2)}))
    head = msgpack.unpackb(ok[0])
    inbox.run = "mine"
    for _ in range(200):
        push.send_multipart([b"\xc1not msgpack"])
    for run in ("old", "old", "stale"):
        push.send_multipart([msgpack.packb(dict(head, run=run)), ok[1]])
    with caplog.at_level("WARNING", logger="nodes.inbox"), pytest.raises(TimeoutError):
        inbox.recv(timeout=1.0)
    lines = [r.getMessage() for r in caplog.records]
    assert inbox.reasons == {"not msgpack": 200, "another run": 3}
    assert sum("not msgpack" in line for line in lines) == 1  # within the same second
    assert sum("of another run ('old')" in line for line in lines) == 1
    assert sum("of another run ('stale')" in line for line in lines) == 1
    push.close(linger=0)
