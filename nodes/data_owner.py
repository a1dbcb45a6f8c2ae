"""The data owner: holds its partition and labels, runs the first part (and the last when labels
are local), executes its schedule, and takes part in aggregation."""

from __future__ import annotations

import torch

from mpsl.data import batches, load_dataset, micro_batches, partition
from mpsl.plan import Plan
from mpsl.schedule import iteration_tasks
from mpsl.topology import OWNER, Topology
from nodes.executor import IterationState, run_task, trigger_key
from nodes.node import AGGREGATOR, Node, aggregation_rounds, iterations_per_epoch
from nodes.parts import PartRunner, make_copies
from nodes.wire import Kind


def owner_partitions(topo: Topology) -> tuple[torch.Tensor, torch.Tensor, list]:
    """The training set and every owner's indices: the same on every node that asks."""
    ds = topo.dataset
    x, y = load_dataset(ds.name, ds.root, "train", **ds.options)
    parts = partition(y, len(topo.owners), ds.partition, ds.alpha, ds.seed, ds.samples_per_owner)
    return x, y, parts


def owner_iterations(topo: Topology, parts: list) -> list[int]:
    t = topo.training
    return [iterations_per_epoch(len(p), t.batch_size, t.max_iterations) for p in parts]


class DataOwner(Node):
    def __init__(self, topo: Topology, plan: Plan, index: int) -> None:
        spec = topo.owner(index)
        super().__init__(topo, plan, spec.name, spec.compute_scale)
        self.index = index
        x, y, parts = owner_partitions(topo)
        self.x, self.y = x[parts[index]], y[parts[index]]
        self.iterations = owner_iterations(topo, parts)
        self.samples = len(parts[index])
        self.n = plan.micro_batches[index]
        self.parts = plan.parts_on(OWNER)
        self.copies = make_copies(topo, plan, self.parts, [index])
        self.runner = PartRunner(self.copies, plan.num_parts - 1, self.meter)
        for c in self.copies.values():
            self.meter.exclude(c.module.parameters())
        chain_ends = {plan.placement[1], plan.placement[-2]} if plan.num_parts > 1 else set()
        for dst in sorted(chain_ends - {OWNER}):  # the first compute node, and the last in a U
            self.connect(dst, spec.uplink_mbps, spec.latency_ms)
        self.connect(AGGREGATOR, spec.uplink_mbps, spec.latency_ms)

    # one iteration ---------------------------------------------------------------------------
    def iteration(self, epoch: int, it: int, idx) -> None:
        xb, yb = self.x[idx], self.y[idx]
        batch = len(idx)
        n_mb = min(self.n, batch)
        sizes = micro_batches(batch, n_mb)
        st = IterationState(self.index, it, epoch, batch, n_mb)
        for mb, (xs, ys) in enumerate(zip(torch.split(xb, sizes), torch.split(yb, sizes))):
            st.inputs[(0, mb)] = xs
            st.labels[mb] = ys
        tasks = [t for t in iteration_tasks(self.plan, self.index, n_mb) if t.node == self.name]
        shared = not self.plan.labels_local
        i = 0
        while i < len(tasks):
            if tasks[i].trigger is None:  # a barrier: everything before it is done
                run_task(self, self.runner, tasks[i], st, shared)
                i += 1
                continue
            j = i
            while j < len(tasks) and tasks[j].trigger is not None:
                j += 1
            waiting = {(t.trigger.msg, t.trigger.part, t.trigger.mb): t for t in tasks[i:j]}
            while waiting:  # triggered tasks run in the order their messages arrive
                msg = self.recv(
                    lambda m, w=waiting: m.owner == self.index and m.iter == it
                    and trigger_key(m) in w,
                    f"ACT/GRAD of iteration {it}",
                )
                st.absorb(msg)
                run_task(self, self.runner, waiting.pop(trigger_key(msg)), st, shared)
            i = j
        self._report_loss(epoch, it, batch)

    def _report_loss(self, epoch: int, it: int, batch: int) -> None:
        if not self.plan.labels_local:
            return  # the last compute node computes the loss and reports it
        loss = sum(v for (_, i, v) in self.runner.losses if i == it)
        self.runner.losses.clear()
        self.send(AGGREGATOR, Kind.METRICS, owner=self.index, iteration=it, type="loss",
                  epoch=epoch, loss=loss, samples=batch)

    # aggregation -----------------------------------------------------------------------------
    def upload(self, round_id: int, epoch_end: bool) -> None:
        """PARAMS to the aggregator, then a sync down the chain so compute nodes average."""
        state: dict[str, torch.Tensor] = {}
        for p in self.parts:
            state.update(self.copies[(self.index, p)].full_state())
        with self.timed("AGG", self.index):
            self.send(AGGREGATOR, Kind.PARAMS, owner=self.index, tensors=state,
                      round=round_id, samples=self.samples, epoch_end=epoch_end)
        if self.plan.num_parts > 1:
            self.send(self.plan.placement[1], Kind.CONTROL, owner=self.index, type="sync",
                      round=round_id, samples=self.samples, epoch_end=epoch_end)

    def download(self, round_id: int) -> None:
        msg = self.recv(lambda m: m.kind == Kind.GLOBAL and m.meta.get("round") == round_id,
                        f"GLOBAL of round {round_id}")
        for p in self.parts:
            self.copies[(self.index, p)].load_full_state(msg.tensors)

    # the run ---------------------------------------------------------------------------------
    def run(self) -> None:
        self.join()
        t = self.topo.training
        rounds = aggregation_rounds(self.iterations, t.aggregate_every)
        mine = self.iterations[self.index]
        it = 0
        for epoch in range(t.epochs):
            order = batches(self.samples, t.batch_size, t.seed, epoch)[:mine]
            if self.topo.mode == "sl":
                round_id = epoch
                self.download(round_id)  # our turn: the previous owner's part
                for idx in order:
                    self.iteration(epoch, it, idx)
                    it += 1
                self.upload(round_id, epoch_end=True)
                continue
            done = 0
            for r, end in enumerate(rounds):
                for idx in order[done:end]:
                    self.iteration(epoch, it, idx)
                    it += 1
                done = max(done, min(end, len(order)))
                round_id = epoch * len(rounds) + r
                self.upload(round_id, epoch_end=r == len(rounds) - 1)
                self.download(round_id)
        state = sum(c.state_bytes() for c in self.copies.values())
        self.send(AGGREGATOR, Kind.METRICS, **self.summary(state))
