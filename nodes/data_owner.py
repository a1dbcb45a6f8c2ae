"""The data owner: holds its partition and labels, runs the first part (and the last when labels
are local), executes its tasks through the task queue, and takes part in aggregation."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from mpsl.actions import Msg, TriggerKey
from mpsl.data import batches, load_dataset, micro_batch_count, micro_batches
from mpsl.models.split import full_key
from mpsl.names import AGGREGATOR, OWNER
from mpsl.plan import Plan
from mpsl.privacy import UPDATE, NoiseLayer, generator, node_seed, privatize
from mpsl.schedule import iteration_tasks
from mpsl.taskqueue import TaskQueue
from mpsl.topology import Topology
from mpsl.training import (
    iterations_per_epoch,
    mode_round_ends,
    owner_indices,
    round_ends,
    round_start,
)
from nodes.admission import DUPLICATE, NO_TASK, NOT_CURRENT, Rules
from nodes.checkpoint import CheckpointError
from nodes.executor import IterationState, message_key, payload_fits, run_task, trigger_sources
from nodes.node import Node, NodeError, RunOver
from nodes.parts import PartRunner, make_copies
from nodes.recovery import Rollback, RoundStore, copies_state, load_copies_state
from nodes.switch import receive_switching
from nodes.throughput import uplink_meta
from nodes.wire import Message

log = logging.getLogger(__name__)


class DataOwner(Node):
    ends_on_stop = True
    rules: Rules  # what this role takes (nodes.admission)

    def __init__(self, topo: Topology, plan: Plan, index: int) -> None:
        spec = topo.owner(index)
        super().__init__(topo, plan, spec.name, spec.compute_scale)
        self.index = index
        indices = owner_indices(topo)
        ds = topo.dataset
        x, y = load_dataset(ds.name, ds.root, "train", **ds.options)
        self.x, self.y = x[indices[index]], y[indices[index]]
        self.samples = len(indices[index])
        self.iterations = [iterations_per_epoch(topo.training, len(p)) for p in indices]
        self.n = plan.micro_batches[index]
        self.mine = mine = plan.for_owner(index)  # its own plan (its cuts; FL: every layer)
        self.parts = mine.parts_on(OWNER)
        self.copies = make_copies(topo, plan, self.parts, [index])
        self.noise_seed = node_seed(topo.privacy)  # secret unless privacy.noise_seed
        self.runner = PartRunner(self.copies, mine.num_parts - 1, self.meter,
                                 NoiseLayer.of(topo.privacy, self.noise_seed))
        for c in self.copies.values():
            self.meter.exclude(c.module.parameters())
        self.reference = self.owner_parameters()  # the last global model, for the deltas
        self.queue = TaskQueue()
        chain_ends = {mine.placement[1], mine.placement[-2]} if mine.num_parts > 1 else set()
        for dst in sorted(chain_ends - {OWNER}):  # the first compute node, and the last in a U
            self.connect(dst, spec.uplink_mbps, spec.latency_ms)
        self.connect(AGGREGATOR, spec.uplink_mbps, spec.latency_ms)
        self.rules = Rules(topo, plan, spec.name)  # iteration and round: set as the run goes
        self.store = RoundStore(spec.name, "", None)  # its rounds' states, in memory
        if topo.failure.checkpoint:
            self.store.save(-1, copies_state(self.copies), "")

    # one iteration ---------------------------------------------------------------------------
    def iteration(self, epoch: int, it: int, idx: np.ndarray) -> None:
        """Iteration `it` (counted over the run) on the batch `idx`: the owner's tasks, run as
        the task queue releases them, then the loss report when labels are local."""
        xb, yb = self.x[idx], self.y[idx]
        batch = len(idx)
        n_mb = micro_batch_count(batch, self.n, self.rules.smallest)  # as the nodes check it
        sizes = micro_batches(batch, n_mb)
        st = IterationState(self.index, it, epoch, batch, n_mb)
        self.rules.iteration[self.index] = it
        for mb, (xs, ys) in enumerate(zip(torch.split(xb, sizes), torch.split(yb, sizes))):
            st.inputs[(0, mb)] = xs
            st.labels[mb] = ys
        tasks = [t for t in iteration_tasks(self.mine, self.index, n_mb) if t.node == self.name]
        sources = trigger_sources(tasks)
        self.queue.add(self.index, it, tasks, time.time())
        shared = not self.mine.labels_local
        deadline = time.monotonic() + self.timeout
        while True:
            entry = self.queue.pop()
            if entry is None:
                silent = sorted({e.task.trigger.src for e in self.queue.stuck()
                                 if e.task.trigger is not None})  # named if the wait times out
                what = f"ACT/GRAD of iteration {it} from {', '.join(silent)}"
                if self.take(self.recv(lambda m: m.kind in (Msg.ACT, Msg.GRAD), what,
                                       deadline), st, sources):
                    deadline = time.monotonic() + self.timeout
                continue
            run_task(self, self.runner, entry.task, st, shared)
            if self.queue.finish(entry, time.time()):
                break
        self._report_loss(epoch, it, batch)

    def take(self, msg: Message, st: IterationState, sources: dict[TriggerKey, str]) -> bool:
        """Deliver an ACT or GRAD to the task that waits for it; drop it if none does."""
        key = message_key(msg)
        if msg.owner != self.index or msg.iter != st.iteration:
            self.drop(msg, NOT_CURRENT)
        elif key is None or sources.get(key) != msg.src or not payload_fits(msg):
            self.drop(msg, NO_TASK)
        elif self.queue.deliver(self.index, st.iteration, key, time.time(), msg) is None:
            self.drop(msg, DUPLICATE)
        else:
            st.absorb(msg)
            return True
        return False

    def _report_loss(self, epoch: int, it: int, batch: int) -> None:
        if not self.mine.labels_local:
            return  # the last compute node computes the loss and reports it
        loss = sum(v for (_, i, v) in self.runner.losses if i == it)
        self.runner.losses.clear()
        self.send(AGGREGATOR, Msg.METRICS, owner=self.index, iteration=it, type="loss",
                  epoch=epoch, loss=loss, samples=batch)

    # aggregation -----------------------------------------------------------------------------
    def upload(self, round_id: int, epoch_end: bool) -> None:
        """PARAMS to the aggregator, then a sync down the chain so compute nodes average."""
        if self.topo.failure.checkpoint:  # where a rollback to this round's end starts
            self.store.save(round_id, copies_state(self.copies), "")
        state: dict[str, torch.Tensor] = {}
        for p in self.parts:
            state.update(self.copies[(self.index, p)].full_state())
        privacy = self.topo.privacy
        if privacy.clip_norm is not None:  # classic DP (mpsl.privacy): clipped, noised delta
            noise = generator(self.noise_seed, UPDATE, self.index, round_id)
            state, norm = privatize(state, self.reference, privacy.clip_norm,
                                    privacy.noise_multiplier, noise)
            log.debug("%s: round %d update norm %.4g (clip %g)", self.name, round_id, norm,
                      privacy.clip_norm)
        self.send(AGGREGATOR, Msg.PARAMS, owner=self.index, iteration=round_id, tensors=state,
                  round=round_id, samples=self.samples, epoch_end=epoch_end,
                  **uplink_meta(self.topo, self.name, self.events))
        if self.mine.num_parts > 1:
            self.send(self.mine.placement[1], Msg.CONTROL, owner=self.index,
                      iteration=round_id, type="sync", round=round_id, samples=self.samples,
                      epoch_end=epoch_end)

    def download(self, round_id: int) -> None:
        self.rules.round = round_id
        msg = receive_switching(self, lambda m: m.kind == Msg.GLOBAL and m.iter == round_id,
                                f"GLOBAL of round {round_id} from the aggregator")
        for p in self.parts:
            self.copies[(self.index, p)].load_full_state(msg.tensors)
        self.reference = self.owner_parameters()

    def owner_parameters(self) -> dict[str, torch.Tensor]:
        """A copy of the parameters of this owner's parts (no buffers) when its updates are
        clipped, under the whole model's keys; else nothing."""
        params: dict[str, torch.Tensor] = {}
        if self.topo.privacy.clip_norm is None:
            return params
        for p in self.parts:
            c = self.copies[(self.index, p)]
            params.update((full_key(c.start, k), v.detach().clone())
                          for k, v in c.module.named_parameters())
        return params

    # the run ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Train every round from the start, or, restarted after a loss, from the round the
        aggregator lets it rejoin at, with the global model of the round before."""
        resume = int(self.join().get("resume_round", 0))
        while True:
            try:
                if resume and self.topo.mode != "sl":
                    self.download(resume - 1)
                self.train(resume)
            except RunOver as over:  # a straggler: its rounds left would all come late
                log.info("%s", over)
            except Rollback as back:  # a compute node or the aggregator restarted
                self.switch_run(back.run)
                self.roll_back(back.round_id)
                resume = back.round_id
                continue
            break
        state = sum(c.state_bytes() for c in self.copies.values())
        self.send(AGGREGATOR, Msg.METRICS, trace=False, **self.summary(state))

    def roll_back(self, resume: int) -> None:
        """Go back to the end of round `resume - 1` with nothing in flight (the aggregator
        sends that round's global model again), and tell the aggregator."""
        try:
            state = self.store.load(resume - 1, "")
        except CheckpointError as err:
            raise NodeError(f"{self.name}: cannot roll back: {err}") from None
        load_copies_state(self.copies, state, f"{self.name}'s round {resume - 1}")
        self.queue = TaskQueue()
        self.runner.forget_all()
        ends = mode_round_ends(self.topo.mode, self.iterations,
                               self.topo.training.aggregate_every)
        first = round_start(self.iterations[self.index], ends, resume)
        redone = max(0, self.rules.iteration[self.index] + 1 - first)  # started since
        log.info("%s: rolled back to the end of round %d (%d iteration(s) to redo)", self.name,
                 resume - 1, redone)
        self.send(AGGREGATOR, Msg.CONTROL, iteration=resume, type="rolled", round=resume,
                  redone=redone, trace=False)

    def train(self, resume: int) -> None:
        """Every round from `resume` on: its iterations, the upload, the download."""
        t = self.topo.training
        ends = round_ends(self.iterations, t.aggregate_every)
        mine = self.iterations[self.index]
        for epoch in range(t.epochs):
            order = batches(self.samples, t.batch_size, t.seed, epoch)[:mine]
            if self.topo.mode == "sl":
                if epoch < resume:
                    continue
                self.download(epoch)  # our turn: the previous owner's part
                for j, idx in enumerate(order):
                    self.iteration(epoch, epoch * mine + j, idx)
                self.upload(epoch, epoch_end=True)
                continue
            done = 0
            for r, end in enumerate(ends):
                round_id = epoch * len(ends) + r
                if round_id >= resume:
                    for j in range(done, min(end, len(order))):
                        self.iteration(epoch, epoch * mine + j, order[j])
                    self.upload(round_id, epoch_end=r == len(ends) - 1)
                    self.download(round_id)
                done = max(done, min(end, len(order)))
