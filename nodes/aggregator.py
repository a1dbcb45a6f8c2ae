"""The aggregator: starts the run, FedAvg of the owner parts, SL turns, evaluation, results."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mpsl.actions import Action, Msg
from mpsl.data import load_dataset, load_labels, partition_counts
from mpsl.metrics import busy_seconds, link_bytes, write_results
from mpsl.names import AGGREGATOR, OWNER
from mpsl.plan import Plan
from mpsl.settings import first_difference, run_settings, settings_digest
from mpsl.topology import Topology
from mpsl.trace import Event, events_from_rows, write_events
from mpsl.training import build_full_model, iterations_per_epoch, owner_indices, round_ends
from nodes.admission import DUPLICATE, Rules
from nodes.link import Outbox
from nodes.memory import tensor_bytes
from nodes.node import Node, NodeError
from nodes.parts import weighted_average
from nodes.wire import Message

log = logging.getLogger(__name__)

def _node_row(summary: dict[str, Any], busy: float, wall: float) -> dict[str, Any]:
    """One node of results.json from its summary: busy and idle time, memory, rejections and
    the messages it dropped by reason (`wire: ...` for those its inbox refused)."""
    keys = ("peak_rss_bytes", "peak_tensor_bytes", "state_bytes", "activation_peak_bytes",
            "rejected_messages")
    return {"busy_s": busy, "idle_s": wall - busy, **{k: summary[k] for k in keys},
            "dropped": dict(sorted(summary.get("dropped", {}).items()))}


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Accuracy and mean loss of `model` on (x, y), in eval mode, 256 samples at a time."""
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for xs, ys in zip(torch.split(x, 256), torch.split(y, 256)):
            out = model(xs)
            loss += float(torch.nn.functional.cross_entropy(out, ys, reduction="sum"))
            correct += int((out.argmax(1) == ys).sum())
    return correct / max(1, len(y)), loss / max(1, len(y))


