"""What every node process shares: its inbox, its outboxes, timed actions, events and summary."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import zmq

from mpsl.metrics import CPU, Event, events_to_rows
from mpsl.plan import Plan
from mpsl.topology import Topology
from nodes.link import Inbox, Outbox
from nodes.memory import ActivationMeter, peak_rss_bytes
from nodes.wire import Kind, Message

log = logging.getLogger(__name__)
AGGREGATOR = "aggregator"


class NodeError(RuntimeError):
    """A node cannot go on: a peer is silent past the timeout, or sent something unusable."""


def aggregation_rounds(iterations: list[int], aggregate_every: int | None) -> list[int]:
    """Iteration counts (per epoch) that end an aggregation round; the last is the epoch end.

    Owners with fewer iterations than a round's count take part with what they have.
    """
    longest = max(iterations)
    if not aggregate_every:
        return [longest]
    ends = list(range(aggregate_every, longest, aggregate_every))
    return ends + [longest]


def iterations_per_epoch(samples: int, batch_size: int, cap: int | None) -> int:
    n = math.ceil(samples / batch_size)  # the last partial batch is kept
    return min(n, cap) if cap else n


class Node:
    """Base of the three roles: binds its inbox, connects outboxes, times actions."""

    def __init__(self, topo: Topology, plan: Plan, name: str, compute_scale: float = 1.0) -> None:
        self.topo, self.plan, self.name = topo, plan, name
        self.scale = compute_scale
        self.timeout = topo.runtime.timeout_s
        torch.set_num_threads(topo.runtime.torch_threads)
        self.ctx = zmq.Context()
        known = set(topo.node_names())
        self.inbox = Inbox(self.ctx, topo.address_of(name), known_senders=known)
        self.outboxes: dict[str, Outbox] = {}
        self.events: list[Event] = []
        self.meter = ActivationMeter()
        self._pending: list[Message] = []
        self.seq = 0
        self.t_start = 0.0

    # links -----------------------------------------------------------------------------------
    def connect(self, dst: str, rate_mbps: float | None, latency_ms: float = 0.0) -> None:
        link = f"{self.name}->{dst}"
        self.outboxes[dst] = Outbox(
            self.ctx,
            self.topo.address_of(dst),
            name=link,
            rate_mbps=rate_mbps,
            latency_s=latency_ms / 1000.0,
            burst_bytes=0,  # one message at a time at the link's rate, as the cost model has it
            on_event=self._link_event,
        )

    def _link_event(self, ev: Any) -> None:
        self.events.append(
            Event(self.name, ev.resource, str(ev.kind), ev.owner, ev.iter, ev.mb, ev.t0, ev.t1,
                  int(getattr(ev, "bytes", 0)))
        )

    def send(self, dst: str, kind: Kind, *, owner: int = -1, iteration: int = -1, mb: int = -1,
             tensors: dict[str, torch.Tensor] | None = None, **meta: Any) -> None:
        self.seq += 1
        msg = Message(kind=str(kind), src=self.name, owner=owner, iter=iteration, mb=mb,
                      seq=self.seq, tensors=tensors or {}, meta=meta)
        self.outboxes[dst].send(msg)

    def recv(self, match: Callable[[Message], bool], what: str) -> Message:
        """The first message `match` accepts; others wait in arrival order for a later call."""
        for i, msg in enumerate(self._pending):
            if match(msg):
                return self._pending.pop(i)
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NodeError(f"{self.name}: no {what} within {self.timeout:.0f} s")
            try:
                msg = self.inbox.recv(timeout=left)
            except TimeoutError:
                continue
            if msg.kind == str(Kind.CONTROL) and msg.meta.get("type") == "abort":
                raise NodeError(f"{self.name}: aborted by {msg.src}: {msg.meta.get('reason')}")
            if match(msg):
                return msg
            self._pending.append(msg)

    def recv_any(self, what: str) -> Message:
        return self.recv(lambda m: True, what)

    # actions ---------------------------------------------------------------------------------
    @contextmanager
    def timed(self, kind: str, owner: int = -1, iteration: int = -1,
              mb: int = -1) -> Iterator[None]:
        """Record the action on this node's processor; emulate a slower device by waiting.

        A device `scale` times slower takes `scale` x the CPU time the action used here, so
        the node sleeps that long minus the wall time already spent. Counting CPU time, not
        wall time, keeps a wait for a core on a shared host from being multiplied too.
        """
        t0, c0 = time.time(), time.thread_time()
        yield
        if self.scale > 1.0:
            left = self.scale * (time.thread_time() - c0) - (time.time() - t0)
            if left > 0:
                time.sleep(left)
        self.events.append(Event(self.name, CPU, kind, owner, iteration, mb, t0, time.time()))

    # life cycle ------------------------------------------------------------------------------
    def join(self) -> None:
        """Say hello to the aggregator and wait for the common start."""
        self.send(AGGREGATOR, Kind.CONTROL, type="hello")
        msg = self.recv(lambda m: m.kind == str(Kind.CONTROL) and m.meta.get("type") == "start",
                        "start from the aggregator")
        self.t_start = float(msg.meta.get("t", time.time()))

    def summary(self, state_bytes: int) -> dict[str, Any]:
        return {
            "type": "summary",
            "node": self.name,
            "peak_rss_bytes": peak_rss_bytes(),
            "peak_tensor_bytes": state_bytes + self.meter.peak,
            "state_bytes": state_bytes,
            "activation_peak_bytes": self.meter.peak,
            "rejected_messages": int(getattr(self.inbox, "rejected", 0)),
            "events": events_to_rows(self.events),
        }

    def close(self) -> None:
        for box in self.outboxes.values():
            box.close(drain=True, timeout=self.timeout)
        self.inbox.close()
        self.ctx.term()
