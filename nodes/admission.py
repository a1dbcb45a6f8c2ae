"""What each role takes: the one place that says whether a well-formed message may touch a node.

The wire decoder (nodes.wire) has checked the format, dtypes against the allow-list, frame
lengths, size caps and that the sender is known; the inbox has dropped messages of another run.
`Rules.check` then says, for the receiving role, whether the message is one it takes:

* kinds: a data owner takes ACT, GRAD, GLOBAL and CONTROL (start, abort, stop, rollback); a
  compute node ACT, GRAD and CONTROL (start, stop, abort, leave, join, skip, rollback, and sync
  from the node before it); the aggregator PARAMS (from owners, and from compute nodes at an
  epoch's end), METRICS (loss, summary) and CONTROL hello (before the run starts, from an owner
  that rejoins, and from a compute node that restarts when the run keeps checkpoints), and,
  once the run started, heartbeat, saved (from compute nodes), rolled and the re-planning
  REPORTS. Every CONTROL but hello, heartbeat, sync and REPORTS comes from the aggregator (a
  switch's too; a compute node's leave, join and skip name an owner of the run and a round of
  it; a rollback a round and the run's new wire id); GLOBAL only from the aggregator.
* ACT and GRAD: an owner of the run (a data owner: only its own), meta `part`, `n_mb`,
  `batch`, `epoch` as ints that match the iteration (its epoch, its batch size, min(N, B)
  micro-batches), a part this node runs, mb < n_mb, the sender the plan's tasks name for
  (kind, part, mb), and tensors: an ACT `x` of shape (micro-batch size, *input of the part
  for one sample) float32, plus `y` (size,) int64 in [0, classes) where labels are shared; a
  GRAD `g` of the part's output shape, float32.
* PARAMS and GLOBAL: meta `round` (= the header's iter), exactly the parameter names, shapes
  and dtypes of the parts concerned (an owner's parts, or the sending compute node's part);
  an owner's PARAMS carry its own index and its real sample count. Per-owner plans: shapes
  and names by the owner's plan; compute nodes send PARAMS per owner and take GLOBAL.
* windows: an iteration before the node's current one (a compute node: more than one back)
  or more than WINDOW ahead is dropped, as is a round before the current one or more than
  WINDOW ahead, and anything past the run's last iteration or round. An ACT or GRAD is
  checked for faults of its own first, then for its iteration's window.

A refusal is one reason of a fixed vocabulary (REASONS; the counts stay bounded under any
flood), with a detail for the log. Nothing here allocates from a size the message claims.
"""

from __future__ import annotations

from typing import Any

import torch

from mpsl.actions import Msg, Task, TriggerKey
from mpsl.data import micro_batch_count, micro_batches
from mpsl.names import AGGREGATOR, OWNER
from mpsl.plan import Plan
from mpsl.schedule import iteration_tasks
from mpsl.topology import Topology
from mpsl.trace import Event
from mpsl.training import iterations_per_epoch, owner_samples, round_ends, smallest_micro_batch
from nodes.payloads import DTYPE as DTYPE
from nodes.payloads import SHAPE as SHAPE
from nodes.payloads import TENSORS as TENSORS
from nodes.payloads import Model, Spec, check_tensors

WINDOW = 2  # iterations or rounds ahead of the current one that a node still takes
PENDING_CAP = 256  # messages a node keeps for a later receive; more are dropped

KIND = "kind not taken"
TYPE = "type not taken"
SENDER = "wrong sender"
OWNER_ = "unknown owner"
META = "bad meta"
PART = "wrong part"
MB = "wrong micro-batch"
NO_TASK = "no task takes it"
LABELS = "labels out of range"
PAST_ITER = "past iteration"
AHEAD_ITER = "iteration too far ahead"
PAST_ROUND = "past round"
AHEAD_ROUND = "round too far ahead"
PENDING = "pending full"
# what a node finds against its own state, once the rules took a message
DUPLICATE = "duplicate"  # a micro-batch's ACT or GRAD, or an iteration's loss, delivered before
STALE = "stale or duplicate iteration"  # a compute node finished that iteration already
NOT_CURRENT = "not of this owner's current iteration"
ORDER = "out-of-order sync"
LEFT = "owner left the run"  # work of a data owner lost, arriving late
SETTINGS = "settings differ"  # a hello of other run settings, during the run
PRESENT = "hello of an owner still present"  # stale, or forged where security is off
REASONS = (KIND, TYPE, SENDER, OWNER_, META, PART, MB, NO_TASK, TENSORS, SHAPE, DTYPE, LABELS,
           PAST_ITER, AHEAD_ITER, PAST_ROUND, AHEAD_ROUND, PENDING, DUPLICATE, STALE,
           NOT_CURRENT, ORDER, LEFT, SETTINGS, PRESENT)

