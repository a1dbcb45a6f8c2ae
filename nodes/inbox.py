"""A node's inbox: one PULL socket that hands out well-formed messages and drops the rest."""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Container
from typing import TYPE_CHECKING

import zmq

from nodes.wire import DEFAULT_MAX_BYTES, Message, WireError, decode

if TYPE_CHECKING:
    from nodes.security import CurveServer

log = logging.getLogger(__name__)

HWM = 100_000  # messages per socket; the Outbox queue bounds memory long before this
LOG_EVERY_S = 1.0  # a flood of refusals is logged once a second per reason
FOREIGN_RUNS = 64  # other runs whose first message is logged whenever it comes


def tcp_addr(addr: str) -> str:
    """Accept ``tcp://host:0`` as ZeroMQ's ``tcp://host:*`` (any free port)."""
    return addr[:-2] + ":*" if addr.startswith("tcp://") and addr.endswith(":0") else addr


# why the inbox refused a message, by the first phrase its WireError holds (a bounded set)
_WIRE_REASONS = (("not msgpack", "not msgpack"), ("unknown sender", "unknown sender"),
                 ("another run", "another run"),
                 ("cap", "oversize"), ("longer than", "oversize"), ("more than", "oversize"),
                 ("deeper than", "oversize"), ("dims >", "oversize"),
                 ("dtype", "dtype not allowed"), ("frame has", "frame length"),
                 ("frames", "frame count"))


def wire_reason(err: Exception) -> str:
    """The reason counted for a message the inbox refused: a phrase of `_WIRE_REASONS`,
    `sender is not its key` for CURVE's refusals, else `malformed header`."""
    text = str(err)
    for phrase, reason in _WIRE_REASONS:
        if phrase in text:
            return reason
    return "malformed header"


def _hello(msg: Message) -> bool:
    return msg.run == "" and msg.kind == "CONTROL" and msg.meta.get("type") == "hello"


class Inbox:
    """A node's single PULL socket; ``recv`` returns the next well-formed Message."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        bind_addr: str,
        *,
        known_senders: Container[str] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        curve: CurveServer | None = None,
    ) -> None:
        self.known_senders = known_senders
        self.curve = curve  # CURVE server: every message's src must be its connection's key
        self.max_bytes = max_bytes
        self.received = 0
        self.rejected = 0
        self.reasons: collections.Counter[str] = collections.Counter()  # of `rejected`
        # once the run is known, messages of any other run are dropped (a node's hello, which
        # precedes its knowing the run, excepted)
        self.run: str | None = None
        self._logged: dict[str, float] = {}  # reason -> when last logged (monotonic)
        self._foreign: set[str] = set()  # other runs whose first message was logged
        self._sock = ctx.socket(zmq.PULL)
        self._rcvtimeo_ms = -1  # the socket's RCVTIMEO (ZeroMQ's default: none)
        self._sock.setsockopt(zmq.RCVHWM, HWM)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)  # per frame; drops oversize peers
        try:
            if curve is not None:
                curve.apply(self._sock)
            self._sock.bind(tcp_addr(bind_addr))
        except zmq.ZMQError:
            self.close()
            raise
        self.address: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def recv(self, timeout: float) -> Message:
        """Wait at most ``timeout`` seconds for a valid message, else raise TimeoutError.

        Malformed or unauthorized messages are dropped, counted in ``rejected`` and logged.
        """
        deadline = time.monotonic() + timeout
        while True:
            # one blocking receive bounded by the socket's timeout: a try without blocking and
            # then a poll cost a raised zmq.Again and a second wait for every message that
            # had not arrived yet
            left_ms = max(0, int((deadline - time.monotonic()) * 1000 + 0.999))
            if left_ms != self._rcvtimeo_ms:  # a caller's timeout mostly repeats: set it once
                self._sock.setsockopt(zmq.RCVTIMEO, left_ms)
                self._rcvtimeo_ms = left_ms
            try:
                frames = self._sock.recv_multipart(copy=False)
            except zmq.Again:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no message on {self.address} within {timeout} s") from None
                continue
            reason, foreign = "", ""
            try:
                msg = decode(frames, known_senders=self.known_senders, max_bytes=self.max_bytes)
                why = None if self.curve is None else self.curve.check_sender(frames[0], msg.src)
                reason = "sender is not its key"
                if why is None and self.run is not None and msg.run != self.run \
                        and not _hello(msg):
                    why, reason = f"{msg.kind} from {msg.src} of another run ({msg.run!r})", ""
                    foreign = msg.run
                if why is not None:
                    raise WireError(why)
            except WireError as e:
                self.rejected += 1
                reason = reason or wire_reason(e)
                self.reasons[reason] += 1
                self._log_drop(reason, foreign, e)
                continue
            self.received += 1
            return msg

    def _log_drop(self, reason: str, foreign: str, err: WireError) -> None:
        """Log a refusal at most once a second per reason, but the first message of each of
        the first FOREIGN_RUNS other runs (a stale node's, or a rollback's old wire id) at
        once; all of them are counted."""
        now = time.monotonic()
        first = foreign and foreign not in self._foreign and len(self._foreign) < FOREIGN_RUNS
        if first:
            self._foreign.add(foreign)
        elif now - self._logged.get(reason, -LOG_EVERY_S) < LOG_EVERY_S:
            return
        self._logged[reason] = now
        log.warning("inbox %s: dropped a message: %s (%d %s so far)", self.address, err,
                    self.reasons[reason], reason)

    def close(self) -> None:
        """Close the socket; pending messages are discarded."""
        if self.curve is not None:
            self.curve.release(self._sock)
        self._sock.close(linger=0)

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
