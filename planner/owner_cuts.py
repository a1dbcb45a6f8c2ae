"""Per-owner cuts, chosen jointly: each group of owners alike its own cut tuple (issue 19).

A decomposition of the cut ILP (`planner.ilp`) by owner group. The cut model's terms of one
group (`planner.cutmodel`: its walk's busy times, its path, its aggregation, its memory)
depend on that group's cuts alone; groups meet only where they share a resource (a compute
node, its links from the chain, the aggregator), whose busy time is the sum of the groups'.
So every cut tuple of a group's space is priced once with the existing forms (a column), and
a small MILP picks one column per group:

    minimize T + A
    sum_c x[g, c] = 1                                      every group g
    T >= sum_g sum_c x[g, c] * load[g, c, r]               every resource r
    T >= sum_c x[g, c] * path[g, c]                        every group g
    A >= sum_c x[g, c] * agg[g, c]                         every group g
    sum_g sum_c x[g, c] * mem[g, c, n] <= cap[n]           every compute node n

(an owner's own memory cap removes the columns that do not fit). Why not one ILP with layer
binaries per group: the path terms of `planner.ilp` are start-time variables per task and
message, per group, and per-group contiguity multiplies them; a group's space is small
(C(L-1, P-1) tuples: 4 for vgg5 in PiPar, 165 for a 12-layer U-shape), and pricing it with
the forms keeps every term exactly the cut model's. A compute node's memory here is the sum
of each group's own (its parameters, and the activations it keeps), which counts a peak that
the single-plan model takes once per group: conservative. `evaluate` gives the objective of
any choice (for brute force and tests).

`separable_bound` is a lower bound on the simulated epoch of every per-owner plan: per
processor and link, the sum over owners of the least busy seconds over the owner's own cuts
and N; per owner, the least chain of its iterations' paths (`planner.boundterms`, no
wake-ups). `planner.bound` takes the least over one cut tuple for all, which per-owner plans
may beat.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pulp

from mpsl.names import AGGREGATOR, OWNER
from mpsl.plan import Plan, make_plan, owner_micro_batches
from mpsl.spec import ScheduleSpec
from mpsl.topology import Topology
from mpsl.training import iterations_per_epoch, owner_samples
from planner.bound import Bound, _renamed
from planner.boundterms import iteration_terms
from planner.cutmodel import _aggregation, _memory, _setting
from planner.milp import pulp_solver
from planner.profile import Profile
from planner.report import Candidate
from planner.resources import max_micro_batches, memory_caps
from planner.taskpath import iteration_graph
from planner.taskwalk import GroupWalk, OwnerGroup, Setting

MARGIN = 1e-9  # the bound is lowered by this share (float rounding)


@dataclass
class GroupColumns:
    """One group's cut tuples (`rows`) and, per row, its terms."""

    group: OwnerGroup
    owners: list[int]  # the owner indices it stands for
    rows: np.ndarray  # (R, P - 1) cut tuples
    loads: dict[str, np.ndarray]  # resource -> busy seconds per iteration, per row
    path: np.ndarray
    agg: np.ndarray
    memory: dict[str, np.ndarray]  # compute node -> its bytes for this group, per row


@dataclass
class JointChoice:
    """The cut tuple of every group, by owner, and the objective T + A."""

    cuts: dict[int, tuple[int, ...]]
    objective: float


def groups_of(topo: Topology, profs: Mapping[str, Profile], ns: Sequence[int],
              schedule: ScheduleSpec | None = None
              ) -> tuple[Setting, list[tuple[OwnerGroup, list[int]]]]:
    """The setting of the walks and the groups of owners alike (planner.cutmodel's), each
    split further by the cuts the topology pins for an owner; FL owners are left out."""
    setting, groups = _setting(topo, profs, ns, None, schedule or topo.schedule)
    out = []
    for g in groups:
        by_pin: dict[tuple[int, ...] | None, list[int]] = {}
        for name in g.members:
            k = int(name.removeprefix("owner"))
            by_pin.setdefault(topo.owners[k].cuts, []).append(k)
        for pin, ks in by_pin.items():
            if pin == ():
                continue
            rep = f"owner{ks[0]}"
            out.append((dataclasses.replace(g, rep=rep, index=ks[0],
                                            members=[f"owner{k}" for k in ks]), ks))
    return setting, out