TAKES = {"owner": {Msg.ACT, Msg.GRAD, Msg.GLOBAL, Msg.CONTROL},
         "compute": {Msg.ACT, Msg.GRAD, Msg.CONTROL},
         "aggregator": {Msg.PARAMS, Msg.METRICS, Msg.CONTROL}}
REPORTS = ("saved", "rolled", "handover", "switched", "rates")  # switch: nodes.switch checks
CONTROLS = {"owner": {"start", "abort", "stop", "rollback", "switch", "handin"},
            "compute": {"start", "stop", "abort", "sync", "leave", "join", "skip", "rollback",
                        "switch", "handin"}, "aggregator": {"hello", "heartbeat", *REPORTS}}
IN_RUN = {"heartbeat", "rollback", "switch", "handin", *REPORTS}  # only a started run takes
SUMMARY_INTS = ("peak_rss_bytes", "peak_tensor_bytes", "state_bytes", "activation_peak_bytes",
                "rejected_messages", "refused_connections")

Refusal = tuple[str, str]  # (reason, detail)


def is_int(x: Any) -> bool:
    return type(x) is int


def _meta_ints(meta: dict[str, Any], keys: tuple[str, ...]) -> Refusal | None:
    bad = [k for k in keys if not is_int(meta.get(k))]
    return (META, f"{', '.join(bad)} missing or not an int") if bad else None


