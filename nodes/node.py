"""What every node process shares: its inbox, its outboxes, timed actions, the trace, the
messages it dropped, and its summary."""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import zmq

from mpsl.actions import Action, Msg
from mpsl.bandwidth import link_rates
from mpsl.names import AGGREGATOR, CPU, link_name
from mpsl.plan import Plan
from mpsl.settings import run_settings, settings_digest
from mpsl.topology import Topology
from mpsl.trace import Event, events_to_rows
from nodes.admission import PENDING, PENDING_CAP, Rules
from nodes.link import Inbox, Outbox
from nodes.memory import ActivationMeter, peak_rss_bytes
from nodes.recovery import Rollback
from nodes.security import NodeSecurity
from nodes.switch import Switch
from nodes.wire import Message

log = logging.getLogger(__name__)
DROP_LOG_EVERY_S = 1.0


class NodeError(RuntimeError):
    """A node cannot go on: a peer is silent past the timeout, or sent something unusable."""


class RunOver(Exception):
    """The aggregator ended the run while this data owner was behind (a straggler)."""


class Node:
    """Base of the three roles: binds its inbox, connects outboxes, times actions."""

    rules: Rules | None = None  # what the role takes (nodes.admission); set by each role
    ends_on_stop = False  # a data owner: a stop from the aggregator ends its run (RunOver)

    def __init__(self, topo: Topology, plan: Plan, name: str, compute_scale: float = 1.0,
                 device: str = "cpu") -> None:
        self.topo, self.plan, self.name = topo, plan, name
        self.scale = compute_scale
        self.device = device  # where its actions compute (a compute node's `device`)
        self.timeout = topo.runtime.timeout_s
        torch.set_num_threads(topo.runtime.torch_threads)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        known = set(topo.node_names())
        self.security = NodeSecurity(self.ctx, topo, name)  # CURVE's authenticator, if any
        self.inbox = Inbox(self.ctx, topo.address_of(name), known_senders=known,
                           curve=self.security.server())
        self.outboxes: dict[str, Outbox] = {}
        self.events: list[Event] = []
        self.meter = ActivationMeter()
        self.dropped: collections.Counter[str] = collections.Counter()  # reason -> messages
        self._pending: list[Message] = []  # at most PENDING_CAP, each one the rules take
        self.seq = 0
        self.t_start = 0.0
        self.run_id = ""  # the wire id: the aggregator's, from its start message or a rollback
        self.run_origin = ""  # the run's id as it started (a rollback gives a new wire id)
        self.heartbeat_s = topo.failure.heartbeat_s
        self._next_beat = 0.0
        self._drop_logged: dict[tuple[str, str], float] = {}  # (sender, reason) -> last log

    # links -----------------------------------------------------------------------------------
    def connect(self, dst: str, rate_mbps: float | None, latency_ms: float = 0.0) -> None:
        """An outbox to `dst`; an owner's link follows its bandwidth schedule from the run's
        start (mpsl.bandwidth)."""
        rates = link_rates(self.topo, self.name, dst)
        self.outboxes[dst] = Outbox(
            self.ctx,
            self.topo.address_of(dst),
            name=link_name(self.name, dst),
            rate_mbps=rate_mbps,
            latency_s=latency_ms / 1000.0,
            burst_bytes=0,  # one message at a time at the link's rate, as the cost model has it
            on_event=self.events.append,
            curve=self.security.client(dst),
            rate_at=None if rates is None else (
                lambda wall: rates.rate_at(wall - self.t_start) if self.t_start else rate_mbps),
        )

    def send(self, dst: str, kind: Msg, *, owner: int = -1, iteration: int = -1, mb: int = -1,
             tensors: dict[str, torch.Tensor] | None = None, trace: bool = True,
             copy: bool = True, **meta: Any) -> None:
        """Send one message; `trace=False` for run control outside training (no link event).

        `copy=False` hands the tensors over without a snapshot (`Outbox.send`): only for
        tensors that nobody, through any view, writes again."""
        self.seq += 1
        msg = Message(kind=str(kind), run=self.run_id, src=self.name, owner=owner,
                      iter=iteration, mb=mb, seq=self.seq, tensors=tensors or {}, meta=meta)
        self.outboxes[dst].send(msg, copy=copy, trace=trace)

    def recv(self, match: Callable[[Message], bool], what: str,
             deadline: float | None = None) -> Message:
        """The first message `match` accepts (see `poll`); NodeError at `deadline` (monotonic;
        default: the topology's timeout from now)."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        msg = self.poll(match, deadline)
        if msg is None:
            raise NodeError(f"{self.name}: no {what} within {self.timeout:g} s")
        return msg

    def poll(self, match: Callable[[Message], bool], deadline: float) -> Message | None:
        """The first message `match` accepts, or None at `deadline` (monotonic); others wait in
        arrival order for a later call.

        Every message passes the node's admission rules first (nodes.admission): one they
        refuse, now or while it waits, is dropped; at most PENDING_CAP wait. Heartbeats go out
        while it waits; those that come in, and what `heard` takes, are consumed.
        """
        found, kept = None, []
        for msg in self._pending:
            refused = self.rules.check(msg, self.run_id) if self.rules is not None else None
            if refused is not None:
                self.drop(msg, *refused)
            elif found is None and match(msg):
                found = msg
            else:
                kept.append(msg)
        self._pending = kept
        if found is not None:
            return found
        while (left := deadline - time.monotonic()) > 0:
            self.heartbeat()
            try:
                msg = self.inbox.recv(timeout=min(left, self.heartbeat_s))
            except TimeoutError:
                self.idle()
                continue
            refused = self.rules.check(msg, self.run_id) if self.rules is not None else None
            if refused is not None:
                self.drop(msg, *refused)
                continue
            if self.heard(msg) or (msg.kind == Msg.CONTROL
                                   and msg.meta.get("type") == "heartbeat"):
                continue
            if msg.kind == Msg.CONTROL and msg.src == AGGREGATOR:
                self.from_aggregator(msg)
            if match(msg):
                return msg
            if len(self._pending) >= PENDING_CAP:
                self.drop(msg, PENDING, f"{len(self._pending)} messages wait already")
            else:
                self._pending.append(msg)
        return None

    def from_aggregator(self, msg: Message) -> None:
        """What a CONTROL of the aggregator changes for the whole node, whatever it waits for:
        an abort (NodeError), a rollback (Rollback), a plan switch (Switch), the stop of a
        straggler (RunOver)."""
        typ = msg.meta.get("type")
        if typ == "abort":
            raise NodeError(f"{self.name}: aborted by {msg.src}: {msg.meta.get('reason')}")
        if typ == "rollback":
            raise Rollback(int(msg.meta["round"]), str(msg.meta["run"]),
                           bool(msg.meta.get("params", False)))
        if typ == "switch" and type(msg.meta.get("round")) is int:  # nodes.switch
            raise Switch(msg.meta["round"], msg.meta.get("plan"))
        if self.ends_on_stop and typ == "stop":
            raise RunOver(f"{self.name}: the run ended while it was behind")

    def switch_run(self, run: str) -> None:
        """Take `run` as the wire id (after a rollback): every message of the old one, waiting
        here or still on its way, is dropped from now on."""
        self.run_id = self.inbox.run = run
        self._pending.clear()

    def recv_any(self, what: str) -> Message:
        return self.recv(lambda m: True, what)

    def drop(self, msg: Message, reason: str, detail: str = "") -> None:
        """A message the node does not take: counted by `reason` (of a fixed vocabulary, so the
        counts stay bounded), logged with its sender and `detail`, never fatal."""
        self.dropped[reason] += 1
        now, key = time.monotonic(), (msg.src, reason)
        if now - self._drop_logged.get(key, -DROP_LOG_EVERY_S) < DROP_LOG_EVERY_S:
            return  # a flood is counted in full, logged once a second per sender and reason
        self._drop_logged[key] = now
        log.warning("%s: dropped %s from %s (owner %d, iteration %d, mb %d, part %s): %s%s "
                    "(%d so far)", self.name, msg.kind, msg.src, msg.owner, msg.iter, msg.mb,
                    str(msg.meta.get("part"))[:20], reason, f" ({detail})" if detail else "",
                    self.dropped[reason])

    # actions ---------------------------------------------------------------------------------
    @contextmanager
    def timed(self, action: Action, owner: int | None = None,
              iteration: int | None = None) -> Iterator[None]:
        """Record `action` on this node's processor; emulate a slower device by waiting.

        A device `scale` times slower takes `scale` x the CPU time the action used here, so
        the node sleeps that long minus the wall time already spent. Counting CPU time, not
        wall time, keeps a wait for a core on a shared host from being multiplied too.
        """
        t0, c0 = time.time(), time.thread_time()
        yield
        self.settle()
        self.emulate_device(t0, c0)
        self.events.append(Event(self.name, CPU, str(action), owner, iteration, action.mb,
                                 t0, time.time()))
        self.heartbeat()

    def settle(self) -> None:
        """Wait for the work queued on this node's GPU, if it has one: its kernels run after
        their launch returns, and an action ends when they have."""
        if self.device != "cpu":
            torch.cuda.synchronize(self.device)

    def emulate_device(self, t0: float, c0: float) -> None:
        """Sleep so that work begun at wall time `t0` and thread CPU time `c0` lasts `scale` x
        its CPU time (see `timed`)."""
        if self.scale > 1.0:
            left = self.scale * (time.thread_time() - c0) - (time.time() - t0)
            if left > 0:
                time.sleep(left)

    # liveness --------------------------------------------------------------------------------
    def heartbeat(self) -> None:
        """Tell the aggregator this node is alive, at most once every `heartbeat_s` (sent from
        the node's waits and after each action, so a busy node beats too)."""
        now = time.monotonic()
        if self.name == AGGREGATOR or not self.run_id or now < self._next_beat:
            return
        self._next_beat = now + self.heartbeat_s
        self.send(AGGREGATOR, Msg.CONTROL, type="heartbeat", trace=False)

    def heard(self, msg: Message) -> bool:
        """Every message the rules took, as it arrives; True if it was consumed here (the
        aggregator notes who is alive, and takes a rejoining owner's hello)."""
        return False

    def idle(self) -> None:
        """A wait passed `heartbeat_s` without a message (the aggregator checks liveness)."""

    # life cycle ------------------------------------------------------------------------------
    def join(self) -> dict[str, Any]:
        """Say hello to the aggregator and wait for the common start; the start's meta (an
        owner that rejoins finds its first round in `resume_round`)."""
        settings = run_settings(self.topo, self.plan)
        self.send(AGGREGATOR, Msg.CONTROL, type="hello", trace=False, settings=settings,
                  digest=settings_digest(settings))
        msg = self.recv(lambda m: m.kind == Msg.CONTROL and m.meta.get("type") == "start"
                        and m.src == AGGREGATOR and bool(m.run), "start from the aggregator")
        self.run_id = self.inbox.run = msg.run
        origin = msg.meta.get("origin")
        self.run_origin = origin if isinstance(origin, str) and origin else msg.run
        self._pending = [m for m in self._pending if m.run == self.run_id]  # a restart's
        self.t_start = float(msg.meta.get("t", time.time()))
        log.info("%s: run %s started, peers %s", self.name, self.run_id,
                 ", ".join(sorted(self.outboxes)))
        return dict(msg.meta)

    @property
    def rejected_messages(self) -> int:
        """Messages the inbox refused to decode plus those no task waited for."""
        return self.inbox.rejected + sum(self.dropped.values())

    def summary(self, state_bytes: int) -> dict[str, Any]:
        """The node's METRICS summary; every message sent so far is on the trace first."""
        for box in self.outboxes.values():
            box.flush(self.timeout)
        return {
            "type": "summary",
            "node": self.name,
            "peak_rss_bytes": peak_rss_bytes(),
            "peak_tensor_bytes": state_bytes + self.meter.peak,
            "state_bytes": state_bytes,
            "activation_peak_bytes": self.meter.peak,
            "rejected_messages": self.rejected_messages,
            "refused_connections": self.security.refused,
            "dropped": {**{f"wire: {k}": v for k, v in self.inbox.reasons.items()},
                        **self.dropped},
            "events": events_to_rows(self.events),
        }

    def close(self, drain: bool = True) -> None:
        """Stop the node's links; with `drain`, deliver what they queued first (up to the
        timeout per link). A failed run drains nothing: its peers may be gone already."""
        for box in self.outboxes.values():
            box.close(drain=drain, timeout=self.timeout)
        self.inbox.close()
        self.security.stop()
        self.ctx.term()
