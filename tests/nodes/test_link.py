"""Tests for nodes.link: delivery, shaping, latency, back-pressure, shutdown, two processes."""

from __future__ import annotations

import multiprocessing as mp
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import zmq

from mpsl.trace import Event
from nodes.link import Inbox, LinkClock, Outbox, Staging
from nodes.wire import Kind, Message, encode, message_nbytes

pytestmark = pytest.mark.timeout(60)



@pytest.fixture
def net() -> Iterator[tuple]:
    """A context plus factories for inboxes and outboxes; all are closed when the test ends."""
    ctx = zmq.Context()
    made: list = []

    def inbox(**kw: object) -> Inbox:
        made.append(Inbox(ctx, "tcp://127.0.0.1:0", **kw))
        return made[-1]

    def outbox(addr: str, **kw: object) -> Outbox:
        kw.setdefault("name", "a->b")
        made.append(Outbox(ctx, addr, **kw))
        return made[-1]

    try:
        yield ctx, inbox, outbox
    finally:
        for m in reversed(made):
            if isinstance(m, Outbox):
                m.close(drain=False, timeout=2)
            else:
                m.close()
        ctx.destroy(linger=0)


def _m(seq: int, nbytes: int = 16, **meta: object) -> Message:
    return Message(kind=Kind.ACT, src="a", owner=0, iter=1, mb=seq, seq=seq,
                   tensors={"x": torch.full((nbytes,), seq % 251, dtype=torch.uint8)},
                   meta=dict(meta))


def _run_in_thread(fn) -> threading.Thread:
    th = threading.Thread(target=fn, daemon=True)
    th.start()
    return th


def test_round_trip_in_order_with_counters_and_events(net) -> None:
    _, inbox, outbox = net
    ib = inbox()
    events: list[Event] = []
    ob = outbox(ib.address, on_event=events.append)
    wire = 0
    for i in range(200):
        msg = _m(i, 100 + i)
        wire += message_nbytes(encode(msg))
        ob.send(msg)
    got = [ib.recv(timeout=10) for _ in range(200)]
    assert [m.seq for m in got] == list(range(200))
    assert all(int(m.tensors["x"][0]) == m.seq % 251 for m in got)
    ob.flush(timeout=5)
    assert ob.messages_sent == 200 and ob.bytes_sent == wire and ob.pending == 0
    assert [e.mb for e in events] == list(range(200))
    e = events[0]
    assert (e.node, e.resource, e.action, e.owner, e.iter) == ("a", "a->b", ">b:ACT0", 0, 1)
    assert e.bytes == message_nbytes(encode(_m(0, 100)))
    assert abs(e.t0 - time.time()) < 30 and e.t0 <= e.t1


def test_link_events_of_messages_without_owner_or_micro_batch_and_untraced_ones(net) -> None:
    """-1 on the wire is None in the trace; `trace=False` sends without an event."""
    _, inbox, outbox = net
    ib = inbox()
    events: list[Event] = []
    ob = outbox(ib.address, name="owner0->aggregator", on_event=events.append)
    ob.send(Message(kind=Kind.PARAMS, src="owner0", owner=0, iter=3,
                    tensors={"w": torch.ones(4)}))
    ob.send(Message(kind=Kind.CONTROL, src="owner0", meta={"type": "hello"}), trace=False)
    ob.send(Message(kind=Kind.METRICS, src="owner0", iter=7, meta={"type": "loss"}))
    assert [ib.recv(timeout=5).kind for _ in range(3)] == ["PARAMS", "CONTROL", "METRICS"]
    ob.flush(timeout=5)
    assert [(e.node, e.resource, e.action, e.owner, e.iter, e.mb) for e in events] == [
        ("owner0", "owner0->aggregator", ">aggregator:PARAMS", 0, 3, None),
        ("owner0", "owner0->aggregator", ">aggregator:METRICS", None, 7, None),
    ]
    assert events[0].bytes > 16 > 0 and events[1].bytes > 0