class Rules:
    """What the node `name` takes; the node keeps `iteration` (per owner), `syncs` (per owner)
    and `round` current as it goes."""

    def __init__(self, topo: Topology, plan: Plan, name: str) -> None:
        self.topo, self.plan, self.name = topo, plan, name
        self.owners = {o.index: o.name for o in topo.owners}
        if name == AGGREGATOR:
            self.role, self.parts, self.index = "aggregator", [], -1
        elif name in topo.chain:
            self.role, self.parts, self.index = "compute", plan.parts_on(name), -1
        else:
            self.index = topo.owner(name).index
            self.role, self.parts = "owner", plan.for_owner(self.index).parts_on(OWNER)
        self.model = Model(topo, plan)
        averages = self.role == "compute" and not plan.uniform  # per-owner plans: GLOBAL too
        self.takes = TAKES[self.role] | ({Msg.GLOBAL} if averages else set())
        self.samples = owner_samples(topo)
        t = topo.training
        self.batch_size, self.epochs = t.batch_size, t.epochs
        self.smallest = smallest_micro_batch(topo)
        self.per_epoch = [iterations_per_epoch(t, n) for n in self.samples]
        per_epoch_rounds = 1 if topo.mode == "sl" else len(round_ends(self.per_epoch,
                                                                       t.aggregate_every))
        self.rounds = self.epochs * per_epoch_rounds
        self.back = 1 if self.role == "compute" else 0  # iterations behind still taken
        self.iteration = dict.fromkeys(self.owners, -1)  # current (or latest) per owner
        self.syncs = dict.fromkeys(self.owners, 0)  # a compute node's next sync per owner
        self.round = 0  # the round the node waits for next
        self.active: set[int] | None = None  # a compute node's owners present (else all)
        self._tasks: dict[tuple[int, int], dict[TriggerKey, str]] = {}

    # the entry point ---------------------------------------------------------------------------
    def check(self, msg: Any, run_id: str = "") -> Refusal | None:
        """None if the node takes `msg` (a decoded nodes.wire.Message), else (reason, detail).

        `run_id` is the node's ("" before the start): hello and start only come before it.
        """
        kind = msg.kind
        if kind not in self.takes:
            return KIND, f"{kind} is not taken by a {self.role} node"
        if kind == Msg.CONTROL:
            return self._control(msg, run_id)
        if kind in (Msg.ACT, Msg.GRAD):
            return self._work(msg)
        if kind == Msg.GLOBAL:
            return self._global(msg)
        if kind == Msg.PARAMS:
            return self._params(msg)
        return self._metrics(msg)

    # CONTROL -----------------------------------------------------------------------------------
    def _control(self, msg: Any, run_id: str) -> Refusal | None:
        typ = msg.meta.get("type")
        if not isinstance(typ, str) or typ not in CONTROLS[self.role] \
                or (typ == "start" and run_id) or (typ in IN_RUN and not run_id):
            return TYPE, f"CONTROL {str(typ)[:40]!r} is not taken by a {self.role} node now"
        if typ == "hello":
            return self._hello(msg, run_id)
        if typ == "heartbeat":
            return None if msg.src != AGGREGATOR else (SENDER, "a heartbeat of the aggregator")
        if typ == "sync":
            return self._sync(msg)
        if typ in REPORTS:
            return self._recovery_report(msg, typ)
        if msg.src != AGGREGATOR:
            return SENDER, f"CONTROL {typ} not from the aggregator"
        if typ == "rollback":
            return self._rollback(msg)
        if typ in ("leave", "join", "skip"):
            bad = _meta_ints(msg.meta, ("round",))
            if bad is None and (msg.owner not in self.owners
                                or not 0 <= msg.meta["round"] < self.rounds):
                bad = META, f"{typ} of owner {msg.owner} at round {msg.meta['round']}"
            return bad
        resume = msg.meta.get("resume_round", 0)
        if typ == "start" and not (is_int(resume) and 0 <= resume <= self.rounds):
            return META, f"start at round {str(resume)[:20]}"
        return None

    def _rollback(self, msg: Any) -> Refusal | None:
        """A rollback names the round every node resumes at and the run's new wire id."""
        r, run = msg.meta.get("round"), msg.meta.get("run")
        if not (is_int(r) and 0 <= r < self.rounds) or not (
                isinstance(run, str) and 0 < len(run) <= 64 and run.isalnum()) \
                or type(msg.meta.get("params", False)) is not bool:
            return META, f"rollback to round {str(r)[:20]}"
        return None

    def _recovery_report(self, msg: Any, typ: str) -> Refusal | None:
        """A compute node saved a round (`saved`); a node rolled back (`rolled`)."""
        if msg.src not in self.topo.chain and (typ == "saved"
                                               or msg.src not in self.owners.values()):
            return SENDER, f"CONTROL {typ} from {msg.src}"
        r, redone = msg.meta.get("round"), msg.meta.get("redone", 0)
        if not (is_int(r) and r == msg.iter and 0 <= r <= self.rounds) or not (
                is_int(redone) and 0 <= redone <= max(self.per_epoch, default=0) * self.epochs):
            return META, f"{typ} of round {str(r)[:20]}"
        return None

    def _hello(self, msg: Any, run_id: str) -> Refusal | None:
        """Every node says hello before the run starts; an owner also when it rejoins, and a
        compute node when it restarts (with checkpoints)."""
        again = set(self.owners.values())
        if self.topo.failure.checkpoint:
            again |= set(self.topo.chain)
        if msg.src == AGGREGATOR or (run_id and msg.src not in again):
            return SENDER, f"a hello from {msg.src}" + (" during the run" if run_id else "")
        ok = isinstance(msg.meta.get("settings"), dict) and isinstance(
            msg.meta.get("digest"), str)
        return None if ok else (META, "hello without settings and digest")

    def _sync(self, msg: Any) -> Refusal | None:
        if msg.owner not in self.owners:
            return OWNER_, f"sync of owner {msg.owner}"
        prev = self.plan.placement[self.parts[0] - 1]
        sender = self.owners[msg.owner] if prev == OWNER else prev
        if msg.src != sender:
            return SENDER, f"sync from {msg.src}, expected {sender}"
        bad = _meta_ints(msg.meta, ("round", "samples"))
        if bad is not None:
            return bad
        if msg.meta["round"] != msg.iter or msg.meta.get("epoch_end") not in (None, True, False):
            return META, "sync round is not its iteration, or epoch_end not a bool"
        if msg.meta["samples"] != self.samples[msg.owner]:
            return META, f"sync of {msg.meta['samples']} samples"
        return self._round_window(msg.iter, self.syncs[msg.owner])

    def _round_window(self, r: int, current: int) -> Refusal | None:
        if r < current:
            return PAST_ROUND, f"round {r}, now {current}"
        if r > current + WINDOW or r >= self.rounds:
            return AHEAD_ROUND, f"round {r}, now {current} of {self.rounds}"
        return None

    # ACT and GRAD ------------------------------------------------------------------------------
    def _work(self, msg: Any) -> Refusal | None:
        k = msg.owner
        if k not in self.owners or (self.role == "owner" and k != self.index):
            return OWNER_, f"owner {k}"
        bad = _meta_ints(msg.meta, ("part", "n_mb", "batch", "epoch"))
        if bad is not None:
            return bad
        part, n_mb, batch = msg.meta["part"], msg.meta["n_mb"], msg.meta["batch"]
        if part not in self.parts:
            return PART, f"part {part}"
        last = self.epochs * self.per_epoch[k]
        if not 0 <= msg.iter < last:
            return AHEAD_ITER if msg.iter >= last else PAST_ITER, f"iteration {msg.iter} of {last}"
        if msg.meta["epoch"] != msg.iter // self.per_epoch[k] or batch != self._batch(k, msg.iter) \
                or n_mb != micro_batch_count(batch, self.plan.micro_batches[k], self.smallest):
            return META, f"epoch {msg.meta['epoch']}, batch {batch}, n_mb {n_mb}"
        if not 0 <= msg.mb < n_mb:
            return MB, f"mb {msg.mb} of {n_mb}"
        want = self._sources(k, n_mb).get((Msg(msg.kind), part, msg.mb))
        if want is None:
            return NO_TASK, f"no task waits for {msg.kind} of part {part}, mb {msg.mb}"
        if msg.src != want:
            return SENDER, f"{msg.kind} from {msg.src}, expected {want}"
        size = micro_batches(batch, n_mb)[msg.mb]
        return check_tensors(msg.tensors, self._work_tensors(msg.kind, part, size, k)) \
            or self._labels(msg) or self._window(msg.owner, msg.iter)

    def _window(self, owner: int, it: int) -> Refusal | None:
        """Whether iteration `it` of `owner` is near the node's current one (checked last: a
        message with a fault of its own is refused for that fault, whenever it comes)."""
        if self.active is not None and owner not in self.active:
            return None  # an owner that left or rejoins: the compute node sorts it out
        now = self.iteration[owner]
        if it < now - self.back:
            return PAST_ITER, f"iteration {it}, now {now}"
        if it > now + WINDOW:
            return AHEAD_ITER, f"iteration {it}, now {now}"
        return None

    def _batch(self, owner: int, iteration: int) -> int:
        """Samples in the batch of `owner`'s `iteration` (the last of an epoch may be short)."""
        j = iteration % self.per_epoch[owner]
        return min(self.batch_size, self.samples[owner] - j * self.batch_size)

    def _sources(self, owner: int, n_mb: int) -> dict[TriggerKey, str]:
        key = (owner, n_mb)
        if key not in self._tasks:
            mine = self.plan.for_owner(owner)
            tasks: list[Task] = [t for t in iteration_tasks(mine, owner, n_mb)
                                 if t.node == self.name]
            self._tasks[key] = {t.key: t.trigger.src for t in tasks
                                if t.key is not None and t.trigger is not None}
        return self._tasks[key]

    def _work_tensors(self, kind: str, part: int, size: int, owner: int) -> dict[str, Spec]:
        model = self.model.of(self.plan.for_owner(owner))
        if kind == Msg.GRAD:
            return {"g": ((size, *model.part_out[part]), torch.float32)}
        want = {"x": ((size, *model.part_in[part]), torch.float32)}
        if not self.plan.labels_local:
            want["y"] = ((size,), torch.int64)
        return want

    def _labels(self, msg: Any) -> Refusal | None:
        y = msg.tensors.get("y")
        if y is not None and y.numel() and not (int(y.min()) >= 0 and int(y.max())
                                                < self.model.classes):
            return LABELS, f"labels in [{int(y.min())}, {int(y.max())}]"
        return None

    # PARAMS, GLOBAL and METRICS ----------------------------------------------------------------
    def _global(self, msg: Any) -> Refusal | None:
        if msg.src != AGGREGATOR:
            return SENDER, f"GLOBAL from {msg.src}"
        if msg.owner != self.index or msg.meta.get("round") != msg.iter:
            return META, f"GLOBAL for owner {msg.owner}, round {msg.meta.get('round')!r}"
        owners = self.plan.owners_on(self.name) if self.role == "compute" else [self.index]
        want = {k: v for o in owners for k, v in self._params_of(o, self.parts).items()}
        return self._round_window(msg.iter, self.round) or check_tensors(msg.tensors, want)

    def _params_of(self, owner: int, parts: list[int]) -> dict[str, Spec]:
        """The parameter names, shapes and dtypes of `parts` under `owner`'s plan."""
        return self.model.of(self.plan.for_owner(owner)).params_of(parts)

    def _params(self, msg: Any) -> Refusal | None:
        owners = {name: k for k, name in self.owners.items()}
        if msg.src in owners:
            k = owners[msg.src]
            bad = _meta_ints(msg.meta, ("round", "samples"))
            if bad is None and (msg.owner != k or msg.meta["samples"] != self.samples[k]
                                or type(msg.meta.get("epoch_end")) is not bool):
                bad = META, f"PARAMS of owner {msg.owner}, samples {msg.meta['samples']}"
            parts = self.plan.for_owner(k).parts_on(OWNER)
        elif msg.src in self.topo.chain:
            parts, k = self.plan.parts_on(msg.src), msg.owner  # per-owner plans: owner's part
            bad = _meta_ints(msg.meta, ("round", "part"))
            if bad is None and msg.meta["part"] != parts[0]:
                bad = PART, f"PARAMS of part {msg.meta['part']} from {msg.src}"
            if bad is None and not self.plan.uniform and k not in self.plan.owners_on(msg.src):
                bad = OWNER_, f"PARAMS of owner {k} from {msg.src}"
        else:
            return SENDER, f"PARAMS from {msg.src}"
        if bad is None and msg.meta["round"] != msg.iter:
            bad = META, "PARAMS round is not its iteration"
        return bad or self._round_window(msg.iter, self.round) or check_tensors(
            msg.tensors, self._params_of(k, parts))

    def _metrics(self, msg: Any) -> Refusal | None:
        typ = msg.meta.get("type")
        if msg.src == AGGREGATOR:
            return SENDER, "METRICS from the aggregator"
        if msg.tensors:
            return TENSORS, "METRICS with tensors"
        if typ == "summary":
            return self._summary(msg)
        if typ != "loss":
            return TYPE, f"METRICS {str(typ)[:40]!r}"
        k = msg.owner
        if k not in self.owners:
            return OWNER_, f"loss of owner {k}"
        last = self.plan.for_owner(k).placement[-1]
        sender = self.owners[k] if last == OWNER else last
        if msg.src != sender:
            return SENDER, f"loss from {msg.src}, expected {sender}"
        bad = _meta_ints(msg.meta, ("epoch", "samples"))
        if bad is not None:
            return bad
        loss = msg.meta.get("loss")
        if not 0 <= msg.iter < self.epochs * self.per_epoch[k]:
            return AHEAD_ITER, f"loss of iteration {msg.iter}"
        if type(loss) not in (int, float) or msg.meta["epoch"] != msg.iter // self.per_epoch[k] \
                or msg.meta["samples"] != self._batch(k, msg.iter):
            return META, f"loss {loss!r} of epoch {msg.meta['epoch']}"
        return None

    def _summary(self, msg: Any) -> Refusal | None:
        m = msg.meta
        bad = _meta_ints(m, SUMMARY_INTS)
        if bad is not None:
            return bad
        dropped, events = m.get("dropped"), m.get("events")
        if m.get("node") != msg.src or not isinstance(dropped, dict) \
                or not all(is_int(v) for v in dropped.values()) or not isinstance(events, list):
            return META, "summary without node, dropped or events"
        for row in events:
            if not _event_row(row):
                return META, f"summary event {str(row)[:80]}"
        return None


def _event_row(row: Any) -> bool:
    """Whether `row` is an Event row (mpsl.trace.events_to_rows)."""
    if not isinstance(row, list) or len(row) != len(Event.__dataclass_fields__):
        return False
    strs, opt_ints, times, nbytes = row[:3], row[3:6], row[6:8], row[8]
    return (all(isinstance(s, str) for s in strs)
            and all(v is None or is_int(v) for v in opt_ints)
            and all(type(t) in (int, float) for t in times) and is_int(nbytes))