def columns(topo: Topology, profs: Mapping[str, Profile], ns: Sequence[int],
            round_iterations: float | None = None, pinned: Sequence[int] = ()
            ) -> list[GroupColumns]:
    """Every group's columns: its cut tuples holding `pinned` (or the topology's cuts for
    the owner), each priced by the cut model's forms."""
    setting, groups = groups_of(topo, profs, ns)
    L = next(iter(profs.values())).num_layers
    P = len(setting.plan.placement)
    space = [c for c in itertools.combinations(range(1, L), P - 1) if set(pinned) <= set(c)]
    out = []
    for g, owners in groups:
        own = topo.owners[owners[0]].cuts
        rows = np.array([own] if own else space, dtype=np.int64).reshape(-1, P - 1)
        bounds = np.hstack([np.zeros((len(rows), 1), np.int64), rows,
                            np.full((len(rows), 1), L, np.int64)])
        walk = GroupWalk(setting, g)
        loads = {r: f.values(bounds) for r, f in walk.loads().items()}
        path = iteration_graph(walk).longest_all(bounds)
        agg = np.zeros(len(rows))
        if round_iterations:
            s = setting
            agg = _aggregation(g, s.plan.placement, s.links(g.rep, AGGREGATOR),
                               s.links(AGGREGATOR, g.rep), len(topo.owners),
                               round_iterations).values(bounds)
        forms, caps = _memory(topo, setting, [walk])
        keep = np.ones(len(rows), bool)
        if caps.get(g.rep) is not None:
            keep &= forms[g.rep].values(bounds) <= float(caps[g.rep] or 0.0) * (1 + 1e-9)
        memory = {n: f.values(bounds) for n, f in forms.items() if n in topo.chain}
        out.append(GroupColumns(g, owners, rows[keep], {r: v[keep] for r, v in loads.items()},
                                path[keep], agg[keep], {n: v[keep] for n, v in memory.items()}))
    return out


def evaluate(cols: list[GroupColumns], choice: Sequence[int],
             caps: Mapping[str, float | None]) -> float | None:
    """T + A of taking row `choice[g]` of every group; None if a compute node's memory is over
    its cap."""
    loads: dict[str, float] = {}
    mem: dict[str, float] = {}
    for c, i in zip(cols, choice):
        for r, v in c.loads.items():
            loads[r] = loads.get(r, 0.0) + float(v[i])
        for n, v in c.memory.items():
            mem[n] = mem.get(n, 0.0) + float(v[i])
    if any(caps.get(n) is not None and m > caps[n] * (1 + 1e-9)  # type: ignore[operator]
           for n, m in mem.items()):
        return None
    t = max([*loads.values(), *(float(c.path[i]) for c, i in zip(cols, choice))])
    return t + max(float(c.agg[i]) for c, i in zip(cols, choice))


def brute_force(cols: list[GroupColumns], caps: Mapping[str, float | None]
                ) -> tuple[float, tuple[int, ...]] | None:
    """The least `evaluate` over every choice, and that choice (None: none fits)."""
    best = None
    for choice in itertools.product(*(range(len(c.rows)) for c in cols)):
        v = evaluate(cols, choice, caps)
        if v is not None and (best is None or v < best[0]):
            best = (v, choice)
    return best


def solve(cols: list[GroupColumns], caps: Mapping[str, float | None]) -> JointChoice | None:
    """The MILP of the module's doc (CBC); None when no choice fits."""
    if any(len(c.rows) == 0 for c in cols):
        return None
    prob = pulp.LpProblem("owner_cuts", pulp.LpMinimize)
    x = [[prob.add_variable(f"x_{g}_{i}", 0, 1, cat="Binary") for i in range(len(c.rows))]
         for g, c in enumerate(cols)]
    T, A = prob.add_variable("T", lowBound=0), prob.add_variable("A", lowBound=0)
    prob += T + A
    for xs in x:
        prob += pulp.lpSum(xs) == 1
    resources = sorted({r for c in cols for r in c.loads})
    for r in resources:
        prob += pulp.lpSum(float(v) * xi for c, xs in zip(cols, x) if r in c.loads
                                for v, xi in zip(c.loads[r], xs)) <= T
    for c, xs in zip(cols, x):
        prob += pulp.lpSum(float(v) * xi for v, xi in zip(c.path, xs)) <= T
        prob += pulp.lpSum(float(v) * xi for v, xi in zip(c.agg, xs)) <= A
    for n in sorted({n for c in cols for n in c.memory}):
        if caps.get(n) is not None:
            prob += pulp.lpSum(float(v) * xi for c, xs in zip(cols, x) if n in c.memory
                               for v, xi in zip(c.memory[n], xs)) <= caps[n]
    prob.solve(pulp_solver("cbc"))
    if pulp.LpStatus[prob.status] != "Optimal":
        return None
    cuts: dict[int, tuple[int, ...]] = {}
    for c, xs in zip(cols, x):
        i = max(range(len(xs)), key=lambda j: xs[j].value() or 0.0)
        cuts.update((k, tuple(int(v) for v in c.rows[i])) for k in c.owners)
    return JointChoice(cuts, float(pulp.value(T) + pulp.value(A)))