def test_outbox_snapshots_and_reuses_buffers_safely(net) -> None:
    _, inbox, outbox = net
    ib = inbox()
    src = torch.zeros(256 * 1024, dtype=torch.uint8)
    slow = outbox(ib.address, rate_mbps=50.0, burst_bytes=0)  # 42 ms per message
    for i in range(3):
        src.fill_(i)
        slow.send(Message(kind="ACT", src="a", seq=i, tensors={"x": src}))
    src.fill_(99)  # while all three are still queued: must not change what is sent
    for i in range(3):
        m = ib.recv(timeout=10)
        assert m.seq == i and bool((m.tensors["x"] == i).all())
    fast = outbox(ib.address)  # unshaped: the staging buffers come back and are reused
    for i in range(40):
        src.fill_(i)
        fast.send(Message(kind="ACT", src="a", seq=i, tensors={"x": src}))
    for i in range(40):
        m = ib.recv(timeout=10)
        assert m.seq == i and bool((m.tensors["x"] == i).all()), i
    fast.flush(timeout=5)
    assert fast._staging.held > 0


def test_send_without_copy_hands_tensors_over(net) -> None:
    _, inbox, outbox = net
    ib = inbox()
    ob = outbox(ib.address, rate_mbps=100.0)
    x = torch.arange(100_000, dtype=torch.int64)
    ob.send(Message(kind="ACT", src="a", tensors={"x": x}), copy=False)
    assert torch.equal(ib.recv(timeout=5).tensors["x"], x)
    ob.flush(timeout=5)
    assert ob._staging.held == 0  # a caller's tensor is never recycled


def test_staging_pool_evicts_least_recently_used() -> None:
    pool = Staging(max_bytes=3 << 20)
    a, b = np.empty(1 << 20, dtype=np.uint8), np.empty(2 << 20, dtype=np.uint8)
    pool.give(a)
    pool.give(b)
    got = pool.take(1 << 20)
    assert got.base is a and pool.held == 2 << 20  # a view of the pooled array
    pool.give(a)
    pool.give(np.empty(1 << 20, dtype=np.uint8))  # over the cap: evicts b
    assert pool.held == 2 << 20 and pool.take(2 << 20).base is not b
    pool.give(np.empty(10, dtype=np.uint8))  # too small to keep
    assert pool.held == 2 << 20


def test_inbox_address_and_timeout(net) -> None:
    _, inbox, _ = net
    ib = inbox()
    assert ib.address.startswith("tcp://127.0.0.1:") and not ib.address.endswith(":0")
    t = time.monotonic()
    with pytest.raises(TimeoutError):
        ib.recv(timeout=0.2)
    assert 0.15 < time.monotonic() - t < 2.0


def test_inbox_drops_bad_messages_and_keeps_waiting(net) -> None:
    ctx, inbox, outbox = net
    ib = inbox(known_senders={"a"})
    raw = ctx.socket(zmq.PUSH)
    try:
        raw.connect(ib.address)
        raw.send_multipart([b"garbage", b"more"])
        raw.send_multipart(encode(Message(kind="ACT", src="intruder")))
        with pytest.raises(TimeoutError):
            ib.recv(timeout=0.5)
        assert ib.rejected == 2
        raw.send_multipart([b"\x00"])
        raw.send_multipart(encode(_m(5)), copy=False)
        assert ib.recv(timeout=5).seq == 5
        assert ib.rejected == 3 and ib.received == 1
    finally:
        raw.close(linger=0)


def test_inbox_drops_messages_of_another_run_once_it_knows_its_own(net) -> None:
    ctx, inbox, _ = net
    ib = inbox(known_senders={"a"})
    raw = ctx.socket(zmq.PUSH)
    try:
        raw.connect(ib.address)
        raw.send_multipart(encode(Message(kind="ACT", src="a", run="old", seq=1)))
        assert ib.recv(timeout=5).seq == 1  # before the run is known: taken
        ib.run = "r1"
        raw.send_multipart(encode(Message(kind="ACT", src="a", run="old", seq=2)))
        raw.send_multipart(encode(Message(kind="ACT", src="a", seq=3)))  # no run at all
        raw.send_multipart(encode(Message(kind="CONTROL", src="a", run="old", seq=4,
                                          meta={"type": "hello"})))
        raw.send_multipart(encode(Message(kind="CONTROL", src="a", seq=5,
                                          meta={"type": "hello"})))  # a node that joins
        raw.send_multipart(encode(Message(kind="ACT", src="a", run="r1", seq=6)))
        assert [ib.recv(timeout=5).seq for _ in range(2)] == [5, 6]
        assert ib.rejected == 3
    finally:
        raw.close(linger=0)


