"""A compute node: one middle part, a copy per data owner, tasks released by one round-gated
queue (oldest arrival first), copies averaged at each round's end; `batch_owners: auto` runs
tasks of owners ready together batched (nodes.batched), `privacy.cut_sigma` noises its outputs."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from mpsl.actions import Action, Msg, Task, TriggerKey
from mpsl.names import AGGREGATOR, OWNER
from mpsl.plan import Plan
from mpsl.privacy import NoiseLayer, node_seed
from mpsl.schedule import iteration_tasks
from mpsl.settings import run_settings, settings_digest
from mpsl.taskqueue import Entry, TaskQueue
from mpsl.topology import Topology
from mpsl.training import mode_round_ends, round_ends, round_start
from nodes.admission import (
    DUPLICATE,
    KIND,
    LEFT,
    META,
    NO_TASK,
    ORDER,
    PENDING_CAP,
    STALE,
    TENSORS,
    TYPE,
    Rules,
)
from nodes.batched import Batcher
from nodes.checkpoint import CheckpointError
from nodes.executor import IterationState, message_key, payload_fits, run_task, trigger_sources
from nodes.node import Node, NodeError
from nodes.owner_plans import close_round, first_average, from_average, take_global
from nodes.parts import PartRunner, make_copies, weighted_average
from nodes.recovery import Rollback, RoundStore, copies_state, load_copies_state
from nodes.switch import Switch, switch_compute
from nodes.throughput import report_rates
from nodes.wire import Message

log = logging.getLogger(__name__)


class ComputeNode(Node):
    rules: Rules  # what this role takes (nodes.admission)

    def __init__(self, topo: Topology, plan: Plan, name: str,
                 checkpoints: str | Path | None = None) -> None:
        spec = topo.compute(name)
        super().__init__(topo, plan, name, spec.compute_scale, spec.device)
        (self.part,) = plan.parts_on(name)
        self.owners = plan.owners_on(name)  # those with a part here (not FL owners)
        self.shared = topo.mode == "sl"  # SL: one server-side model that owners take turns on
        self.copies = make_copies(topo, plan, [self.part], self.owners, shared=self.shared,
                                  device=spec.device)
        self.runner = PartRunner(self.copies, plan.num_parts - 1, self.meter, device=spec.device,
                                 noise=NoiseLayer.of(topo.privacy, node_seed(topo.privacy)))
        for c in self.copies.values():
            self.meter.exclude(c.module.parameters())
        same = len({plan.for_owner(k).cuts for k in self.owners}) == 1  # parts of one size
        self.batcher = Batcher.make(self.runner, self.part, self.owners, self.shared) \
            if spec.batch_owners == "auto" and same else None
        self.prev = plan.placement[self.part - 1]
        self.next = plan.placement[self.part + 1] if self.part + 1 < plan.num_parts else None
        for neighbour in [n for n in (self.prev, self.next) if n is not None and n != OWNER]:
            self.connect(neighbour, topo.links.compute_mbps, topo.links.compute_latency_ms)
        if OWNER in (self.prev, self.next):
            for o in topo.owners:
                self.connect(o.name, o.downlink_mbps, o.latency_ms)
        self.connect(AGGREGATOR, None)
        self.queue = TaskQueue(gated=True)
        self.states: dict[tuple[int, int], IterationState] = {}
        self.latest = dict.fromkeys(self.owners, -1)  # the last iteration added, per owner
        self.syncs = dict.fromkeys(self.owners, 0)  # syncs received, per owner: its round
        self.synced: dict[int, dict[int, int]] = {}  # round -> owner -> samples
        self._tasks: dict[tuple[int, int], tuple[list[Task], dict[TriggerKey, str]]] = {}
        self.active = set(self.owners)  # owners present (the aggregator says who leaves, joins)
        self.rules = Rules(topo, plan, name)  # its windows follow this node's progress
        self.rules.iteration, self.rules.syncs = self.latest, self.syncs
        self.rules.active = self.active
        self.joins: dict[int, int] = {}  # owner -> the round it rejoins at
        self.early: list[Message] = []  # work of owners whose join waits for an averaging
        self.averaged = -1  # the last round whose copies were averaged
        self.epoch_end: dict[int, bool] = {}  # round -> whether it ends an epoch
        self.skipped: dict[int, set[int]] = {}  # round -> owners late for it (stragglers)
        self.last_avg = first_average(plan, self.copies)  # the copies' state as averaged
        self.awaiting: tuple[int, list[int]] | None = None  # the round whose GLOBAL is due
        self.store: RoundStore | None = None  # its rounds' states, to roll back to
        if topo.failure.checkpoint:
            digest = settings_digest(run_settings(topo, plan))
            self.store = RoundStore(name, digest, checkpoints)
            self.store.save(-1, self.round_state(), "", disk=False)

    def tasks_for(self, owner: int, n_mb: int) -> tuple[list[Task], dict[TriggerKey, str]]:
        """This node's tasks of one iteration of `owner`, and the sender of each trigger."""
        key = (owner, n_mb)
        if key not in self._tasks:
            mine = [t for t in iteration_tasks(self.plan, owner, n_mb) if t.node == self.name]
            self._tasks[key] = (mine, trigger_sources(mine))
        return self._tasks[key]

    # work ------------------------------------------------------------------------------------
    def on_work(self, msg: Message) -> None:
        """Deliver an ACT or GRAD to the task that waits for it, adding its iteration's tasks
        when it is the iteration's first message; drop it when no task waits for it."""
        if (reason := self._admit(msg)) is not None:
            self.drop(msg, reason)

    def _admit(self, msg: Message) -> str | None:
        """None once delivered, else why the message is dropped (the admission rules passed:
        its owner, part, micro-batch, sender, meta and tensors fit the plan)."""
        if msg.owner in self.joins:  # its join waits for this node's averaging: keep it
            if len(self.early) >= PENDING_CAP:
                return LEFT
            self.early.append(msg)
            return None
        if msg.owner not in self.active:
            return LEFT
        key = message_key(msg)
        if key is None or not payload_fits(msg):  # the rules make sure of these
            return TENSORS
        now = time.time()
        st = self.states.get((msg.owner, msg.iter))
        if st is None:
            if msg.iter <= self.latest[msg.owner]:
                return STALE
            try:
                st = IterationState.from_message(msg)
            except ValueError:
                return META
            tasks, _ = self.tasks_for(msg.owner, st.n_mb)
            self.states[(msg.owner, msg.iter)] = st
            self.latest[msg.owner] = msg.iter
            self.queue.add(msg.owner, msg.iter, tasks, now, round_id=self.syncs[msg.owner])
        elif self.tasks_for(msg.owner, st.n_mb)[1].get(key) != msg.src:
            return NO_TASK
        if self.queue.deliver(msg.owner, msg.iter, key, now, msg) is None:
            return DUPLICATE
        st.absorb(msg)
        return None

    def serve(self) -> None:
        """Run every ready task, oldest arrival first, until none is ready (with batching,
        several owners' tasks at once: nodes.batched)."""
        if self.batcher is not None:
            self.batcher.serve(self)
            return
        while (entry := self.queue.pop()) is not None:
            st = self.states[(entry.owner, entry.iteration)]
            run_task(self, self.runner, entry.task, st, not self.plan.labels_local)
            self.finish_task(entry, st)

    def finish_task(self, entry: Entry, st: IterationState) -> None:
        """A task ran: tell the queue; after an iteration's last task, drop its state and
        report its loss from the last part."""
        if self.queue.finish(entry, time.time()):
            del self.states[(entry.owner, entry.iteration)]
            if self.part == self.plan.num_parts - 1:
                self._report_loss(st)

    def _report_loss(self, st: IterationState) -> None:
        done = (st.owner, st.iteration)
        loss = sum(v for (o, i, v) in self.runner.losses if (o, i) == done)
        self.runner.losses = [e for e in self.runner.losses if (e[0], e[1]) != done]
        self.send(AGGREGATOR, Msg.METRICS, owner=st.owner, iteration=st.iteration, type="loss",
                  epoch=st.epoch, loss=loss, samples=st.batch)

    # rounds ----------------------------------------------------------------------------------
    def on_sync(self, msg: Message) -> None:
        """An owner finished a round: forward the sync; once every owner present has, average
        the copies (AVG{part}) and open the next round's tasks."""
        if msg.owner not in self.syncs or msg.meta.get("round") != self.syncs[msg.owner] \
                or msg.iter != self.syncs[msg.owner]:  # not the owner's next round
            self.drop(msg, ORDER)
            return
        r = self.syncs[msg.owner]
        self.syncs[msg.owner] += 1
        if self.next not in (None, OWNER):
            assert self.next is not None
            self.send(self.next, Msg.CONTROL, owner=msg.owner, iteration=r, type="sync",
                      round=r, samples=msg.meta["samples"], epoch_end=msg.meta.get("epoch_end"))
        if r <= self.averaged:  # a straggler's round closed without it: it takes the average
            self._take_average(msg.owner)
            return
        self.synced.setdefault(r, {})[msg.owner] = int(msg.meta["samples"])
        self.epoch_end[r] = bool(msg.meta.get("epoch_end"))
        self.close_rounds()

    def close_rounds(self) -> None:
        """Average every round, in order, whose syncs every owner present sent; then let in
        the owners that rejoin at the next one."""
        while (counts := self.synced.get(self.averaged + 1)) is not None and \
                self.awaiting is None and \
                self.active <= set(counts) | self.skipped.get(self.averaged + 1, set()):
            r = self.averaged + 1
            if not self.plan.uniform:  # the aggregator averages (nodes.owner_plans)
                return close_round(self, r, counts)
            late = self.skipped.pop(r, set())
            owners = sorted(k for k in counts if k in self.active and k not in late)
            if not self.shared and owners:
                with self.timed(Action.avg(self.part), None, r):
                    copies = [self.copies[(k, self.part)] for k in owners]
                    avg = weighted_average([c.module.state_dict() for c in copies],
                                           [counts[k] for k in owners])
                    for c in copies:
                        c.module.load_state_dict(avg)
                    self.last_avg = avg
                for k in sorted(late & set(counts)):  # late, but done with the round here
                    self._take_average(k)
            if self.epoch_end.pop(r, False) and (owners or counts):
                state = self.copies[((owners or sorted(counts))[0], self.part)].full_state()
                self.send(AGGREGATOR, Msg.PARAMS, iteration=r, tensors=state, round=r,
                          part=self.part)
            del self.synced[r]
            self.averaged = r
            self.save_round(r)
            report_rates(self, r)  # re-planning (nodes.throughput)
            self.queue.open(r + 1)
            self.apply_joins()

    # checkpoints and rollbacks (nodes.recovery) ---------------------------------------------
    def round_state(self) -> dict[str, Any]:
        """What a rollback to the end of the round just averaged restores."""
        return {**copies_state(self.copies), "last_avg": self.last_avg}

    def save_round(self, r: int) -> None:
        """Checkpoint round `r` (just averaged; no task of a later round ran) and tell the
        aggregator, which commits the round once every compute node saved it."""
        if self.store is None:
            return
        self.store.save(r, self.round_state(), self.run_origin)
        self.send(AGGREGATOR, Msg.CONTROL, iteration=r, type="saved", round=r, trace=False)

    def roll_back(self, resume: int) -> None:
        """Go back to the end of round `resume - 1` (its saved state) with nothing in flight;
        every owner present starts round `resume` next."""
        if self.store is None:
            raise NodeError(f"{self.name}: asked to roll back, but the run keeps no checkpoints")
        r = resume - 1
        try:
            state = self.store.load(r, self.run_origin)
            load_copies_state(self.copies, state, f"{self.name}'s round {r}")
        except CheckpointError as err:
            raise NodeError(f"{self.name}: cannot resume: {err}") from None
        self.last_avg, self.awaiting = state["last_avg"], None
        self.queue = TaskQueue(gated=True)
        self.queue.open(resume)
        for kept in (self.states, self.synced, self.epoch_end, self.skipped, self.joins):
            kept.clear()
        self.early.clear()
        self.runner.forget_all()
        ends = mode_round_ends(self.topo.mode, self.rules.per_epoch,
                               self.topo.training.aggregate_every)
        for k in self.owners:  # the same dicts as the rules' windows
            self.syncs[k] = resume
            self.latest[k] = round_start(self.rules.per_epoch[k], ends, resume) - 1
        self.averaged = r
        log.info("%s: rolled back to the end of round %d", self.name, r)

    def resume_after(self, resume: int, params: bool) -> None:
        """Roll back, tell the aggregator, and send the part's PARAMS of the round rolled back
        to when the aggregator asks for them (to evaluate the epoch that round ended)."""
        self.roll_back(resume)
        self.send(AGGREGATOR, Msg.CONTROL, iteration=resume, type="rolled", round=resume,
                  trace=False)
        if params and resume > 0 and self.plan.uniform:
            owner = min(self.active, default=self.owners[0])
            self.send(AGGREGATOR, Msg.PARAMS, iteration=resume - 1, round=resume - 1,
                      tensors=self.copies[(owner, self.part)].full_state(), part=self.part)

    # owners that leave, rejoin, or are late --------------------------------------------------
    def on_skip(self, owner: int, round_id: int) -> None:
        """The aggregator closed `round_id` without `owner` (a straggler): average without it;
        it takes the average once it is done with that round here."""
        if round_id > self.averaged:
            self.skipped.setdefault(round_id, set()).add(owner)
            self.close_rounds()

    def _take_average(self, owner: int) -> None:
        """A straggler's update is dropped: its copy becomes the last average."""
        if not self.shared:
            from_average(self.plan, self.copies[(owner, self.part)], self.last_avg)
        log.info("%s: owner %d's update came late: it takes the average", self.name, owner)

    def on_leave(self, owner: int, round_id: int) -> None:
        """A data owner was lost: drop its work in flight and its syncs of rounds not yet
        averaged, and average without it."""
        self.joins.pop(owner, None)
        if owner not in self.active:
            return
        self.active.discard(owner)
        dropped = self.queue.drop_owner(owner)
        for key in [key for key in self.states if key[0] == owner]:
            del self.states[key]
        self.runner.forget(owner)
        for counts in self.synced.values():
            counts.pop(owner, None)
        log.warning("%s: owner %d left in round %d: %d iteration(s) in flight dropped",
                    self.name, owner, round_id, dropped)
        if self.active:
            self.close_rounds()

    def apply_joins(self) -> None:
        """Let in each owner whose rejoin round comes next (or has passed here): its copy
        becomes the last average (a fresh optimizer state), its windows start at that round;
        then its early work."""
        # a join that comes after its round closed here takes effect at once: its first sync
        # then counts as late
        ready = [k for k, r in self.joins.items() if r <= self.averaged + 1]
        for k in ready:
            r = self.joins.pop(k)
            c = self.copies[(k, self.part)]
            from_average(self.plan, c, self.last_avg)
            c.optimizer.state.clear()
            self.active.add(k)
            self.syncs[k] = r
            iters = self.rules.per_epoch[k]
            ends = round_ends(self.rules.per_epoch, self.topo.training.aggregate_every)
            self.latest[k] = round_start(iters, ends, r) - 1
            log.info("%s: owner %d rejoins at round %d", self.name, k, r)
        if ready:
            early, self.early = self.early, []
            for msg in early:
                self.on_work(msg)

    # the run ---------------------------------------------------------------------------------
    def dispatch(self, msg: Message) -> bool:
        """Admit one message (nodes.admission), route it, run what became ready; False when the
        aggregator says stop."""
        refused = self.rules.check(msg, self.run_id)
        if refused is not None:
            self.drop(msg, *refused)
            return True
        return self.route(msg)

    def route(self, msg: Message) -> bool:
        """Route one admitted message, then run what became ready; False on the stop. With
        batching, every message already waiting is routed first, so their tasks batch."""
        going = self.route_one(msg)
        if going and self.batcher is not None:
            going = self.batcher.take_waiting(self)
        if going:
            self.serve()
        return going

    def route_one(self, msg: Message) -> bool:
        """Route one admitted message; False on the stop."""
        if msg.kind == Msg.CONTROL:
            kind = msg.meta.get("type")
            if kind == "stop":
                return False
            if kind in ("leave", "skip", "join") and msg.owner not in self.syncs:
                pass  # an owner with no part here (FL beside split owners)
            elif kind == "sync":
                self.on_sync(msg)
            elif kind == "leave":
                self.on_leave(msg.owner, int(msg.meta["round"]))
            elif kind == "skip":
                self.on_skip(msg.owner, int(msg.meta["round"]))
            elif kind == "join":
                self.joins[msg.owner] = int(msg.meta["round"])
                self.apply_joins()
            else:
                self.drop(msg, TYPE, f"CONTROL {str(kind)[:40]!r}")
        elif msg.kind in (Msg.ACT, Msg.GRAD):
            self.on_work(msg)
        elif msg.kind == Msg.GLOBAL:
            take_global(self, msg)
        else:
            self.drop(msg, KIND, f"{msg.kind}")
        return True

    def run(self) -> None:
        """Serve until the stop; restarted, first resume at the round the aggregator names;
        rolled back, resume at the round the rollback names."""
        start = self.join()
        if "resume_round" in start:
            self.resume_after(int(start["resume_round"]), bool(start.get("params")))
        while True:
            try:
                while self.route(self.recv_any("work from the owners or stop from the "
                                               "aggregator")):
                    pass
                break
            except Rollback as back:
                self.switch_run(back.run)
                self.resume_after(back.round_id, back.params)
            except Switch as sw:  # a new plan after a round (nodes.switch)
                switch_compute(self, sw)
        if self.store is not None:
            self.store.clear()  # the run is over: nothing to resume
        if self.batcher is not None:
            log.info("%s: batched calls by owners per call: %s", self.name,
                     dict(sorted(self.batcher.calls.items())))
        state = sum(c.state_bytes() for c in {id(c): c for c in self.copies.values()}.values())
        self.send(AGGREGATOR, Msg.METRICS, trace=False, **self.summary(state))