def separable_bound(topo: Topology, profs: Mapping[str, Profile], batches: list[list[int]],
                    n_max: int, schedule: ScheduleSpec | None = None) -> float:
    """A lower bound on the simulated epoch of every per-owner plan (module doc): each owner
    its own cuts and N in 1..n_max; `batches` per owner, the batch size of every iteration."""
    setting, groups = groups_of(topo, profs, [1] * len(topo.owners), schedule)
    L = next(iter(profs.values())).num_layers
    P = len(setting.plan.placement)
    rows = np.array(list(itertools.combinations(range(1, L), P - 1)), np.int64).reshape(-1, P - 1)
    bounds = np.hstack([np.zeros((len(rows), 1), np.int64), rows,
                        np.full((len(rows), 1), L, np.int64)])
    busy: dict[str, float] = {}
    chain = 0.0
    for g, owners in groups:
        done: dict[tuple[int, ...], tuple[dict[str, float], float]] = {}  # by batches
        for k in owners:  # owners alike but in their batches share the terms (renamed)
            key = tuple(batches[k])
            if key not in done:
                own = topo.owners[k].cuts
                at = bounds if not own else np.array([[0, *own, L]], np.int64)
                done[key] = _least(setting, g, batches[k], n_max, at)
            least, least_path = done[key]
            for r, w in least.items():
                name = _renamed(r, g.rep, f"owner{k}")
                busy[name] = busy.get(name, 0.0) + w
            chain = max(chain, least_path)
    return max([chain, *busy.values()], default=0.0) * (1 - MARGIN)


def _least(setting: Setting, g: OwnerGroup, batches: list[int], n_max: int,
           at: np.ndarray) -> tuple[dict[str, float], float]:
    """One owner of group `g`: per resource its least busy seconds in the epoch, and its least
    chain of paths, over the cut rows `at` and N in 1..n_max."""
    me = dataclasses.replace(g, members=[g.rep])
    least: dict[str, float] = {}
    least_path = np.inf
    for n in range(1, n_max + 1):
        per: dict[str, np.ndarray] = {}
        path = np.zeros(len(at))
        for b in set(batches):
            times = batches.count(b)
            it = iteration_terms(setting, me, b, n)
            for r, f in it.loads.items():
                per[r] = per.get(r, np.zeros(len(at))) + times * f.values(at)
            path += times * it.path(at).length
        for r, v in per.items():
            least[r] = min(least.get(r, np.inf), float(v.min()))
        least_path = min(least_path, float(path.min()))
    return least, float(least_path)


def common_cuts(choice: JointChoice, owners: int) -> tuple[int, ...]:
    """The cut tuple most owners take (the plan's `cuts`; the others are overrides)."""
    counts: dict[tuple[int, ...], int] = {}
    for k in range(owners):
        if k in choice.cuts:
            counts[choice.cuts[k]] = counts.get(choice.cuts[k], 0) + 1
    return max(counts, key=lambda c: (counts[c], -min(k for k in choice.cuts
                                                       if choice.cuts[k] == c)))


__all__ = ["GroupColumns", "JointChoice", "OWNER", "brute_force", "columns", "common_cuts",
           "evaluate", "owner_bound", "owner_candidates", "owner_plan", "separable_bound",
           "solve"]


def owner_plan(topo: Topology, profs: Mapping[str, Profile], ns: Sequence[int],
               round_iterations: float | None, pinned: Sequence[int] = ()) -> Plan | None:
    """The plan of the joint choice (the most common cuts as the plan's, the rest per owner)
    with N `ns`; None when no choice fits the memory caps."""
    cols = columns(topo, profs, ns, round_iterations, pinned)
    if not cols:
        return None
    choice = solve(cols, memory_caps(topo))
    if choice is None:
        return None
    L = next(iter(profs.values())).num_layers
    common = common_cuts(choice, len(topo.owners))
    return make_plan(topo, L, common, list(ns), owner_cuts=choice.cuts)


def owner_candidates(search: Any) -> list[Candidate]:
    """`planner.aps.choose_plan`'s per-owner candidate: the joint cuts, N by APS for them
    (every owner's N scaled together), simulated (source `owner-ilp`)."""
    from planner.nchoice import choose_n

    topo = search.topo
    ns0 = owner_micro_batches(topo)
    plan = owner_plan(topo, search.profs, ns0, search.per_round, search.pinned)
    if plan is None:
        return []
    ns = choose_n(topo, plan, search.profs, iterations=search.iterations,
                  samples=search.samples, steady=search.steady, models=search.models)
    plan = owner_plan(topo, search.profs, ns, search.per_round, search.pinned) or plan
    plan = dataclasses.replace(plan, micro_batches=tuple(ns))
    return [search.estimate(plan, "owner-ilp")]


def owner_bound(low: Bound, topo: Topology, profs: Mapping[str, Profile],
                iterations: int | None, samples: list[int] | None) -> Bound:
    """`low` (one cut tuple for all) lowered to `separable_bound` where that is less, so that
    it bounds per-owner plans too."""
    started = time.perf_counter()
    B = topo.training.batch_size
    if iterations is not None:
        batches = [[B] * iterations for _ in topo.owners]
    else:
        counts = owner_samples(topo) if samples is None else samples
        batches = [[min(B, n - j * B) for j in range(iterations_per_epoch(topo.training, n))]
                   for n in counts]
    n_max = max(max_micro_batches(topo), *owner_micro_batches(topo))
    sep = separable_bound(topo, profs, batches, n_max)
    spent = low.compute_s + time.perf_counter() - started
    if sep >= low.seconds:
        return dataclasses.replace(low, compute_s=spent)
    return Bound(sep, "separable: per-owner cuts and N", (), topo.schedule.name, spent)