# --------------------------------------------------------------------------- the link clock


def test_clock_serializes_one_message_at_a_time() -> None:
    c = LinkClock(rate_mbps=8.0)  # 1 MB/s, no burst, no latency
    assert c.schedule(1000, enq=10.0, now=10.0) == (10.0, 10.001, 10.001)
    assert not c.ready(10.0005) and c.ready(10.001)
    t0, t1, _ = c.schedule(2000, enq=10.0002, now=10.001)  # queued behind the first
    assert (t0, t1) == pytest.approx((10.001, 10.003))
    t0, t1, _ = c.schedule(1000, enq=20.0, now=20.0)  # after an idle period
    assert (t0, t1) == pytest.approx((20.0, 20.001))


def test_clock_latency_is_pipelined() -> None:
    c = LinkClock(rate_mbps=8.0, latency_s=0.05)
    dues = [c.schedule(10_000, enq=0.0, now=0.0)[2] for _ in range(10)]
    assert dues == pytest.approx([0.01 * (i + 1) + 0.05 for i in range(10)])


def test_clock_burst() -> None:
    c = LinkClock(rate_mbps=8.0, burst_bytes=5000)
    assert c.schedule(3000, enq=0.0, now=0.0)[:2] == (0.0, 0.0)  # within the bucket
    t0, t1, _ = c.schedule(4000, enq=0.0, now=0.0)  # 2000 bytes left in it: pays 2000
    assert (t0, t1) == pytest.approx((0.0, 0.002))
    t0, t1, _ = c.schedule(1000, enq=0.0, now=0.002)  # empty bucket: pays it all
    assert (t0, t1) == pytest.approx((0.002, 0.003))
    t0, t1, _ = c.schedule(6000, enq=10.0, now=10.0)  # refilled, but only to 5000
    assert (t0, t1) == pytest.approx((10.0, 10.001))


def test_clock_ignores_late_wakeups_up_to_the_catchup_limit() -> None:
    c = LinkClock(rate_mbps=8.0, max_catchup_s=0.1)
    c.schedule(1000, enq=0.0, now=0.0)
    t0, _, _ = c.schedule(1000, enq=0.0, now=0.05)  # the thread woke 49 ms late
    assert t0 == pytest.approx(0.001)  # the rate is kept: starts when the link was free
    t0, _, _ = c.schedule(1000, enq=0.0, now=5.0)  # blocked for long: no huge burst
    assert t0 == pytest.approx(4.9)


def test_clock_unshaped() -> None:
    c = LinkClock(rate_mbps=None, burst_bytes=1, latency_s=0.02)
    assert c.ready(0.0) and c.schedule(10**9, enq=0.9, now=1.0) == (0.9, 0.9, 0.92)
    assert c.schedule(10, enq=0.0, now=1.0) == (0.75, 0.75, 0.77)  # at most 0.25 s late


# --------------------------------------------------------------------------- timed, loosely


def test_shaped_rate(net) -> None:
    _, inbox, outbox = net
    ib = inbox()
    events: list[Event] = []
    ob = outbox(ib.address, rate_mbps=40.0, burst_bytes=0, on_event=events.append)
    msgs = [_m(i, 50_000) for i in range(8)]  # 10 ms each at 40 Mbps
    t = time.monotonic()
    for m in msgs:
        ob.send(m)
    for _ in msgs:
        ib.recv(timeout=10)
    took = time.monotonic() - t
    ob.flush(timeout=5)
    expect = ob.bytes_sent * 8 / 40e6
    assert ob.busy_s == pytest.approx(expect, rel=1e-6)
    assert sum(e.t1 - e.t0 for e in events) == pytest.approx(expect, rel=1e-6)
    assert expect * 0.98 < took < expect + 1.0


