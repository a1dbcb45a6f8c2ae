"""Links: a PUSH Outbox per neighbour with emulated rate and latency, tracing every message.

(A node's PULL side is `nodes.inbox.Inbox`, re-exported here.) An Outbox emulates one
directed network link. Its sender thread transmits one message at a time at ``rate_mbps``
(serialization time = bytes * 8 / rate, paced by a token bucket of ``burst_bytes``), and
each message is handed to ZeroMQ ``latency_s`` after its transmission ends. Latency is
propagation: it delays messages but does not reduce throughput, so several messages may be
in flight. Pacing uses a virtual clock (the time the link becomes free), so the thread's
wake-up jitter delays a delivery but never accumulates into a lower rate. Rates are in
Mbps = 10**6 bit/s. An Outbox without rate and latency needs no emulation and sends from
the caller's thread: ZeroMQ's own I/O thread already makes the send asynchronous.

Nothing is dropped in normal operation: ``send`` blocks (back-pressure) while ``queue_max``
messages wait for the link or ``max_inflight_bytes`` of tensor data have not yet been released
by ZeroMQ (`nodes.flight`: memory stays bounded even when the peer is slow), the PUSH
socket blocks rather than drops at its high-water mark, and ``close(drain=True)`` delivers
what is queued and lingers until ZeroMQ has sent it.

Every message sent with ``trace=True`` becomes one trace `Event` of the link once ZeroMQ has
it: node = the sender, resource = the link's name (``src->dst``), action = the printed SEND
(``>server:ACT3``, ``>aggregator:PARAMS``), owner, iter and mb from the header (None where
the header says -1), bytes = header + frames.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zmq

from mpsl.actions import Action, Msg
from mpsl.trace import Event
from nodes.flight import Flight, held_by_zeromq, memory_of
from nodes.inbox import HWM, Inbox
from nodes.shaping import MAX_CATCHUP_S, LinkClock
from nodes.staging import Staging
from nodes.wire import Message, encode

if TYPE_CHECKING:
    from nodes.security import CurveClient

__all__ = ["MAX_CATCHUP_S", "Inbox", "LinkClock", "Outbox", "Staging"]

log = logging.getLogger(__name__)

_POLL_MS = 100  # how often a blocked socket call re-checks for close()
_REAP_S = 0.001  # how often a send() blocked on bytes in flight looks for released buffers


@dataclass
class _Item:
    frames: list[bytes | memoryview]
    nbytes: int
    trace: tuple[str, int | None, int | None, int | None] | None  # action, owner, iter, mb
    enq: float  # monotonic time of send()
    t0: float = 0.0
    t1: float = 0.0
    due: float = 0.0  # monotonic time of delivery to ZeroMQ


class Outbox:
    """A PUSH socket to one neighbour, sending from its own thread through an emulated link.

    ``name`` is the link's name, ``src->dst`` (`mpsl.names.link_name`): its events name
    ``src`` as their node and ``dst`` as the destination of their SEND action (a name
    without ``->`` is both). ``rate_mbps`` is in 10**6 bit/s (None: unshaped). ``on_event``
    is called with the trace `Event` of each traced message once it is handed to ZeroMQ,
    from the sender thread (or from the caller's thread on an unshaped, zero-latency link);
    keep it short and thread-safe. Counters:
    ``bytes_sent`` (header + frames), ``messages_sent``, ``busy_s`` (serialization time),
    ``dropped`` (only by ``close``). ``rate_at`` (wall time -> Mbps) makes the rate follow a
    schedule: each message goes at the rate in force when its transmission is scheduled, and
    each change is kept in ``rate_changes``.
    """

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        connect_addr: str,
        *,
        name: str,
        rate_mbps: float | None = None,
        latency_s: float = 0.0,
        burst_bytes: int = 64 * 1024,
        queue_max: int = 1024,
        on_event: Callable[[Event], None] | None = None,
        max_inflight_bytes: int = 512 << 20,
        curve: CurveClient | None = None,
        rate_at: Callable[[float], float | None] | None = None,
    ) -> None:
        if rate_mbps is not None and not rate_mbps > 0:
            raise ValueError(f"rate_mbps must be > 0 or None, got {rate_mbps}")
        if not latency_s >= 0 or burst_bytes < 0 or queue_max < 1:
            raise ValueError("latency_s and burst_bytes must be >= 0, queue_max >= 1")
        self.name = name
        src, arrow, dst = name.partition("->")
        self.src, self.dst = (src, dst) if arrow else (name, name)
        self.address = connect_addr
        self.rate_mbps = rate_mbps
        self.latency_s = float(latency_s)
        self.burst_bytes = int(burst_bytes)
        self.queue_max = int(queue_max)
        self.max_inflight_bytes = int(max_inflight_bytes)
        self.on_event = on_event
        self.bytes_sent = 0
        self.messages_sent = 0
        self.busy_s = 0.0
        self.dropped = 0
        self.clock = LinkClock(rate_mbps, burst_bytes, latency_s)
        self.rate_at = rate_at  # the rate in force at a wall time (mpsl.bandwidth), if it varies
        self.rate_changes: list[tuple[float, float | None]] = []  # (wall time, new rate)
        self._staging = Staging()
        self._actions: dict[tuple[str, int | None], str] = {}  # printed SEND actions
        self._direct = rate_mbps is None and self.latency_s == 0 and rate_at is None
        self._send_lock = threading.Lock()  # the socket, in direct mode
        self._wall = time.time() - time.monotonic()
        self._queue: collections.deque[_Item] = collections.deque()
        self._unsent = 0  # accepted by send() and neither delivered nor dropped
        self._flight = Flight(self._staging)  # memory ZeroMQ holds (under `_cond`)
        self._cond = threading.Condition()
        self._closing = False
        self._abort = False
        self._done = False
        self._closed = False
        self._error: BaseException | None = None
        self._sock = ctx.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, HWM)
        self._sock.setsockopt(zmq.LINGER, -1)  # set for real in close()
        if curve is not None:  # CURVE client: encrypted, and authenticated by the peer's ZAP
            curve.apply(self._sock)
        self._sock.connect(connect_addr)
        self._thread: threading.Thread | None = None
        if not self._direct:  # a direct Outbox sends from the caller's thread
            self._thread = threading.Thread(target=self._run, name=f"outbox-{name}", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ caller side

    def send(self, msg: Message, *, copy: bool = True, trace: bool = True) -> None:
        """Snapshot ``msg`` into frames and queue it; blocks only while the queue is full.

        ``copy=False`` hands contiguous CPU tensors over without any copy: their memory goes
        to ZeroMQ as it is, read by its I/O thread after this returns. Only for tensors that
        nobody, through any view, writes again; the caller may drop them at once (the Outbox,
        then ZeroMQ, keep their memory alive until it is sent). ``trace=False``: no event for
        this message (run control outside training).
        Raises WireError for a message that cannot be encoded, RuntimeError once closed.
        """
        flight = self._flight
        if flight.released:  # staging arrays ZeroMQ let go of: back in the pool for encode
            with self._cond:
                flight.reap()
        frames = encode(msg, copy=copy, alloc=self._staging.take)
        big = held_by_zeromq(frames)
        memory = [memory_of(f) for f in big]
        item = _Item(frames, len(frames[0]) + sum(f.nbytes if isinstance(f, memoryview)
                                                  else len(f) for f in frames[1:]),
                     self._trace(msg) if trace and self.on_event is not None else None, 0.0)
        limit = self.max_inflight_bytes
        with self._cond:
            flight.reap()
            while not (self._closing or self._done) and (
                len(self._queue) >= self.queue_max or flight.over(memory, limit)
            ):
                # bytes come back without a notification (`nodes.flight`): look again shortly
                self._cond.wait(_REAP_S if flight.over(memory, limit) else None)
                flight.reap()
            if self._closing or self._done:
                raise RuntimeError(f"outbox {self.name} is closed") from self._error
            # Lifetime: the item holds the frames until `_deliver`, then pyzmq's zero-copy
            # Frame holds their buffers (and so the tensors' memory) until libzmq has sent
            # them; only then do the buffers die and their weakrefs release the bytes.
            for f, mem in zip(big, memory):
                flight.hold(f, mem, pooled=copy)  # never pool a caller's tensor
            item.enq = time.monotonic()
            self._unsent += 1
            if not self._direct:
                self._queue.append(item)
                self._cond.notify_all()
                return
        # No emulation: ZeroMQ's I/O thread already sends asynchronously, so hand the message
        # over right here and spare a thread switch per message.
        item.t0 = item.t1 = item.due = item.enq
        with self._send_lock:
            delivered = not self._sock.closed and self._deliver(item)
        if not delivered:
            with self._cond:
                self._unsent -= 1
                self.dropped += 1
                self._cond.notify_all()
            raise RuntimeError(f"outbox {self.name} closed while sending")

    def _trace(self, msg: Message) -> tuple[str, int | None, int | None, int | None]:
        """What the message's event records: its SEND action, owner, iter and mb."""
        mb = None if msg.mb == -1 else msg.mb
        action = self._actions.get((msg.kind, mb))
        if action is None:  # printed once per kind and micro-batch: this is per message
            action = str(Action.send(Msg(msg.kind), self.dst, mb))
            if len(self._actions) < 4096:
                self._actions[(msg.kind, mb)] = action
        return (action, None if msg.owner == -1 else msg.owner,
                None if msg.iter == -1 else msg.iter, mb)

    @property
    def inflight_bytes(self) -> int:
        """Bytes of memory ZeroMQ still holds for frames sent here (`nodes.flight`)."""
        with self._cond:
            self._flight.reap()
            return self._flight.bytes

    @property
    def pending(self) -> int:
        """Messages accepted by ``send`` and not yet handed to ZeroMQ."""
        return self._unsent

    def flush(self, timeout: float) -> None:
        """Wait until every queued message has been handed to ZeroMQ, else TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._unsent == 0 or self._done, timeout):
                raise TimeoutError(f"outbox {self.name}: {self._unsent} messages unsent")
            self._flight.reap()  # what ZeroMQ let go of meanwhile: staging arrays back
            if self._unsent:
                err = RuntimeError(f"outbox {self.name} stopped with unsent messages")
                raise err from self._error

    def close(self, drain: bool = True, timeout: float = 10.0) -> None:
        """Stop the sender thread: deliver what is queued first (``drain``) or drop it.

        With ``drain``, waits up to ``timeout`` s for delivery, then drops the rest with a
        warning, and lets ZeroMQ linger for the remaining time to push bytes to the peer.
        """
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            if not drain:
                self._abort = True
            self._cond.notify_all()
        grace = 2 * _POLL_MS / 1000 + 1  # a blocked send notices the abort within this
        if self._thread is None:  # direct: wait for a send() in progress in another thread
            owned = self._send_lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
            if not owned:
                self._abort = True
                owned = self._send_lock.acquire(timeout=grace)
        else:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                with self._cond:
                    self._abort = True
                    self._cond.notify_all()
                self._thread.join(grace)
            owned = not self._thread.is_alive()  # the socket belongs to the thread till then
        if self.dropped:
            log.warning("outbox %s: closed with %d messages dropped", self.name, self.dropped)
        linger = int(max(0.0, deadline - time.monotonic()) * 1000) if drain else 0
        if owned:
            self._sock.close(linger=linger)
            if self._thread is None:
                self._send_lock.release()
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ sender thread

    def _deliver(self, item: _Item) -> bool:
        """Hand ``item`` to ZeroMQ without losing it at the HWM; False if aborted meanwhile."""
        while True:
            try:
                self._sock.send_multipart(item.frames, flags=zmq.NOBLOCK, copy=False)
                break
            except zmq.Again:
                if self._abort:
                    return False
                self._sock.poll(_POLL_MS, zmq.POLLOUT)
        item.frames = []  # ZeroMQ holds the buffers now; let them go when it is done
        self.bytes_sent += item.nbytes
        self.messages_sent += 1
        self.busy_s += item.t1 - item.t0
        if self.on_event is not None and item.trace is not None:
            action, owner, it, mb = item.trace
            ev = Event(self.src, self.name, action, owner, it, mb, item.t0 + self._wall,
                       item.t1 + self._wall, item.nbytes)
            try:
                self.on_event(ev)
            except Exception:
                log.exception("outbox %s: on_event failed", self.name)
        with self._cond:
            self._unsent -= 1
            if self._unsent == 0:
                self._cond.notify_all()
        return True

    def _follow_rate(self) -> None:
        """Take the rate in force now (a bandwidth schedule): the next message goes at it."""
        assert self.rate_at is not None
        wall = time.time()
        rate = self.rate_at(wall)
        if rate != self.rate_mbps:
            self.rate_mbps = rate
            self.clock.set_rate(rate)
            if len(self.rate_changes) < 10_000:
                self.rate_changes.append((wall, rate))

    def _run(self) -> None:
        in_flight: collections.deque[_Item] = collections.deque()  # the delay line, in order
        try:
            while True:
                now = time.monotonic()
                while in_flight and in_flight[0].due <= now and not self._abort:
                    if not self._deliver(in_flight.popleft()):
                        break
                    now = time.monotonic()
                with self._cond:
                    if self._abort:
                        break
                    ready = self.clock.ready(now)
                    if not (ready and self._queue):
                        if self._closing and not self._queue and not in_flight:
                            break
                        waits = [in_flight[0].due - now] if in_flight else []
                        if self._queue:
                            waits.append(self.clock.free_at - now)
                        self._cond.wait(max(0.0, min(waits)) if waits else None)
                        continue
                    item = self._queue.popleft()
                    self._cond.notify_all()  # a slot is free for a blocked send()
                if self.rate_at is not None:
                    self._follow_rate()
                item.t0, item.t1, item.due = self.clock.schedule(item.nbytes, item.enq, now)
                if item.due <= now and not in_flight:
                    self._deliver(item)
                else:
                    in_flight.append(item)
        except BaseException as e:  # report, never die silently
            self._error = e
            log.exception("outbox %s: sender thread failed", self.name)
        finally:
            with self._cond:
                self.dropped += self._unsent  # queued, in the delay line, or mid-delivery
                self._unsent = 0
                self._queue.clear()
                self._done = True
                self._cond.notify_all()
