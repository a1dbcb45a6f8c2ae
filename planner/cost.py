"""The cost model: a discrete-event simulation of the schedule's tasks for every data owner.

Each owner's iterations come from `mpsl.schedule.iteration_tasks` (the plan's schedule, gpipe
or 1f1b) and every node runs them by the one execution rule, `mpsl.taskqueue.TaskQueue`: a
triggered task is ready once its message has arrived and the barriers before it on that node
are done; a barrier once every earlier task of its owner on that node is done; an idle
processor runs the ready task whose message arrived first (ties: lower owner index, then
readiness order). Actions run back to back: F and B take the node's profile time for the micro-
batch size, SEND takes no processor time and queues the message on its link (an ACT carries
the bytes at the cut after the part that made it, with the labels when they are shared, a GRAD
those at the cut before it), STEP the optimizer time of its layers plus the profile's `step_s`
per part it steps, and `wake_step_s` more on an emulated device (`Profile.step`). The first F
or B of a task that starts on an idle processor, or on another owner's model copy than the
task before, costs the profile's wake-up time more; on an emulated device (compute_scale > 1,
which sleeps after every action) every F and B does. A link sends one message at a time in
queue order, taking bytes*8/rate, and delivers it `latency` later; a message without tensors
is `HEADER_BYTES`.

Besides ACT and GRAD, every message of training is modelled: the node that runs the last part
reports each iteration's loss (METRICS) to the aggregator once its tasks of that iteration
are done. Owners start their next iteration at their STEP, or, at the end of an aggregation
round (`mpsl.training.round_ends`), upload PARAMS to the aggregator and send a `sync` CONTROL
to the first compute node, which every compute node forwards at once down the chain. The
aggregator averages once every owner's PARAMS are in (K x parameter bytes at
AVERAGE_BYTES_PER_S) and sends GLOBAL back; an owner starts its next round when GLOBAL
arrives. A compute node averages its model copies, one per owner (`AVG{part}`, copies x its
parameter bytes at the same rate), once the syncs of the round from every owner are in and it
is free, and only then runs tasks of the next round; at the epoch's end every compute node
sends its part's PARAMS to the aggregator. In SL the owners take turns: the aggregator sends
the owner part (GLOBAL) to each in turn, which trains its epoch and hands it back (PARAMS);
compute nodes keep one copy. The epoch ends when every owner has its last GLOBAL (in SL: the
last PARAMS is in) and every node has run its last task and averaging; a message that starts
nothing (METRICS, a compute node's PARAMS) does not lengthen it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from mpsl.names import AGGREGATOR
from mpsl.plan import Plan
from mpsl.topology import Topology
from mpsl.trace import Event
from planner.engine import Engine
from planner.estimate import Estimate, bottleneck_of
from planner.gcpause import paused
from planner.profile import Profile
from planner.resources import (
    HEADER_BYTES,
    PlanningError,
    copies_on_compute,
    node_profiles,
    state_factor,
)

__all__ = ["Estimate", "simulate"]


def simulate(
    topo: Topology,
    plan: Plan,
    profiles: Mapping[str, Profile] | Profile,
    *,
    epochs: int = 1,
    iterations: int | None = None,
    samples: list[int] | None = None,
    record: bool = False,
    steady: bool = True,
    memory: bool = True,
) -> Estimate:
    """Simulate one epoch of `plan` on `topo` (every epoch is alike: each ends at a barrier).

    `profiles` is this host's profile (scaled per node by compute_scale) or a mapping of node
    name to profile (`"*"`: this host's). `iterations` replaces the data's iterations per epoch
    (full batches), `samples` the per-owner sample counts. With `record`, `events` holds the
    trace (`mpsl.trace.Event`s, as the runtime writes them) of all `epochs`: the epoch's
    events repeated, shifted by the epoch's time, iterations counted on per owner and round
    ids by the rounds per epoch. With `steady` (not when recording), whole periods of the
    epoch's steady state are added arithmetically (`planner.steady`); `steady=False` simulates
    every event. `memory=False` leaves `memory_bytes` and `memory_detail` empty (their peaks
    are read from the whole trace of buffers: a tenth of the time).
    """
    if len(plan.micro_batches) != len(topo.owners):
        raise PlanningError(f"the plan has N for {len(plan.micro_batches)} owners, the topology"
                            f" has {len(topo.owners)}")
    if iterations is not None and iterations < 1 or epochs < 1:
        raise PlanningError(f"need iterations >= 1 and epochs >= 1, got {iterations}, {epochs}")
    profs = node_profiles(topo, profiles, measure=False)
    layers = next(iter(profs.values())).num_layers
    if layers != plan.num_layers:
        raise PlanningError(f"the profile has {layers} layers, the plan {plan.num_layers}")
    with paused():  # the cyclic collector (planner.gcpause): set-up and memory too
        sim = Engine(topo, plan, profs, iterations, samples, record, steady)
        sim.run()
        peaks, detail = _memory(topo, sim) if memory else ({}, {})
    epoch_s = sim.last
    busy = dict(sim.busy)
    return Estimate(
        iteration_s=math.fsum(sim.it_times) / max(1, len(sim.it_times)),
        epoch_s=epoch_s,
        total_s=epoch_s * epochs,
        busy_s=busy,
        memory_bytes=peaks,
        bottleneck=bottleneck_of(busy),
        iterations={n: len(b) for n, b in zip(sim.onames, sim.work.batches)},
        epochs=epochs,
        memory_detail=detail,
        events=_epochs(sim, epoch_s, epochs) if record else None,
        steady_periods=0 if sim.steady is None else sim.steady.periods,
    )


def _memory(topo: Topology, sim: Engine) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Peak bytes per node, and its parameter state, activation and buffer peaks."""
    copies = copies_on_compute(topo, sim.K)
    factor = state_factor(topo)
    memory: dict[str, int] = {}
    detail: dict[str, dict[str, int]] = {}
    for name, node in sim.nodes.items():
        static = node.param_bytes * factor * (1 if node.owner is not None else copies)
        peak, acts, bufs = node.mem.peaks()
        memory[name] = static + peak
        detail[name] = {"params": static, "activations": acts, "buffers": bufs}
    agg = sim.owner_params + (1 if sim.sl else sim.K) * (sim.owner_params + HEADER_BYTES)
    memory[AGGREGATOR] = agg
    detail[AGGREGATOR] = {"params": sim.owner_params, "activations": 0, "buffers": agg}
    return memory, detail


def _epochs(sim: Engine, epoch_s: float, epochs: int) -> list[Event]:
    """The epoch's events, then each later epoch's: shifted by the epoch, with iterations
    counted on per owner and round ids by the rounds per epoch."""
    events = list(sim.events)
    its = [len(b) for b in sim.work.batches]
    rounds = sim.work.rounds
    for i in range(1, epochs):
        events += [e.shifted(i * epoch_s, 0 if e.owner is None else i * its[e.owner],
                             i * rounds) for e in sim.events]
    return events