def test_latency_is_pipelined(net) -> None:
    _, inbox, outbox = net
    ib = inbox()
    ob = outbox(ib.address, rate_mbps=80.0, latency_s=0.05, burst_bytes=0)
    msgs = [_m(i, 100_000) for i in range(10)]  # 10 ms each
    t = time.time()
    for m in msgs:
        ob.send(m)
    arrivals = []
    for _ in msgs:
        ib.recv(timeout=10)
        arrivals.append(time.time())
    assert arrivals[0] - t > 0.059  # serialization + latency
    assert 0.149 < arrivals[-1] - t < 0.45  # latency is paid once, not per message (0.6 s)


def test_latency_alone(net) -> None:
    _, inbox, outbox = net
    ib = inbox()
    ob = outbox(ib.address, latency_s=0.03)
    delays = []
    for i in range(3):
        ob.send(_m(i, t=time.time()))
        m = ib.recv(timeout=5)
        delays.append(time.time() - m.meta["t"])
    assert min(delays) >= 0.0295 and sorted(delays)[1] < 0.1


def test_back_pressure_on_full_queue(net) -> None:
    _, inbox, outbox = net
    ib = inbox()
    ob = outbox(ib.address, rate_mbps=0.5, burst_bytes=0, queue_max=2)
    for i in range(3):  # one on the link (about 0.17 s), two queued
        ob.send(_m(i, 10_000))
    done = threading.Event()
    th = _run_in_thread(lambda: (ob.send(_m(3, 10)), done.set()))
    assert not done.wait(0.05), "send() must block while the queue is full"
    assert done.wait(5), "send() must resume when the link frees a slot"
    th.join(5)
    assert [ib.recv(timeout=5).seq for _ in range(4)] == [0, 1, 2, 3]


def test_back_pressure_on_bytes_held_by_zeromq(net) -> None:
    ctx, _, outbox = net
    hold = socket.socket()  # owns a port without listening: connections are refused
    ib2 = th = None
    try:
        hold.bind(("127.0.0.1", 0))
        addr = f"tcp://127.0.0.1:{hold.getsockname()[1]}"
        ob = outbox(addr, max_inflight_bytes=1 << 20)
        ob.send(_m(0, 600_000))
        done = threading.Event()
        th = _run_in_thread(lambda: (ob.send(_m(1, 600_000)), done.set()))
        assert not done.wait(0.3), "send() must block while 1 MiB is held by ZeroMQ"
        hold.close()
        ib2 = Inbox(ctx, addr)  # the peer comes up: both are delivered, nothing lost
        assert ib2.recv(timeout=10).seq == 0
        assert done.wait(10)
        assert ib2.recv(timeout=10).seq == 1
    finally:
        hold.close()
        if ib2 is not None:
            ib2.close()
        if th is not None:
            ob.close(drain=False, timeout=1)  # unblocks a send() still waiting
            th.join(5)


def test_close_drains_or_drops(net) -> None:
    _, inbox, outbox = net
    ib = inbox()
    ob = outbox(ib.address, rate_mbps=8.0, burst_bytes=0)  # 10 ms per 10 kB
    for i in range(10):
        ob.send(_m(i, 10_000))
    ob.close(drain=True, timeout=5)
    assert ob.messages_sent == 10 and ob.dropped == 0
    assert [ib.recv(timeout=5).seq for _ in range(10)] == list(range(10))
    with pytest.raises(RuntimeError, match="closed"):
        ob.send(_m(99))

    slow = outbox(ib.address, rate_mbps=0.1, burst_bytes=0)  # 0.8 s per message
    for i in range(5):
        slow.send(_m(i, 10_000))
    t = time.monotonic()
    slow.close(drain=False)
    assert time.monotonic() - t < 1.0
    assert slow.messages_sent + slow.dropped == 5 and slow.dropped >= 4


def test_close_drain_timeout_drops_the_rest(net) -> None:
    _, inbox, outbox = net
    ib = inbox()
    ob = outbox(ib.address, rate_mbps=0.1, burst_bytes=0)
    for i in range(4):
        ob.send(_m(i, 2_000))  # 0.16 s each
    t = time.monotonic()
    ob.close(drain=True, timeout=0.4)
    assert time.monotonic() - t < 1.5
    assert 1 <= ob.messages_sent <= 3 and ob.messages_sent + ob.dropped == 4


