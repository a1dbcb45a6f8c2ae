"""The aggregator's side of recovery (nodes.recovery): it commits each aggregation, and rolls
every node back to the last commit when a compute node or the aggregator itself restarts.

Commit of round r: every compute node averaged r, saved it and said `saved`; the aggregator
saves its own state of r (the global owner part, the rounds, epochs and losses so far), and only
then sends round r's global model, so no node starts round r + 1 before r is committed.

Rollback: the aggregator sends `rollback` (the round to resume at, r + 1, and a new wire id) to
every node that is still running, and `start` with `resume_round` to a compute node that
restarted; each node restores its state of round r, drops whatever was in flight, and answers
`rolled`; messages of the old wire id are dropped from then on. Once every node answered, the
aggregator sends round r's global model again and the owners train round r + 1. The work lost
is what was done after the commit: at most one aggregation interval.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import torch

from mpsl.actions import Msg
from mpsl.names import AGGREGATOR, OWNER
from mpsl.training import mode_round_ends, round_start
from nodes.admission import Rules
from nodes.checkpoint import CheckpointError, load_checkpoint
from nodes.membership import Membership
from nodes.node import Node, NodeError
from nodes.owner_plans import owner_global
from nodes.recovery import RoundStore
from nodes.wire import Message

log = logging.getLogger(__name__)


class Coordinator(Node):
    """Commits and rollbacks; the aggregator's records that a rollback restores."""

    rules: Rules
    digest: str  # of the run settings
    store: RoundStore | None  # the aggregator's states of its last commits (failure.checkpoint)
    committed: int  # the last committed round; -1 before the first
    rolling: bool = False  # waiting for the nodes' answers to a rollback
    owner_state: dict[str, torch.Tensor]
    rounds: list[dict[str, Any]]
    epochs: list[dict[str, Any]]
    losses: list[dict[str, Any]]
    rollbacks: list[dict[str, Any]]
    members: Membership
    iterations: list[int]  # per owner and epoch
    t_prev: float  # when the last epoch ended
    _loss_seen: set[tuple[int, int]]

    def round_ends(self) -> list[int]:
        """Per epoch, the iteration counts that end a round (one round per epoch in SL)."""
        return mode_round_ends(self.topo.mode, self.iterations,
                               self.topo.training.aggregate_every)

    # commits ---------------------------------------------------------------------------------
    def commit(self, round_id: int) -> None:
        """Wait until every compute node saved round `round_id`, then save the aggregator's own
        state of it: from now on a rollback goes back to this round's end."""
        if self.store is None:
            return
        for c in self.topo.chain:
            self.wait(lambda m, c=c: m.kind == Msg.CONTROL and m.src == c  # type: ignore[misc]
                      and m.meta.get("type") == "saved" and m.iter == round_id,
                      f"{c}'s checkpoint of round {round_id}")
        self.committed = round_id
        self.save_commit()

    def save_commit(self) -> None:
        """(Re)write the checkpoint of the last commit with the records as they are now."""
        if self.store is None:
            return
        state = {"owner_state": self.owner_state, "rounds": self.rounds, "epochs": self.epochs,
                 "losses": self.losses, "t_start": self.t_start, "t_prev": self.t_prev,
                 "active": sorted(self.members.active), "failures": self.members.record(),
                 "rollbacks": self.rollbacks, "wire": self.run_id}
        self.store.save(self.committed, state, self.run_origin)

    def restore(self, state: dict[str, Any], history: bool) -> None:
        """Take back the records of a commit; `history`: also the losses, who was lost,
        rejoined or late, and the rollbacks so far (a restarted aggregator; a running one keeps
        its own, and drops the losses of rounds after the commit)."""
        self.owner_state = dict(state["owner_state"])
        self.rounds, self.epochs = list(state["rounds"]), list(state["epochs"])
        self.t_start, self.t_prev = float(state["t_start"]), float(state["t_prev"])
        if history:
            self.losses = list(state["losses"])
            self.members.active = set(state["active"])
            failures = state["failures"]
            self.members.lost = list(failures["lost"])
            self.members.rejoined = list(failures["rejoined"])
            self.members.late = list(failures["late"])
            self.rollbacks = list(state["rollbacks"])

    def resume_from_checkpoint(self) -> int | None:
        """A restarted aggregator: the round to resume the run at, from its last checkpoint,
        once every node rolled back to it; None when there is no checkpoint (a new run)."""
        if self.store is None or not self.store.on_disk():
            return None
        r = self.store.on_disk()[-1]
        try:
            saved = load_checkpoint(self.store.path(r), node=AGGREGATOR, digest=self.digest)
        except CheckpointError as err:
            raise NodeError(f"{self.name}: cannot resume: {err}; remove "
                            f"{self.store.folder} to start a new run") from None
        self.run_origin, self.committed = str(saved["run_id"]), r
        self.restore(saved["state"], history=True)
        self.run_id = str(saved["state"]["wire"])  # the survivors' until the rollback
        self.members.start(time.monotonic())
        log.info("%s: resuming run %s from its checkpoint of round %d", self.name,
                 self.run_origin, r)
        return self.roll_back_all(AGGREGATOR, "the aggregator restarted")

    # rollbacks -------------------------------------------------------------------------------
    def roll_back_all(self, restarted: str, why: str) -> int:
        """Roll every node back to the last commit (`restarted` resumes from its checkpoint);
        the round the run resumes at."""
        assert self.store is not None
        r, resume = self.committed, self.committed + 1
        evaluate = resume % len(self.round_ends()) == 0 and len(self.epochs) < \
            resume // len(self.round_ends())  # the commit ended an epoch not yet evaluated
        new = secrets.token_hex(8)
        owners = [self.members.names[k] for k in sorted(self.members.active)]
        survivors = owners + [c for c in self.topo.chain if c != restarted]
        for name in survivors:
            self.send(name, Msg.CONTROL, type="rollback", round=resume, run=new,
                      params=evaluate and name in self.topo.chain, trace=False)
        self.switch_run(new)
        if restarted in self.topo.chain:
            self.send(restarted, Msg.CONTROL, type="start", t=self.t_start, resume_round=resume,
                      origin=self.run_origin, params=evaluate, trace=False)
        waiting = set(survivors) | ({restarted} & set(self.topo.chain))
        deadline = time.monotonic() + self.timeout
        redone = 0  # iterations the owners started after the commit: trained again
        self.rolling = True  # heartbeats of the old wire id are dropped: no liveness now
        try:
            while waiting:
                msg = self.recv(lambda m: m.kind == Msg.CONTROL
                                and m.meta.get("type") == "rolled" and m.iter == resume,
                                f"rollback answer from {sorted(waiting)}", deadline)
                waiting.discard(msg.src)
                redone += int(msg.meta.get("redone", 0))
        finally:
            self.rolling = False
        self.members.start(time.monotonic())  # every node answered just now
        if restarted != AGGREGATOR:
            self.restore(self.store.load(r, self.run_origin), history=False)
        self.forget_losses_after(r)
        self.rollbacks.append({"node": restarted, "why": why, "round": resume,
                               "redone_iterations": redone,
                               "t_s": round(time.time() - self.t_start, 3)})
        log.warning("%s: %s: every node rolled back to the end of round %d (%d iteration(s) "
                    "to redo)", self.name, why, r, redone)
        if evaluate:
            self.rules.round = r
            self.t_prev = self.end_epoch(resume // len(self.round_ends()) - 1, r, self.t_prev)
            self.save_commit()
        if self.topo.mode != "sl" and r >= 0:
            part = {k: v for k, v in self.owner_state.items() if self.owner_key(k)}
            for k in sorted(self.members.active):  # per-owner plans: each its own parts
                self.send(self.members.names[k], Msg.GLOBAL, owner=k, iteration=r, round=r,
                          tensors=part if self.plan.uniform else owner_global(
                              self.plan, k, self.owner_state))
        self.tell_monitor(type="rollback", node=restarted, round=resume, redone=redone)
        return resume

    def forget_losses_after(self, r: int) -> int:
        """Drop the losses of iterations after round `r` (they are trained again); how many."""
        ends = self.round_ends()
        first = [round_start(n, ends, r + 1) for n in self.iterations]
        kept = [row for row in self.losses if row["iter"] < first[row["owner"]]]
        redone = len(self.losses) - len(kept)
        self.losses = kept
        self._loss_seen = {(row["owner"], row["iter"]) for row in kept}
        return redone

    def owner_key(self, key: str) -> bool:
        """Whether a whole-model state key belongs to a part the owners run."""
        layer = int(key.split(".", 1)[0])
        return any(a <= layer < b for (a, b), n in zip(self.plan.parts, self.plan.placement)
                   if n == OWNER)

    # what the aggregator's loop provides -----------------------------------------------------
    def wait(self, match: Callable[[Message], bool], what: str) -> Message:
        raise NotImplementedError

    def end_epoch(self, epoch: int, round_id: int, t_prev: float) -> float:
        raise NotImplementedError

    def tell_monitor(self, **meta: Any) -> None:
        raise NotImplementedError
