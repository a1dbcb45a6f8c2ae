"""The aggregator: starts the run, FedAvg of the owner parts, SL turns, evaluation, results
(who takes part: nodes.presence; commits and rollbacks: nodes.rollback)."""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from mpsl.actions import Action, Msg
from mpsl.data import load_dataset, load_labels, partition_counts
from mpsl.names import AGGREGATOR, owner_name
from mpsl.plan import Plan
from mpsl.privacy import load_accountant, record, spent
from mpsl.settings import run_settings, settings_digest
from mpsl.topology import Topology
from mpsl.trace import Event
from mpsl.training import build_full_model, iterations_per_epoch, owner_indices
from nodes.admission import DUPLICATE, Rules
from nodes.link import Outbox
from nodes.membership import Membership
from nodes.memory import tensor_bytes
from nodes.node import NodeError
from nodes.owner_plans import compute_global, owner_global, whole_models
from nodes.parts import weighted_average
from nodes.presence import Presence
from nodes.recovery import Restarted, RoundStore
from nodes.replan import PlannerFactory, Replanning, replan_record
from nodes.results import assemble, write_run
from nodes.wire import Message

log = logging.getLogger(__name__)

def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Accuracy and mean loss of `model` on (x, y), in eval mode, in chunks of at most 256
    samples that differ by one at most (no short last chunk: a GroupNorm with one-channel
    groups on 1x1 maps refuses a single sample even in eval mode)."""
    model.eval()
    correct, loss = 0, 0.0
    chunks = max(1, -(-len(y) // 256))
    with torch.no_grad():
        for xs, ys in zip(torch.tensor_split(x, chunks), torch.tensor_split(y, chunks)):
            out = model(xs)
            loss += float(torch.nn.functional.cross_entropy(out, ys, reduction="sum"))
            correct += int((out.argmax(1) == ys).sum())
    return correct / max(1, len(y)), loss / max(1, len(y))


class Aggregator(Presence):
    rules: Rules  # what this role takes (nodes.admission)

    def __init__(self, topo: Topology, plan: Plan, run_dir: str | Path | None = None,
                 monitor: str | None = None, checkpoints: str | Path | None = None,
                 replanner: PlannerFactory | None = None) -> None:
        super().__init__(topo, plan, AGGREGATOR)
        self.run_dir = Path(run_dir) if run_dir else None
        for o in topo.owners:
            self.connect(o.name, o.downlink_mbps, o.latency_ms)
        for c in topo.chain:
            self.connect(c, None)
        self.monitor = Outbox(self.ctx, monitor, name="aggregator->monitor") if monitor else None
        ds = topo.dataset
        parts = owner_indices(topo)
        train_y = load_labels(ds.name, ds.root, "train", **ds.options)
        self.samples = [len(p) for p in parts]
        classes = int(train_y.max()) + 1 if len(train_y) else 0
        self.class_counts = partition_counts(parts, train_y, classes).tolist()
        self.iterations = [iterations_per_epoch(topo.training, n) for n in self.samples]
        self.test_x, self.test_y = load_dataset(ds.name, ds.root, "test", **ds.options)
        if ds.test_samples:
            keep = ds.test_samples
            self.test_x, self.test_y = self.test_x[:keep], self.test_y[:keep]
        self.model = build_full_model(topo)
        self.owner_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.losses: list[dict[str, Any]] = []
        self.summaries: dict[str, dict[str, Any]] = {}
        self.epochs: list[dict[str, Any]] = []
        self.settings = run_settings(topo, plan)
        self.digest = settings_digest(self.settings)
        self.rules = Rules(topo, plan, AGGREGATOR)  # its round: the one `params` waits for
        self._loss_seen: set[tuple[int, int]] = set()
        self.members = Membership.of(topo)
        self.rounds: list[dict[str, Any]] = []  # per aggregation: who took part, with what weight
        self._checked = 0.0  # when liveness was last checked (monotonic)
        self.all_events: list[Event] = []  # the run's trace, once `results` assembled it
        self.early_parts: dict[tuple[str, int], Message] = {}  # per-owner plans (gather)
        self.committed, self.rollbacks, self.t_prev, self.training_done = -1, [], 0.0, False
        self.store = None
        if topo.failure.checkpoint:
            folder = checkpoints or (self.run_dir / "checkpoints" if self.run_dir else None)
            self.store = RoundStore(AGGREGATOR, self.digest, folder)
        if topo.privacy.updates:
            load_accountant()  # slow to import: before the run's clock starts
        # online re-planning (nodes.replan); its planner is made before the run's clock starts
        self.replanning = Replanning(self, replanner) if topo.replan.enabled else None

    # messages --------------------------------------------------------------------------------
    def wait(self, match: Callable[[Message], bool], what: str) -> Message:
        """The next message `match` accepts, keeping the METRICS that come meanwhile."""
        while True:
            msg = self.recv(lambda m: match(m) or m.kind == Msg.METRICS, what)
            if msg.kind == Msg.METRICS and not match(msg):
                self.on_metrics(msg)
                continue
            return msg

    def on_metrics(self, msg: Message) -> None:
        """Keep a summary or a loss (the rules checked their fields); a loss twice is dropped."""
        if msg.meta.get("type") == "summary":
            self.summaries[msg.src] = dict(msg.meta)
        elif msg.meta.get("type") == "loss":
            if (msg.owner, msg.iter) in self._loss_seen:
                self.drop(msg, DUPLICATE)
                return
            self._loss_seen.add((msg.owner, msg.iter))
            row = {"owner": msg.owner, "iter": msg.iter, "epoch": msg.meta["epoch"],
                   "loss": msg.meta["loss"], "samples": msg.meta["samples"]}
            self.losses.append(row)
            self.tell_monitor(type="loss", **row)

    def tell_monitor(self, **meta: Any) -> None:
        if self.monitor is not None:
            self.monitor.send(Message(kind=str(Msg.METRICS), src=AGGREGATOR, meta=meta),
                              trace=False)

    def params(self, round_id: int, src: str) -> Message:
        """The PARAMS of round `round_id` from `src`; older rounds are refused from now on."""
        self.rules.round = round_id
        return self.wait(lambda m: m.kind == Msg.PARAMS and m.iter == round_id and m.src == src,
                         f"PARAMS of round {round_id} from {src}")

    # the run ---------------------------------------------------------------------------------
    def start(self) -> int:
        """Wait for every node's hello, check that its settings are ours, and start the run
        (its id in every header from now on); abort every node on a difference. Restarted
        with a checkpoint, resume from it instead (nodes.rollback). The first round to run."""
        resume = self.resume_from_checkpoint()
        if resume is not None:
            return resume
        expected = {o.name for o in self.topo.owners} | set(self.topo.chain)
        seen: set[str] = set()
        while seen != expected:
            msg = self.recv(lambda m: m.kind == Msg.CONTROL and m.meta.get("type") == "hello",
                            f"hello from {sorted(expected - seen)}")
            reason = self.settings_differ(msg)
            if reason is not None:
                for name in sorted(expected):
                    self.send(name, Msg.CONTROL, type="abort", reason=reason, trace=False)
                raise NodeError(reason)
            seen.add(msg.src)
        self.run_id = self.run_origin = self.inbox.run = secrets.token_hex(8)
        log.info("run %s: every node said hello, starting", self.run_id)
        self.t_start = self.t_prev = time.time()
        self.members.start(time.monotonic())
        self.save_commit()  # round -1: a restart before the first commit resumes at round 0
        for name in sorted(expected):
            self.send(name, Msg.CONTROL, type="start", t=self.t_start, trace=False)
        self.tell_monitor(type="start", t=self.t_start, epochs=self.topo.training.epochs,
                          iterations=self.iterations)
        return 0

    def fedavg_round(self, round_id: int) -> None:
        """FedAvg of the PARAMS of the round of every owner present (AVG), weighted by their
        samples, sent back to each as GLOBAL; then owners waiting to rejoin are let in."""
        if self.replanning is not None:
            self.replanning.adopt()  # the plan a switch after the last round brought
        got = self.gather(round_id)
        owners = sorted(got)
        samples = [got[k].meta["samples"] for k in owners]  # per-owner plans: whole models
        states: list[Mapping[str, torch.Tensor]] = [got[k].tensors for k in owners] \
            if self.plan.uniform else self.whole_models(round_id, owners, got)
        with self.timed(Action.avg(), None, round_id):
            avg = weighted_average(states, samples)
        self.owner_state.update(avg)
        late = sorted(self.members.active - set(owners))
        self.rounds.append({"round": round_id, "owners": owners, "late": late,
                            "samples": samples,
                            "weights": [n / sum(samples) for n in samples] if sum(samples)
                            else [1 / len(owners)] * len(owners)})
        if self.topo.privacy.updates:  # mpsl.privacy: each owner released round_id + 1 updates
            self.rounds[-1]["epsilon"] = spent(self.topo.privacy, round_id + 1)
        for c in self.topo.chain if not self.plan.uniform else ():  # they average, then save
            self.send(c, Msg.GLOBAL, iteration=round_id, round=round_id,
                      tensors=compute_global(self.plan, c, avg))
        self.commit(round_id)  # nodes.rollback: a restart goes back to here at worst
        plan = self.plan
        if self.replanning is not None:  # maybe a new plan, and the owners' parts under it
            avg = self.replanning.at_boundary(round_id, got, avg)
            plan = self.replanning.adopt_next or plan
        for k in sorted(self.members.active):  # stragglers too: they go on from it
            self.send(owner_name(k), Msg.GLOBAL, owner=k, iteration=round_id,
                      tensors=owner_global(plan, k, avg), round=round_id)
        self.admit(round_id, avg)

    def whole_models(self, round_id: int, owners: list[int],
                     got: dict[int, Message]) -> list[Mapping[str, torch.Tensor]]:
        """Per-owner plans: each owner's whole model, from its PARAMS and its compute nodes'
        copies of its parts (their PARAMS of the round, one per owner)."""
        parts: dict[tuple[str, int], Message] = {}
        for k in owners:
            for c in self.plan.for_owner(k).placement[1:]:
                if c in self.topo.chain:
                    early = self.early_parts.pop((c, k), None)
                    parts[(c, k)] = early if early is not None else self.wait(
                        lambda m, c=c, k=k: m.kind == Msg.PARAMS and m.src == c  # type: ignore
                        and m.owner == k and m.iter == round_id,
                        f"PARAMS of owner {k}'s part from {c}, round {round_id}")
        return list(whole_models(self.plan, owners, got, parts))

    def gather(self, round_id: int) -> dict[int, Message]:
        """The PARAMS of round `round_id` of every owner present, keeping the METRICS that come
        meanwhile; an owner silent past `failure.timeout_s` is lost and not waited for."""
        self.rules.round = round_id
        got: dict[int, Message] = {}
        deadline = time.monotonic() + self.timeout  # no message at all for this long: stuck
        owners = set(self.members.names.values())  # a compute node's PARAMS wait for end_epoch
        if not self.plan.uniform:  # per-owner plans: theirs come now, kept (whole_models)
            owners |= set(self.topo.chain)
        self.early_parts = {}  # none of this round yet: what is kept is of a rolled-back run
        closes = math.inf  # stragglers: when the round may close without them
        while not self.members.active <= set(got):
            if time.monotonic() >= closes and len(got.keys() & self.members.active) \
                    >= (self.topo.failure.min_owners or 0):
                self.leave_behind(sorted(self.members.active - set(got)), round_id)
                break
            msg = self.poll(lambda m: m.kind == Msg.METRICS or (m.kind == Msg.PARAMS
                                                               and m.src in owners),
                            min(deadline, closes, time.monotonic() + self.heartbeat_s))
            if msg is None:
                if time.monotonic() >= deadline:
                    missing = sorted(self.members.active - set(got))
                    raise NodeError(f"{self.name}: no PARAMS of round {round_id} from "
                                    f"{', '.join(self.members.names[k] for k in missing)} "
                                    f"within {self.timeout:g} s")
                continue
            deadline = time.monotonic() + self.timeout
            if msg.kind == Msg.PARAMS and msg.src in self.topo.chain:
                if msg.iter == round_id:
                    self.early_parts[(msg.src, msg.owner)] = msg
                continue
            k = self.members.index(msg.src)
            if msg.kind == Msg.METRICS:
                self.on_metrics(msg)
            elif k is not None and msg.iter == round_id:
                got[k] = msg
                if self.topo.failure.deadline_s is not None and closes == math.inf:
                    closes = time.monotonic() + self.topo.failure.deadline_s
        return {k: m for k, m in got.items() if k in self.members.active}

    def sl_turns(self, epoch: int) -> None:
        """SL: each owner in turn gets the owner part, trains its epoch and hands it back."""
        for o in self.topo.owners:
            part_state = {k: v for k, v in self.owner_state.items() if self.owner_key(k)}
            self.send(o.name, Msg.GLOBAL, owner=o.index, iteration=epoch, tensors=part_state,
                      round=epoch)
            msg = self.params(epoch, o.name)
            self.owner_state.update(msg.tensors)
        self.commit(epoch)

    def end_epoch(self, epoch: int, round_id: int, t_prev: float) -> float:
        now = time.time()
        state = dict(self.owner_state)  # per-owner plans: the whole global model already
        for _ in self.topo.chain if self.plan.uniform else ():
            state.update(self.wait(lambda m: m.kind == Msg.PARAMS and m.src in self.topo.chain
                                   and m.iter == round_id,
                                   f"compute-node PARAMS of round {round_id}").tensors)
        self.model.load_state_dict(state)
        acc, test_loss = evaluate(self.model, self.test_x, self.test_y)
        rows = [r for r in self.losses if r["epoch"] == epoch]
        seen = sum(r["samples"] for r in rows)
        train_loss = sum(r["loss"] * r["samples"] for r in rows) / seen if seen else None
        row = {"epoch": epoch + 1, "wall_s": now - t_prev, "train_loss": train_loss,
               "test_accuracy": acc, "test_loss": test_loss}
        if self.topo.privacy.updates:  # one update per owner and round (SL: per epoch)
            row["epsilon"] = spent(self.topo.privacy, round_id + 1)
        self.epochs.append(row)
        self.tell_monitor(type="epoch", **row)
        if round_id == self.committed:
            self.save_commit()  # with the epoch's row
        return now

    def train(self, resume: int) -> None:
        """Every round from `resume` on, and the evaluation at each epoch's end."""
        per_epoch = len(self.round_ends())
        for epoch in range(resume // per_epoch, self.topo.training.epochs):
            if self.topo.mode == "sl":
                self.sl_turns(epoch)
            else:
                for r in range(max(resume - epoch * per_epoch, 0), per_epoch):
                    self.fedavg_round(epoch * per_epoch + r)
            self.t_prev = self.end_epoch(epoch, (epoch + 1) * per_epoch - 1, self.t_prev)

    def run(self) -> dict[str, Any]:
        resume, restarted = None, None
        while True:
            try:
                if restarted is not None:  # every node goes back with it
                    resume = self.roll_back_all(restarted, f"{restarted} restarted")
                elif resume is None:
                    resume = self.start()
                self.train(resume)
                break
            except Restarted as again:  # a compute node, maybe during another rollback
                restarted = again.name
        self.training_done = True
        t_end = self.t_prev
        for c in self.topo.chain:
            self.send(c, Msg.CONTROL, type="stop", trace=False)
        for k in self.rounds[-1]["late"] if self.rounds else []:  # stragglers still behind
            self.send(self.members.names[k], Msg.CONTROL, type="stop", trace=False)
        for k in sorted(self.members.waiting):
            self.send(self.members.names[k], Msg.CONTROL, type="abort", trace=False,
                      reason="the run ended before it could rejoin")
        expected = {self.members.names[k] for k in self.members.active} | set(self.topo.chain)
        while set(self.summaries) != expected:
            missing = sorted(expected - set(self.summaries))
            self.on_metrics(self.wait(lambda m: m.meta.get("type") == "summary",
                                      f"summaries from {missing}"))
        results = self.results(t_end)
        if self.run_dir is not None:
            self.write(results)
        if self.store is not None:
            self.store.clear()  # the run is over: nothing to resume
        self.tell_monitor(type="done")
        return results

    # results ---------------------------------------------------------------------------------
    def results(self, t_end: float) -> dict[str, Any]:
        """results.json (nodes.results); the run's trace is kept for `write`."""
        state = (tensor_bytes(self.model.state_dict().values())
                 + tensor_bytes(self.owner_state.values()))
        summaries = {**self.summaries, self.name: self.summary(state)}
        run = {"run_id": self.run_id, "topology": self.topo.name,
               "source": str(Path(self.topo.source).resolve()),
               "overrides": list(self.topo.overrides), "mode": self.topo.mode,
               "labels": self.topo.labels, "schedule": self.plan.schedule,
               "plan": self.plan.to_json(),
               "partition": {"samples": self.samples, "class_counts": self.class_counts},
               "t_start": self.t_start, "epochs": self.epochs, "rounds": self.rounds,
               "failures": {**self.members.record(), "rollbacks": self.rollbacks},
               "losses": self.losses}
        if self.topo.privacy.updates or self.topo.privacy.layer:
            rounds = self.topo.training.epochs * len(self.round_ends())
            run["privacy"] = record(self.topo.privacy, rounds)
        if self.replanning is not None or any(o.bandwidth_schedule for o in self.topo.owners):
            run.update(replan_record(self.topo, self.replanning, t_end - self.t_start))
        results, self.all_events = assemble(run, summaries, t_end)
        return results

    def write(self, results: dict[str, Any]) -> None:
        assert self.run_dir is not None
        write_run(self.run_dir, results, self.all_events, self.model.state_dict())

    def close(self, drain: bool = True) -> None:
        if self.monitor is not None:
            self.monitor.close(drain=drain, timeout=5)
        super().close(drain)