def test_flush_times_out_on_a_slow_link(net) -> None:
    _, inbox, outbox = net
    ib = inbox()
    ob = outbox(ib.address, rate_mbps=0.1, burst_bytes=0)
    ob.send(_m(0, 5_000))
    with pytest.raises(TimeoutError):
        ob.flush(timeout=0.1)
    fast = outbox(ib.address)
    fast.send(_m(1))
    fast.flush(timeout=5)
    assert fast.pending == 0


def test_event_callback_errors_do_not_stop_the_link(net) -> None:
    _, inbox, outbox = net
    ib = inbox()

    def boom(ev: Event) -> None:
        raise RuntimeError("callback failure")

    ob = outbox(ib.address, on_event=boom)
    for i in range(3):
        ob.send(_m(i))
    assert [ib.recv(timeout=5).seq for _ in range(3)] == [0, 1, 2]


def test_invalid_arguments(net) -> None:
    _, inbox, outbox = net
    with pytest.raises(ValueError):
        outbox("tcp://127.0.0.1:1", rate_mbps=0)
    with pytest.raises(ValueError):
        outbox("tcp://127.0.0.1:1", latency_s=-1)


# --------------------------------------------------------------------------- two processes

N_EXCHANGE = 1000


def _payload(i: int) -> torch.Tensor:
    return torch.arange(64 + (i * 37) % 4000, dtype=torch.int32) + i


def _peer(addr_q, peer_q, result_q) -> None:
    """Child process: receives N messages from the parent and sends N back, both shaped."""
    ctx = zmq.Context()
    ib = Inbox(ctx, "tcp://127.0.0.1:0", known_senders={"parent"})
    ob = None
    try:
        addr_q.put(ib.address)
        ob = Outbox(ctx, peer_q.get(timeout=30), name="child->parent", rate_mbps=200.0,
                    latency_s=0.002)
        for i in range(N_EXCHANGE):
            ob.send(Message(kind="GRAD", src="child", seq=i, tensors={"g": _payload(i)}))
        seqs, bad = [], 0
        for _ in range(N_EXCHANGE):
            m = ib.recv(timeout=30)
            seqs.append(m.seq)
            bad += not torch.equal(m.tensors["a"], _payload(m.seq))
        ob.flush(timeout=30)
        result_q.put({"seqs": seqs, "bad": bad, "sent": ob.messages_sent})
    except BaseException as e:  # report to the parent instead of hanging it
        result_q.put({"error": repr(e)})
    finally:
        if ob is not None:
            ob.close(drain=True, timeout=10)
        ib.close()
        ctx.term()


@pytest.mark.timeout(120)
def test_two_processes_exchange_1000_messages_without_loss_or_reordering() -> None:
    sp = mp.get_context("spawn")
    addr_q, peer_q, result_q = sp.Queue(), sp.Queue(), sp.Queue()
    child = sp.Process(target=_peer, args=(addr_q, peer_q, result_q), daemon=True)
    ctx = zmq.Context()
    ib = Inbox(ctx, "tcp://127.0.0.1:0", known_senders={"child"})
    ob = None
    try:
        child.start()
        peer_q.put(ib.address)
        ob = Outbox(ctx, addr_q.get(timeout=60), name="parent->child", rate_mbps=200.0,
                    latency_s=0.002)
        for i in range(N_EXCHANGE):
            ob.send(Message(kind="ACT", src="parent", seq=i, tensors={"a": _payload(i)}))
        seqs, bad = [], 0
        for _ in range(N_EXCHANGE):
            m = ib.recv(timeout=30)
            seqs.append(m.seq)
            bad += not torch.equal(m.tensors["g"], _payload(m.seq))
        res = result_q.get(timeout=60)
        assert "error" not in res, res
        assert seqs == list(range(N_EXCHANGE)) and bad == 0
        assert res["seqs"] == list(range(N_EXCHANGE)) and res["bad"] == 0
        assert res["sent"] == N_EXCHANGE and ob.messages_sent == N_EXCHANGE
        assert ib.rejected == 0
        with pytest.raises(TimeoutError):  # and nothing extra
            ib.recv(timeout=0.1)
    finally:
        if ob is not None:
            ob.close(drain=False, timeout=2)
        ib.close()
        ctx.destroy(linger=0)
        child.join(20)
        if child.is_alive():
            child.terminate()
            child.join(5)
