"""The cost model: a discrete-event simulation of the schedule's tasks for every data owner.

Each owner's iterations come from `mpsl.schedule.iteration_tasks` and run by its execution
rule: a triggered task is ready once its message has arrived and the barriers before it on that
node are done; a barrier once every earlier task of its owner on that node is done; an idle
processor runs the ready task whose message arrived first (ties: lower owner index, then
readiness order). Actions run back to back: F and B take the node's profile time for the micro-
batch size, SEND takes no processor time and queues the message on its link, STEP the optimizer
time of its layers plus the profile's `step_s` per part it steps, and `wake_step_s` more on an
emulated device (`Profile.step`). The first F or B of a task that starts on an idle processor,
or on another owner's model copy than the task before, costs the profile's wake-up time more; on
an emulated device (compute_scale > 1, which sleeps after every action) every F and B does. A
link sends one message at a time in queue order, taking bytes*8/rate, and delivers it `latency`
later. Owners start their next iteration at their STEP, or, at an aggregation, when GLOBAL
arrives: every owner uploads PARAMS to the aggregator, which averages (K x parameter bytes of
memory traffic) and sends GLOBAL back; compute nodes average their K copies once all of the
round's tasks are done and before any of the next round's. In SL the owners take turns,
handing their parameters on through the aggregator, and there is one copy.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

from mpsl.plan import Plan
from mpsl.topology import Topology
from planner.engine import Engine
from planner.estimate import Estimate, SimEvent, bottleneck_of
from planner.profile import Profile
from planner.resources import (
    AGGREGATOR,
    HEADER_BYTES,
    PlanningError,
    copies_on_compute,
    node_profiles,
    state_factor,
)

__all__ = ["Estimate", "SimEvent", "simulate"]


def simulate(
    topo: Topology,
    plan: Plan,
    profiles: Mapping[str, Profile] | Profile,
    *,
    epochs: int = 1,
    iterations: int | None = None,
    samples: list[int] | None = None,
    record: bool = False,
) -> Estimate:
    """Simulate one epoch of `plan` on `topo` (every epoch is alike: each ends at a barrier).

    `profiles` is this host's profile (scaled per node by compute_scale) or a mapping of node
    name to profile (`"*"`: this host's). `iterations` replaces the data's iterations per epoch
    (full batches), `samples` the per-owner sample counts. With `record`, `events` holds
    `(resource, kind, owner, iter, mb, t0, t1)`: kind `0F`/`1B` (part, pass), `STEP`, `AVG`,
    or a message (`ACT`, `GRAD`, `PARAMS`, `GLOBAL`) for a link's transmission.
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
    sim = Engine(topo, plan, profs, iterations, samples, record)
    sim.run()
    epoch_s = sim.end
    copies = copies_on_compute(topo, sim.K)
    factor = state_factor(topo)
    memory: dict[str, int] = {}
    detail: dict[str, dict[str, int]] = {}
    for name, node in sim.nodes.items():
        parts = plan.parts_on("owner" if name in sim.onames else name)
        params = sum(node.prof.param_bytes(plan.parts[p]) for p in parts)
        static = params * factor * (1 if name in sim.onames else copies)
        peak, acts, bufs = _peaks(node.mem)
        memory[name] = static + peak
        detail[name] = {"params": static, "activations": acts, "buffers": bufs}
    agg = sim.owner_params + (1 if sim.sl else sim.K) * (sim.owner_params + HEADER_BYTES)
    memory[AGGREGATOR] = agg
    detail[AGGREGATOR] = {"params": sim.owner_params, "activations": 0, "buffers": agg}
    events = sim.events
    if record and epochs > 1:
        events = [e._replace(t0=e.t0 + i * epoch_s, t1=e.t1 + i * epoch_s)
                  for i in range(epochs) for e in sim.events]
    busy = dict(sim.busy)
    return Estimate(
        iteration_s=math.fsum(sim.it_times) / max(1, len(sim.it_times)),
        epoch_s=epoch_s,
        total_s=epoch_s * epochs,
        busy_s=busy,
        memory_bytes=memory,
        bottleneck=bottleneck_of(busy),
        iterations={n: len(b) for n, b in zip(sim.onames, sim.batches)},
        epochs=epochs,
        memory_detail=detail,
        events=events if record else None,
    )


def _peaks(mem: list[tuple[float, int, int]]) -> tuple[int, int, int]:
    """Peak of activations + buffers together, and of each alone (frees first at a tie)."""
    mem.sort(key=lambda e: (e[0], e[1]))
    total = acts = bufs = 0
    peak = peak_a = peak_b = 0
    for _, d, cat in mem:
        total += d
        if cat:
            bufs += d
            peak_b = max(peak_b, bufs)
        else:
            acts += d
            peak_a = max(peak_a, acts)
        peak = max(peak, total)
    return peak, peak_a, peak_b
