"""Tests of a link whose rate follows a bandwidth schedule (nodes.link, nodes.shaping)."""

from __future__ import annotations

import time

import pytest
import torch
import zmq

from mpsl.trace import Event
from nodes.link import Inbox, LinkClock, Outbox
from nodes.wire import Kind, Message

pytestmark = pytest.mark.timeout(30)


def test_clock_takes_a_new_rate_for_the_next_message() -> None:
    clock = LinkClock(8.0)  # 1 MB/s
    assert clock.schedule(1000, 0.0, 0.0) == (0.0, 0.001, 0.001)
    clock.set_rate(80.0)  # 10 MB/s: the next message takes a tenth of the time
    t0, t1, _ = clock.schedule(1000, 0.0, 0.0)
    assert (t0, t1) == pytest.approx((0.001, 0.0011))
    clock.set_rate(None)  # unshaped
    assert clock.schedule(1000, 0.5, 0.5) == (0.5, 0.5, 0.5)


def test_outbox_switches_rate_while_it_runs() -> None:
    ctx = zmq.Context()
    inbox = Inbox(ctx, "tcp://127.0.0.1:0")
    events: list[Event] = []
    switch = time.time() + 0.3
    box = Outbox(ctx, inbox.address, name="a->b", rate_mbps=None, on_event=events.append,
                 burst_bytes=0,
                 rate_at=lambda wall: 2.0 if wall < switch else 20.0)
    try:
        assert box.rate_at is not None and box._thread is not None  # shaped: its own thread
        payload = torch.zeros(10_000, dtype=torch.uint8)  # 80 ms at 2 Mbps, 8 ms at 20
        for i in range(12):
            box.send(Message(kind=Kind.ACT, src="a", owner=0, iter=0, mb=i, seq=i,
                             tensors={"x": payload}))
        box.flush(10)
        for _ in range(12):
            inbox.recv(timeout=5)
    finally:
        box.close(drain=False, timeout=2)
        inbox.close()
        ctx.destroy(linger=0)
    rates = [e.bytes * 8 / (e.t1 - e.t0) / 1e6 for e in events]
    slow = [r for e, r in zip(events, rates) if e.t0 < switch - 0.01]
    fast = [r for e, r in zip(events, rates) if e.t0 > switch + 0.01]
    assert slow and fast and len(slow) + len(fast) >= 11
    assert all(r == pytest.approx(2.0, rel=1e-3) for r in slow)
    assert all(r == pytest.approx(20.0, rel=1e-3) for r in fast)
    assert [r for _, r in box.rate_changes] == [2.0, 20.0]
