"""Tests for `Outbox.send(copy=False)`: the same bytes without a copy, and the buffer's lifetime.

A peer that is not up yet holds a message inside ZeroMQ (or in a slow link's queue) for as long
as a test needs, so what happens between `send` and the moment ZeroMQ reads the memory shows.
"""

from __future__ import annotations

import contextlib
import gc
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
import zmq

from nodes.link import Inbox, Outbox
from nodes.wire import Message, encode, message_nbytes

pytestmark = pytest.mark.timeout(60)

MiB = 1 << 20


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    try:
        yield c
    finally:
        c.destroy(linger=0)


@contextlib.contextmanager
def _later_peer(ctx: zmq.Context) -> Iterator[tuple[str, Callable[[], Inbox]]]:
    """An address whose Inbox comes up only when `start()` is called (connections are refused
    till then, so what is sent stays in ZeroMQ's queue)."""
    hold = socket.socket()
    hold.bind(("127.0.0.1", 0))  # owns the port without listening
    addr = f"tcp://127.0.0.1:{hold.getsockname()[1]}"
    made: list[Inbox] = []

    def start() -> Inbox:
        hold.close()
        made.append(Inbox(ctx, addr))
        return made[-1]

    try:
        yield addr, start
    finally:
        hold.close()
        for ib in made:
            ib.close()


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Whether `cond` holds within `timeout` s (pyzmq lets go of sent buffers from its own
    thread, a little after libzmq is done with them)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        gc.collect()
        time.sleep(0.01)
    return True


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(256, 1024, generator=g),  # 1 MiB
        "g": torch.randn(64, 1024, generator=g, requires_grad=True),
        "b": torch.randn(1 << 16, generator=g).to(torch.bfloat16),
        "y": torch.randint(0, 10, (32,), generator=g),  # small: pyzmq copies it at send
        "m": torch.rand(7, 3, generator=g) > 0.5,
        "e": torch.empty(0, 4),
    }


@pytest.mark.parametrize("rate", [None, 400.0])  # direct, and through the sender thread
def test_zero_copy_delivers_the_same_bytes_as_the_copying_path(ctx, rate) -> None:
    ib = Inbox(ctx, "tcp://127.0.0.1:0")
    ob = Outbox(ctx, ib.address, name="a->b", rate_mbps=rate)
    try:
        tensors = _tensors()
        for seq, copy in enumerate([True, False, True, False]):
            ob.send(Message(kind="ACT", src="a", seq=seq, tensors=tensors), copy=copy)
        got = [ib.recv(timeout=10) for _ in range(4)]
        ob.flush(timeout=10)
        assert [m.seq for m in got] == [0, 1, 2, 3]
        for m in got:
            assert list(m.tensors) == list(tensors)
            for k, t in tensors.items():
                assert m.tensors[k].dtype == t.dtype and torch.equal(m.tensors[k], t.detach())
        wire = message_nbytes(encode(Message(kind="ACT", src="a", seq=0, tensors=tensors)))
        assert ob.bytes_sent == 4 * wire
        assert _wait(lambda: ob.inflight_bytes == 0)
    finally:
        ob.close(drain=False, timeout=2)
        ib.close()


