"""Links: a PULL Inbox per node, and a PUSH Outbox per neighbour with emulated rate and latency.

An Outbox emulates one directed network link. Its sender thread transmits one message at a
time at ``rate_mbps`` (serialization time = bytes * 8 / rate, paced by a token bucket of
``burst_bytes``), and each message is handed to ZeroMQ ``latency_s`` after its transmission
ends. Latency is propagation: it delays messages but does not reduce throughput, so several
messages may be in flight. Pacing uses a virtual clock (the time the link becomes free), so the
thread's wake-up jitter delays a delivery but never accumulates into a lower rate. Rates are
in Mbps = 10**6 bit/s. An Outbox without rate and latency needs no emulation and sends from the
caller's thread: ZeroMQ's own I/O thread already makes the send asynchronous.

Nothing is dropped in normal operation: ``send`` blocks (back-pressure) while ``queue_max``
messages wait for the link or ``max_inflight_bytes`` of tensor data have not yet been released
by ZeroMQ (tracked with weakref finalizers on the snapshot buffers, so memory stays bounded even
when the peer is slow), the PUSH socket blocks rather than drops at its high-water mark, and
``close(drain=True)`` delivers what is queued and lingers until ZeroMQ has sent it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import weakref
from collections.abc import Callable, Container
from dataclasses import dataclass

import numpy as np
import zmq

from nodes.shaping import MAX_CATCHUP_S, LinkClock, LinkEvent  # noqa: F401 (re-exported)
from nodes.wire import DEFAULT_MAX_BYTES, Message, WireError, decode, encode, message_nbytes

__all__ = ["Inbox", "LinkClock", "LinkEvent", "Outbox"]

log = logging.getLogger(__name__)

HWM = 100_000  # messages per socket; the Outbox queue bounds memory long before this
_POLL_MS = 100  # how often a blocked socket call re-checks for close()
STAGING_BYTES = 256 << 20  # idle snapshot buffers an Outbox keeps for reuse
STAGING_MIN_BYTES = 64 << 10  # smaller buffers are cheap to allocate (and copied by pyzmq)


class _Staging:
    """Snapshot buffers that ZeroMQ has let go of, kept for the next tensor of the same size.

    Reuse avoids faulting in fresh pages for every message: glibc serves allocations of
    32 MiB and more with a new mmap each time, which costs more than the copy itself.
    ``take`` hands out a view of a pooled array; the Outbox gives the array (the view's
    ``base``) back once ZeroMQ has released the view.
    """

    def __init__(self, max_bytes: int = STAGING_BYTES) -> None:
        self.max_bytes = max_bytes
        self.held = 0
        self._free: collections.OrderedDict[int, list[np.ndarray]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        with self._lock:
            bufs = self._free.get(nbytes)
            if bufs:
                self._free.move_to_end(nbytes)
                self.held -= nbytes
                return bufs.pop()[:]
        return np.empty(nbytes, dtype=np.uint8)[:]

    def give(self, buf: np.ndarray) -> None:
        n = buf.nbytes
        if n < STAGING_MIN_BYTES or n > self.max_bytes:
            return
        with self._lock:
            while self.held + n > self.max_bytes:  # evict the least recently used sizes
                size, bufs = next(iter(self._free.items()))
                bufs.pop()
                self.held -= size
                if not bufs:
                    del self._free[size]
            self._free.setdefault(n, []).append(buf)
            self._free.move_to_end(n)
            self.held += n


def _tcp_addr(addr: str) -> str:
    """Accept ``tcp://host:0`` as ZeroMQ's ``tcp://host:*`` (any free port)."""
    return addr[:-2] + ":*" if addr.startswith("tcp://") and addr.endswith(":0") else addr