class Aggregator(Node):
    rules: Rules  # what this role takes (nodes.admission)

    def __init__(self, topo: Topology, plan: Plan, run_dir: str | Path | None = None,
                 monitor: str | None = None) -> None:
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
    def start(self) -> None:
        """Wait for every node's hello, check that its settings are ours, and start the run
        (its id in every header from now on); abort every node on a difference."""
        expected = {o.name for o in self.topo.owners} | set(self.topo.chain)
        seen: set[str] = set()
        while seen != expected:
            msg = self.recv(lambda m: m.kind == Msg.CONTROL and m.meta.get("type") == "hello",
                            f"hello from {sorted(expected - seen)}")
            if msg.meta.get("digest") != self.digest:
                theirs = msg.meta.get("settings")
                diff = first_difference(self.settings, theirs if isinstance(theirs, dict) else {})
                reason = f"{msg.src}'s settings differ from the aggregator's: {diff}"
                for name in sorted(expected):
                    self.send(name, Msg.CONTROL, type="abort", reason=reason, trace=False)
                raise NodeError(reason)
            seen.add(msg.src)
        self.run_id = self.inbox.run = secrets.token_hex(8)
        log.info("run %s: every node said hello, starting", self.run_id)
        self.t_start = time.time()
        for name in sorted(expected):
            self.send(name, Msg.CONTROL, type="start", t=self.t_start, trace=False)
        self.tell_monitor(type="start", t=self.t_start, epochs=self.topo.training.epochs,
                          iterations=self.iterations)

    def fedavg_round(self, round_id: int) -> None:
        """FedAvg of every owner's PARAMS of the round (AVG), sent back to each as GLOBAL."""
        msgs = [self.params(round_id, o.name) for o in self.topo.owners]
        with self.timed(Action.avg(), None, round_id):
            avg = weighted_average([m.tensors for m in msgs], [m.meta["samples"] for m in msgs])
        self.owner_state.update(avg)
        for o in self.topo.owners:
            self.send(o.name, Msg.GLOBAL, owner=o.index, iteration=round_id, tensors=avg,
                      round=round_id)

    def sl_turns(self, epoch: int) -> None:
        """SL: each owner in turn gets the owner part, trains its epoch and hands it back."""
        for o in self.topo.owners:
            part_state = {k: v for k, v in self.owner_state.items() if self._owner_key(k)}
            self.send(o.name, Msg.GLOBAL, owner=o.index, iteration=epoch, tensors=part_state,
                      round=epoch)
            msg = self.params(epoch, o.name)
            self.owner_state.update(msg.tensors)

    def _owner_key(self, key: str) -> bool:
        layer = int(key.split(".", 1)[0])
        return any(a <= layer < b for (a, b), n in zip(self.plan.parts, self.plan.placement)
                   if n == OWNER)

    def end_epoch(self, epoch: int, round_id: int, t_prev: float) -> float:
        now = time.time()
        state = dict(self.owner_state)
        for _ in self.topo.chain:
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
        self.epochs.append(row)
        self.tell_monitor(type="epoch", **row)
        return now

    def run(self) -> dict[str, Any]:
        self.start()
        t = self.topo.training
        rounds = round_ends(self.iterations, t.aggregate_every)
        t_prev = self.t_start
        for epoch in range(t.epochs):
            if self.topo.mode == "sl":
                self.sl_turns(epoch)
                t_prev = self.end_epoch(epoch, epoch, t_prev)
                continue
            for r in range(len(rounds)):
                self.fedavg_round(epoch * len(rounds) + r)
            t_prev = self.end_epoch(epoch, epoch * len(rounds) + len(rounds) - 1, t_prev)
        t_end = t_prev
        for c in self.topo.chain:
            self.send(c, Msg.CONTROL, type="stop", trace=False)
        expected = {o.name for o in self.topo.owners} | set(self.topo.chain)
        while set(self.summaries) != expected:
            missing = sorted(expected - set(self.summaries))
            self.on_metrics(self.wait(lambda m: m.meta.get("type") == "summary",
                                      f"summaries from {missing}"))
        results = self.results(t_end)
        if self.run_dir is not None:
            self.write(results)
        self.tell_monitor(type="done")
        return results

    # results ---------------------------------------------------------------------------------
    def results(self, t_end: float) -> dict[str, Any]:
        """results.json: the run, its plan, per-epoch and per-iteration curves, every node
        (this one included), every link, and the summary."""
        state = (tensor_bytes(self.model.state_dict().values())
                 + tensor_bytes(self.owner_state.values()))
        summaries = dict(self.summaries)
        summaries[self.name] = self.summary(state)
        events: list[Event] = []
        for s in summaries.values():
            events += events_from_rows(s["events"])
        self.all_events = [e for e in events if e.t1 >= self.t_start]
        wall = t_end - self.t_start
        busy = busy_seconds(self.all_events)
        nodes = {name: _node_row(s, busy.get(name, 0.0), wall)
                 for name, s in sorted(summaries.items())}
        links = {name: {"bytes": b, "busy_s": busy.get(name, 0.0)}
                 for name, b in link_bytes(self.all_events).items()}
        bottleneck = max(busy, key=lambda k: busy[k]) if busy else ""
        bound = busy.get(bottleneck, 0.0)
        return {
            "run_id": self.run_id,
            "topology": self.topo.name,
            "source": str(Path(self.topo.source).resolve()),
            "overrides": list(self.topo.overrides),
            "mode": self.topo.mode,
            "labels": self.topo.labels,
            "schedule": self.plan.schedule,
            "plan": self.plan.to_json(),
            "partition": {"samples": self.samples, "class_counts": self.class_counts},
            "t_start": self.t_start,
            "epochs": self.epochs,
            "losses": self.losses,
            "nodes": nodes,
            "links": links,
            "summary": {"train_s": wall, "bottleneck": bottleneck, "bottleneck_busy_s": bound,
                        "time_over_bound": wall / bound if bound else None,
                        "final_test_accuracy": self.epochs[-1]["test_accuracy"],
                        "samples_per_owner": self.samples,
                        "rejected_messages": sum(n["rejected_messages"] for n in nodes.values())},
        }

    def write(self, results: dict[str, Any]) -> None:
        assert self.run_dir is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_results(self.run_dir, results)
        write_events(self.run_dir / "events.jsonl", self.all_events)
        tmp = self.run_dir / "model.pt.tmp"
        torch.save(self.model.state_dict(), tmp)
        os.replace(tmp, self.run_dir / "model.pt")

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close(drain=True, timeout=5)
        super().close()
