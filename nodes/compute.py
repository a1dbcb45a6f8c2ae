"""A compute node: runs one middle part with a copy per data owner, serving work oldest first."""

from __future__ import annotations

from mpsl.plan import Plan
from mpsl.schedule import Task, iteration_tasks
from mpsl.topology import OWNER, Topology
from nodes.executor import IterationState, run_task, trigger_key
from nodes.node import AGGREGATOR, Node
from nodes.parts import PartRunner, make_copies, weighted_average
from nodes.wire import Kind, Message


class ComputeNode(Node):
    def __init__(self, topo: Topology, plan: Plan, name: str) -> None:
        spec = topo.compute(name)
        super().__init__(topo, plan, name, spec.compute_scale)
        (self.part,) = plan.parts_on(name)
        self.owners = [o.index for o in topo.owners]
        self.shared = topo.mode == "sl"  # SL: one server-side model that owners take turns on
        self.copies = make_copies(topo, plan, [self.part], self.owners, shared=self.shared)
        self.runner = PartRunner(self.copies, plan.num_parts - 1, self.meter)
        for c in self.copies.values():
            self.meter.exclude(c.module.parameters())
        self.prev = plan.placement[self.part - 1]
        self.next = plan.placement[self.part + 1] if self.part + 1 < plan.num_parts else None
        for neighbour in {self.prev, self.next} - {None}:
            if neighbour == OWNER:
                for o in topo.owners:
                    self.connect(o.name, o.downlink_mbps, o.latency_ms)
            else:
                self.connect(neighbour, topo.links.compute_mbps, topo.links.compute_latency_ms)
        self.connect(AGGREGATOR, None)
        self.states: dict[tuple[int, int], IterationState] = {}
        self._tasks: dict[tuple[int, int], dict[tuple[str, int, int], Task]] = {}
        self.synced: dict[int, dict[int, int]] = {}  # round -> owner -> samples
        self.held: list[Message] = []  # work of owners waiting for this round's averaging

    def task_for(self, msg: Message, n_mb: int) -> Task:
        key = (msg.owner, n_mb)
        if key not in self._tasks:
            mine = [t for t in iteration_tasks(self.plan, msg.owner, n_mb) if t.node == self.name]
            self._tasks[key] = {(t.trigger.msg, t.trigger.part, t.trigger.mb): t for t in mine}
        try:
            return self._tasks[key][trigger_key(msg)]
        except KeyError:
            raise ValueError(f"{self.name}: no task for {msg.kind} part {msg.meta.get('part')} "
                             f"mb {msg.mb} from {msg.src}") from None

    def handle(self, msg: Message) -> None:
        key = (msg.owner, msg.iter)
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = IterationState.from_message(msg)
        st.absorb(msg)
        task = self.task_for(msg, st.n_mb)
        if run_task(self, self.runner, task, st, not self.plan.labels_local):
            del self.states[key]
            if self.part == self.plan.num_parts - 1:
                self._report_loss(st)

    def _report_loss(self, st: IterationState) -> None:
        loss = sum(v for (o, i, v) in self.runner.losses if o == st.owner and i == st.iteration)
        self.runner.losses = [e for e in self.runner.losses if e[0] != st.owner]
        self.send(AGGREGATOR, Kind.METRICS, owner=st.owner, iteration=st.iteration, type="loss",
                  epoch=st.epoch, loss=loss, samples=st.batch)

    def on_sync(self, msg: Message) -> None:
        """An owner finished a round: once all have, average the copies and release held work."""
        r = int(msg.meta["round"])
        self.synced.setdefault(r, {})[msg.owner] = int(msg.meta["samples"])
        if self.next not in (None, OWNER):
            self.send(self.next, Kind.CONTROL, owner=msg.owner, **msg.meta)
        if len(self.synced[r]) < len(self.owners):
            return
        counts = self.synced.pop(r)
        if not self.shared:
            with self.timed("AGG"):
                copies = [self.copies[(k, self.part)] for k in self.owners]
                avg = weighted_average([c.module.state_dict() for c in copies],
                                       [counts[k] for k in self.owners])
                for c in copies:
                    c.module.load_state_dict(avg)
        if msg.meta.get("epoch_end"):
            state = self.copies[(self.owners[0], self.part)].full_state()
            self.send(AGGREGATOR, Kind.PARAMS, tensors=state, round=r, part=self.part)
        held, self.held = self.held, []
        for m in held:
            self.dispatch(m)

    def dispatch(self, msg: Message) -> bool:
        """Route one message; False when the aggregator says stop."""
        if msg.kind == Kind.CONTROL:
            kind = msg.meta.get("type")
            if kind == "stop":
                return False
            if kind == "sync":
                self.on_sync(msg)
            return True
        if msg.kind not in (Kind.ACT, Kind.GRAD):
            raise ValueError(f"{self.name}: unexpected {msg.kind} from {msg.src}")
        if any(msg.owner in owners for owners in self.synced.values()):
            self.held.append(msg)  # this owner is already in the next round
        else:
            self.handle(msg)
        return True

    def run(self) -> None:
        self.join()
        while self.dispatch(self.recv_any("work from the owners or stop from the aggregator")):
            pass
        state = sum(c.state_bytes() for c in {id(c): c for c in self.copies.values()}.values())
        self.send(AGGREGATOR, Kind.METRICS, **self.summary(state))