class Inbox:
    """A node's single PULL socket; ``recv`` returns the next well-formed Message."""

    def __init__(
        self,
        ctx: zmq.Context,
        bind_addr: str,
        *,
        known_senders: Container[str] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.known_senders = known_senders
        self.max_bytes = max_bytes
        self.received = 0
        self.rejected = 0
        self._sock = ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.RCVHWM, HWM)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)  # per frame; drops oversize peers
        try:
            self._sock.bind(_tcp_addr(bind_addr))
        except zmq.ZMQError:
            self._sock.close(linger=0)
            raise
        self.address: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def recv(self, timeout: float) -> Message:
        """Wait at most ``timeout`` seconds for a valid message, else raise TimeoutError.

        Malformed or unauthorized messages are dropped, counted in ``rejected`` and logged.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:  # a message is often waiting already: skip the poll then
                frames = self._sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                left_ms = max(0, int((deadline - time.monotonic()) * 1000 + 0.999))
                if not self._sock.poll(left_ms, zmq.POLLIN) and time.monotonic() >= deadline:
                    raise TimeoutError(f"no message on {self.address} within {timeout} s") from None
                continue
            try:
                msg = decode(frames, known_senders=self.known_senders, max_bytes=self.max_bytes)
            except WireError as e:
                self.rejected += 1
                log.warning("inbox %s: dropped a message: %s", self.address, e)
                continue
            self.received += 1
            return msg

    def close(self) -> None:
        """Close the socket; pending messages are discarded."""
        self._sock.close(linger=0)

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Item:
    frames: list
    nbytes: int
    kind: str
    owner: int
    iter: int
    mb: int
    enq: float  # monotonic time of send()
    t0: float = 0.0
    t1: float = 0.0
    due: float = 0.0  # monotonic time of delivery to ZeroMQ


class Outbox:
    """A PUSH socket to one neighbour, sending from its own thread through an emulated link.

    ``rate_mbps`` is in 10**6 bit/s (None: unshaped). ``on_event`` is called with a LinkEvent
    after each message has been handed to ZeroMQ, from the sender thread (or from the caller's
    thread on an unshaped, zero-latency link); keep it short and thread-safe. Counters:
    ``bytes_sent`` (header + frames), ``messages_sent``, ``busy_s`` (serialization time),
    ``dropped`` (only by ``close``).
    """

    def __init__(
        self,
        ctx: zmq.Context,
        connect_addr: str,
        *,
        name: str,
        rate_mbps: float | None = None,
        latency_s: float = 0.0,
        burst_bytes: int = 64 * 1024,
        queue_max: int = 1024,
        on_event: Callable[[LinkEvent], None] | None = None,
        max_inflight_bytes: int = 512 << 20,
    ) -> None:
        if rate_mbps is not None and not rate_mbps > 0:
            raise ValueError(f"rate_mbps must be > 0 or None, got {rate_mbps}")
        if not latency_s >= 0 or burst_bytes < 0 or queue_max < 1:
            raise ValueError("latency_s and burst_bytes must be >= 0, queue_max >= 1")
        self.name = name
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
        self._staging = _Staging()
        self._direct = rate_mbps is None and self.latency_s == 0
        self._send_lock = threading.Lock()  # the socket, in direct mode
        self._wall = time.time() - time.monotonic()
        self._queue: collections.deque[_Item] = collections.deque()
        self._unsent = 0  # accepted by send() and neither delivered nor dropped
        self._inflight = 0  # tensor bytes accepted by send() and not yet released by ZeroMQ
        self._cond = threading.Condition()
        self._closing = False
        self._abort = False
        self._done = False
        self._closed = False
        self._error: BaseException | None = None
        self._sock = ctx.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, HWM)
        self._sock.setsockopt(zmq.LINGER, -1)  # set for real in close()
        self._sock.connect(connect_addr)
        self._thread: threading.Thread | None = None
        if not self._direct:  # a direct Outbox sends from the caller's thread
            self._thread = threading.Thread(target=self._run, name=f"outbox-{name}", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ caller side

    def send(self, msg: Message, *, copy: bool = True) -> None:
        """Snapshot ``msg`` into frames and queue it; blocks only while the queue is full.

        ``copy=False`` hands contiguous CPU tensors over without the snapshot (one memcpy
        less): only for tensors that nobody modifies afterwards, ever.
        Raises WireError for a message that cannot be encoded, RuntimeError once closed.
        """
        frames = encode(msg, copy=copy, alloc=self._staging.take)
        item = _Item(frames, message_nbytes(frames), str(msg.kind), msg.owner, msg.iter,
                     msg.mb, 0.0)
        # pyzmq copies smaller frames at once; only zero-copy frames are held by ZeroMQ
        big = [f for f in frames[1:]
               if isinstance(f, memoryview) and f.nbytes >= zmq.COPY_THRESHOLD]
        size = sum(f.nbytes for f in big)
        with self._cond:
            while not (self._closing or self._done) and (
                len(self._queue) >= self.queue_max
                or (self._inflight and self._inflight + size > self.max_inflight_bytes)
            ):
                self._cond.wait()
            if self._closing or self._done:
                raise RuntimeError(f"outbox {self.name} is closed") from self._error
            self._inflight += size
            for f in big:  # released when ZeroMQ (or a drop) lets go of the snapshot
                buf = f.obj.base if copy else None  # never pool a caller's tensor
                weakref.finalize(f.obj, self._release, f.nbytes, buf).atexit = False
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

    def _release(self, nbytes: int, buf: np.ndarray | None) -> None:
        if buf is not None:
            self._staging.give(buf)
        with self._cond:
            self._inflight -= nbytes
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Messages accepted by ``send`` and not yet handed to ZeroMQ."""
        return self._unsent

    def flush(self, timeout: float) -> None:
        """Wait until every queued message has been handed to ZeroMQ, else TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._unsent == 0 or self._done, timeout):
                raise TimeoutError(f"outbox {self.name}: {self._unsent} messages unsent")
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
        if self.on_event is not None:
            ev = LinkEvent(self.name, item.kind, item.owner, item.iter, item.mb,
                           item.t0 + self._wall, item.t1 + self._wall, item.nbytes)
            try:
                self.on_event(ev)
            except Exception:
                log.exception("outbox %s: on_event failed", self.name)
        with self._cond:
            self._unsent -= 1
            if self._unsent == 0:
                self._cond.notify_all()
        return True

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