@pytest.mark.parametrize("rate", [None, 400.0])
def test_copying_send_protects_the_caller_while_zeromq_holds_the_message(ctx, rate) -> None:
    with _later_peer(ctx) as (addr, start):
        ob = Outbox(ctx, addr, name="a->b", rate_mbps=rate)
        try:
            big, small = torch.zeros(MiB // 4), torch.zeros(16)
            ob.send(Message(kind="ACT", src="a", tensors={"x": big, "y": small}))
            big.fill_(7.0)  # the caller writes at once, before any byte has left
            small.fill_(7.0)
            m = start().recv(timeout=10)
            assert not m.tensors["x"].any() and not m.tensors["y"].any()
        finally:
            ob.close(drain=False, timeout=2)


def test_zero_copy_hands_zeromq_the_memory_itself(ctx) -> None:
    """No copy anywhere before ZeroMQ: a write after `send(copy=False)` (which the caller
    promises never to make) shows in what is sent; below pyzmq's copy threshold it does not."""
    with _later_peer(ctx) as (addr, start):
        ob = Outbox(ctx, addr, name="a->b")
        try:
            big = torch.zeros(MiB // 4)
            small = torch.zeros(16)
            assert small.nbytes < zmq.COPY_THRESHOLD <= big.nbytes
            ob.send(Message(kind="ACT", src="a", tensors={"x": big, "y": small}), copy=False)
            big.fill_(7.0)
            small.fill_(7.0)
            m = start().recv(timeout=10)
            assert bool((m.tensors["x"] == 7.0).all()) and not m.tensors["y"].any()
        finally:
            ob.close(drain=False, timeout=2)


@pytest.mark.parametrize("latency", [0.0, 0.5])  # held by ZeroMQ; first by the delay line
def test_zero_copy_keeps_the_memory_alive_until_zeromq_is_done(ctx, latency) -> None:
    """The caller may drop its tensor right after `send(copy=False)`: the Outbox, then
    pyzmq's Frame, hold the memory (and count it in flight) until ZeroMQ has sent it, and
    let go of it afterwards."""
    with _later_peer(ctx) as (addr, start):
        ob = Outbox(ctx, addr, name="a->b", latency_s=latency)
        try:
            arr = np.arange(MiB // 8, dtype=np.int64)  # 1 MiB the tensor does not own
            want = arr.copy()
            alive = weakref.ref(arr)
            x = torch.from_numpy(arr)
            del arr
            ob.send(Message(kind="ACT", src="a", tensors={"x": x}), copy=False)
            del x
            gc.collect()
            time.sleep(0.2)  # time for a wrongly early release to happen
            gc.collect()
            assert alive() is not None, "the memory was let go before ZeroMQ sent it"
            assert ob.inflight_bytes == MiB
            m = start().recv(timeout=10)
            assert np.array_equal(m.tensors["x"].numpy(), want)
            assert _wait(lambda: alive() is None), "the memory was never let go"
            assert _wait(lambda: ob.inflight_bytes == 0)
            assert ob._staging.held == 0  # a caller's memory is never pooled
        finally:
            ob.close(drain=False, timeout=2)


def test_memory_sent_again_while_zeromq_holds_it_counts_once(ctx) -> None:
    """`max_inflight_bytes` bounds the memory ZeroMQ holds: one tensor sent five times
    without a copy holds its MiB once, three tensors hold three, and a limit of 2 MiB lets
    the first tensor go again where a new one must wait."""
    with _later_peer(ctx) as (addr, start):
        ob = Outbox(ctx, addr, name="a->b", max_inflight_bytes=2 * MiB)
        try:
            x, y, z = (torch.full((MiB,), i, dtype=torch.uint8) for i in range(3))
            for i in range(5):
                ob.send(Message(kind="ACT", src="a", seq=i, tensors={"x": x}), copy=False)
            assert ob.inflight_bytes == MiB
            ob.send(Message(kind="ACT", src="a", seq=5, tensors={"x": y, "y": x}), copy=False)
            assert ob.inflight_bytes == 2 * MiB
            blocked = threading.Event()
            th = threading.Thread(target=lambda: (ob.send(Message(
                kind="ACT", src="a", seq=6, tensors={"x": z}), copy=False), blocked.set()))
            th.start()
            assert not blocked.wait(0.3), "a third MiB must wait while 2 MiB are held"
            ob.send(Message(kind="ACT", src="a", seq=7, tensors={"x": x}), copy=False)
            inbox = start()
            assert blocked.wait(10), "the third MiB goes once ZeroMQ let go of the others"
            th.join(5)
            seqs = [inbox.recv(timeout=10).seq for _ in range(8)]
            assert sorted(seqs) == list(range(8))
            assert _wait(lambda: ob.inflight_bytes == 0)
        finally:
            ob.close(drain=False, timeout=2)


def test_a_released_buffer_is_noted_without_the_senders_lock(ctx) -> None:
    """ZeroMQ's I/O thread lets go of sent buffers: their callback must not wait for a
    sender holding the Outbox's lock (it would stall the thread that moves the bytes)."""
    ob = Outbox(ctx, "tcp://127.0.0.1:9", name="a->b")
    try:
        arr = np.zeros(MiB, dtype=np.uint8)
        ob.send(Message(kind="ACT", src="a", tensors={"x": torch.from_numpy(arr)}), copy=False)
        (ref, _, _), = ob._flight._held.values()
        noted = threading.Event()
        with ob._cond:  # a sender holds the lock
            th = threading.Thread(target=lambda: (ref.__callback__(ref), noted.set()))
            th.start()
            assert noted.wait(2), "the release waited for the sender's lock"
        th.join(5)
    finally:
        ob.close(drain=False, timeout=1)
