"""Who takes part, as the aggregator keeps it during the run: liveness from what it hears, data
owners lost after `failure.timeout_s` of silence, owners that rejoin at the next aggregation,
stragglers left out of a round, compute nodes that went silent or restarted, and nodes whose
settings differ (the records themselves are nodes.membership's)."""

from __future__ import annotations

import logging
import time

import torch

from mpsl.actions import Msg
from mpsl.settings import first_difference
from nodes.admission import PRESENT, SETTINGS
from nodes.node import NodeError
from nodes.owner_plans import owner_global
from nodes.recovery import Restarted
from nodes.rollback import Coordinator
from nodes.wire import Message

log = logging.getLogger(__name__)


class Presence(Coordinator):
    """The aggregator's liveness and membership handling."""

    digest: str  # of the run settings
    settings: dict[str, str]
    training_done: bool  # every round trained: a restarted compute node only reports
    _checked: float  # when liveness was last checked (monotonic)

    def settings_differ(self, hello: Message) -> str | None:
        """Why a node that said `hello` cannot train in this run (its settings), or None."""
        if hello.meta.get("digest") == self.digest:
            return None
        theirs = hello.meta.get("settings")
        diff = first_difference(self.settings, theirs if isinstance(theirs, dict) else {})
        return f"{hello.src}'s settings differ from the aggregator's: {diff}"

    def leave_behind(self, late: list[int], round_id: int) -> None:
        """Close round `round_id` without the owners `late` past the deadline: their updates of
        it are dropped (here as past rounds), and the compute nodes average without them."""
        for k in late:
            name = self.members.names[k]
            log.warning("%s is late for round %d: the aggregation closes without it", name,
                        round_id)
            self.members.late.append({"node": name, "round": round_id,
                                      "t_s": round(time.time() - self.t_start, 3)})
            for c in self.topo.chain:
                self.send(c, Msg.CONTROL, owner=k, iteration=round_id, type="skip",
                          round=round_id, trace=False)

    def heard(self, msg: Message) -> bool:
        """Note who is alive; take the hello of an owner that restarted: it rejoins at the next
        aggregation. A hello does not count as a sign of life of the owner's earlier process:
        that one is lost once it has been silent for two heartbeats (so a hello forged in an
        owner's name cannot push out an owner that is still training)."""
        now = time.monotonic()
        k = self.members.index(msg.src)
        hello = bool(self.run_id) and msg.kind == Msg.CONTROL and msg.meta.get("type") == "hello"
        if hello and msg.src in self.topo.chain:
            self.restarted(msg)
            return True
        hello = hello and k is not None
        if not hello:
            self.members.heard(msg.src, now)
        if now - self._checked > self.heartbeat_s / 2:
            self.check_liveness()
        if not hello:
            return False
        assert k is not None
        reason = self.settings_differ(msg)
        if reason is not None:
            self.drop(msg, SETTINGS, reason)
            return True
        self.members.waiting[k] = msg
        log.info("%s said hello again: it rejoins at the next aggregation", msg.src)
        self.check_liveness()
        return True

    def restarted(self, hello: Message) -> None:
        """A compute node said hello again: it restarted (the rules let that happen only
        with checkpoints). During training, every node rolls back with it (nodes.rollback);
        after, it only sends its summary."""
        reason = self.settings_differ(hello)
        if reason is not None:
            self.drop(hello, SETTINGS, reason)
        elif not self.training_done:
            raise Restarted(hello.src)
        else:
            self.send(hello.src, Msg.CONTROL, type="start", t=self.t_start, trace=False,
                      resume_round=self.rules.rounds, origin=self.run_origin)
            self.send(hello.src, Msg.CONTROL, type="stop", trace=False)

    def idle(self) -> None:
        self.check_liveness()

    def check_liveness(self) -> None:
        """Every present owner silent past `failure.timeout_s` is lost, and one that said
        hello again once its earlier process has been silent for two heartbeats."""
        if not self.run_id or self.rolling:
            return
        now = self._checked = time.monotonic()
        for k, silent in self.members.silent(now):
            self.lose(k, f"silent for {silent:.1f} s", silent)
        for c in self.topo.chain:
            silent = now - self.members.last_heard.get(c, now)
            if silent > self.topo.failure.timeout_s and (not self.store or silent > self.timeout):
                raise NodeError(f"{self.name}: {c} lost: silent for {silent:.1f} s" + (
                    "" if self.store else " (without failure.checkpoint the run cannot go on "
                    "without it)"))
        for k in sorted(self.members.waiting.keys() & self.members.active):
            silent = now - self.members.last_heard.get(self.members.names[k], now)
            if silent > 2 * self.heartbeat_s:
                self.lose(k, "restarted", silent)

    def lose(self, owner: int, why: str, silent_s: float) -> None:
        """Go on without `owner`: the compute nodes drop its work in flight; NodeError where
        the run cannot go on (SL's turns, or no owner left)."""
        name = self.members.names[owner]
        if self.topo.mode == "sl":
            raise NodeError(f"{name} lost ({why}): SL's turns cannot go on without it")
        self.members.lose(owner, self.rules.round, why, silent_s, time.time() - self.t_start)
        present = ", ".join(self.members.names[k] for k in sorted(self.members.active))
        log.warning("%s lost: %s in round %d; the aggregation goes on over %s", name, why,
                    self.rules.round, present or "no owner")
        if not self.members.active and not self.members.waiting:
            raise NodeError(f"{self.name}: every data owner is lost (the last: {name}, {why})")
        for c in self.topo.chain:
            self.send(c, Msg.CONTROL, owner=owner, iteration=self.rules.round, type="leave",
                      round=self.rules.round, trace=False)
        self.tell_monitor(type="lost", node=name, round=self.rules.round, why=why)

    def admit(self, round_id: int, avg: dict[str, torch.Tensor]) -> None:
        """Owners that said hello again rejoin at round `round_id` + 1 with the global model
        of `round_id` (the compute nodes give them a copy of their averaged part)."""
        nxt = round_id + 1
        if nxt >= self.rules.rounds:
            return
        for k in sorted(self.members.waiting):
            name = self.members.names[k]
            if k in self.members.active:  # still training: the hello was stale or forged
                self.drop(self.members.waiting.pop(k), PRESENT, "it still sends heartbeats")
                continue
            self.members.rejoin(k, nxt, time.monotonic(), time.time() - self.t_start)
            log.info("%s rejoins at round %d", name, nxt)
            for c in self.topo.chain:
                self.send(c, Msg.CONTROL, owner=k, iteration=nxt, type="join", round=nxt,
                          trace=False)
            self.send(name, Msg.CONTROL, type="start", t=self.t_start, resume_round=nxt,
                      trace=False)
            self.send(name, Msg.GLOBAL, owner=k, iteration=round_id, round=round_id,
                      tensors=owner_global(self.plan, k, avg))
            self.tell_monitor(type="rejoined", node=name, round=nxt)
