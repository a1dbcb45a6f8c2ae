"""The ILP's cost model: busy time per resource, paths and memory as linear forms in the cuts.

Every term comes from walking the schedule's tasks of one owner's iteration
(`mpsl.schedule.iteration_tasks`, by `planner.taskwalk` and `planner.taskpath`), once per
group of owners alike, so a new schedule needs no change here. Per iteration of every owner:

- a processor's busy time: the F, B and STEP actions it runs (times the owners it serves, one
  at a time in SL), wake-ups on an emulated device, which sleeps after every pass;
- a link's busy time: the ACT and GRAD messages it carries (bytes at the cut / rate), and the
  loss report of the node that runs the last part;
- an owner's path: the longest path through its iteration's tasks and messages
  (`planner.taskpath`), a graph of start times whose edges are forms;
- an owner's aggregation, per iteration: its parameters up and back down (plus averaging at
  the aggregator), divided by the iterations between two aggregations;
- a node's memory: parameters x (2 + optimizer copies) x copies, the peak of activations
  live between a part's F and B in one owner's iteration (compute nodes: see `_compute_memory`)
  and the messages received at its cuts.

The ILP minimizes the largest busy time or path plus the largest aggregation term;
`evaluate` gives the same numbers for given cuts, for brute force and reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mpsl.data import micro_batch_count
from mpsl.names import AGGREGATOR, OWNER, owner_name
from mpsl.plan import Plan, placement_for
from mpsl.spec import ScheduleSpec
from mpsl.topology import Topology
from mpsl.training import smallest_micro_batch
from planner.forms import Form, PathGraph
from planner.profile import Profile
from planner.resources import (
    AVERAGE_BYTES_PER_S,
    HEADER_BYTES,
    Hop,
    Links,
    copies_on_compute,
    emulated_nodes,
    memory_caps,
    state_factor,
)
from planner.taskpath import iteration_graph
from planner.taskwalk import GroupWalk, NodeUse, OwnerGroup, Setting

__all__ = ["CutModel", "Form", "OwnerGroup", "PathGraph", "build"]


@dataclass
class CutModel:
    num_layers: int
    placement: tuple[str, ...]
    loads: dict[str, Form]
    paths: dict[str, PathGraph]
    memory: dict[str, Form]
    caps: dict[str, float | None]
    groups: list[OwnerGroup]
    aggregation: dict[str, Form] = field(default_factory=dict)
    # what solvers derive from the model once (`planner.cutenum`'s scores of every tuple)
    cache: dict[object, object] = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_parts(self) -> int:
        return len(self.placement)

    def evaluate(self, cuts: Sequence[int]) -> tuple[float, dict[str, float], dict[str, float],
                                                     dict[str, float]]:
        """(T, busy per resource, paths, memory per node) of `cuts`, owners expanded; T is the
        largest busy time or path plus the largest aggregation term (`paths['aggregation']`)."""
        bounds = (0, *cuts, self.num_layers)
        loads = self.expand({r: f.value(bounds) for r, f in self.loads.items()})
        paths = {r: g.longest(bounds) for r, g in self.paths.items()}
        memory = self.expand({r: f.value(bounds) for r, f in self.memory.items()})
        agg = max((f.value(bounds) for f in self.aggregation.values()), default=0.0)
        t = max([*loads.values(), *paths.values()], default=0.0) + agg
        paths["aggregation"] = agg
        return t, loads, paths, memory

    def t_at(self, cuts: Sequence[int]) -> float:
        """`evaluate`'s T alone, per group (owners alike are not expanded)."""
        bounds = (0, *cuts, self.num_layers)
        terms = [f.value(bounds) for f in self.loads.values()]
        terms += [g.longest(bounds) for g in self.paths.values()]
        agg = max((f.value(bounds) for f in self.aggregation.values()), default=0.0)
        return max(terms, default=0.0) + agg

    def evaluate_all(self, cuts: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """T and memory per node (representatives only) of every row of `cuts` at once."""
        bounds = np.hstack([np.zeros((len(cuts), 1), np.int64), cuts.astype(np.int64),
                            np.full((len(cuts), 1), self.num_layers, np.int64)])
        terms = [f.values(bounds) for f in self.loads.values()]
        terms += [g.longest_all(bounds) for g in self.paths.values()]
        agg = [f.values(bounds) for f in self.aggregation.values()]
        t = np.max(terms, axis=0) + (np.max(agg, axis=0) if agg else 0.0)
        return t, {n: f.values(bounds) for n, f in self.memory.items()}

    def fits(self, cuts: Sequence[int]) -> bool:
        bounds = (0, *cuts, self.num_layers)
        for n, f in self.memory.items():
            cap = self.caps.get(n)
            if cap is not None and f.value(bounds) > cap * (1 + 1e-9):
                return False
        return True

    def expand(self, values: dict[str, float]) -> dict[str, float]:
        """Give every owner of a group its representative's numbers."""
        reps = {g.rep: g.members for g in self.groups if len(g.members) > 1}
        out: dict[str, float] = {}
        for name, v in values.items():
            ends = name.split("->")
            i = next((i for i, e in enumerate(ends) if e in reps), None)
            if i is None:
                out[name] = v
                continue
            for m in reps[ends[i]]:
                out["->".join(m if j == i else e for j, e in enumerate(ends))] = v
        return out


def build(topo: Topology, profs: Mapping[str, Profile], ns: Sequence[int],
          owners: int | None = None, round_iterations: float | None = None,
          schedule: ScheduleSpec | None = None, paths: bool = True,
          memory: bool = True) -> CutModel:
    """The linear forms of `topo` with N per owner `ns` (`owners` K: copies of owner 0) under
    `schedule` (default the topology's); `round_iterations`, iterations between aggregations,
    adds their cost (None: left out). Without `paths` (`memory`) the model has no path graphs
    (no memory forms or caps): its T is then a lower bound of the whole model's."""
    setting, groups = _setting(topo, profs, ns, owners, schedule or topo.schedule)
    walks = [GroupWalk(setting, g) for g in groups]
    loads: dict[str, Form] = {}
    graphs: dict[str, PathGraph] = {}
    for w in walks:
        for name, f in w.loads().items():
            loads.setdefault(name, Form()).add(f)
        if paths:
            graphs[f"{w.g.rep} path"] = iteration_graph(w)
    mem, caps = _memory(topo, setting, walks) if memory else ({}, {})
    aggregation: dict[str, Form] = {}
    if round_iterations:
        K = len(topo.owners) if owners is None else owners
        for g in groups:
            aggregation[g.rep] = _aggregation(g, setting.plan.placement,
                                              setting.links(g.rep, AGGREGATOR),
                                              setting.links(AGGREGATOR, g.rep),
                                              1 if setting.sl else K, round_iterations)
    L = next(iter(profs.values())).num_layers
    return CutModel(L, setting.plan.placement, loads, graphs, mem, caps, groups, aggregation)


def owner_groups(topo: Topology, profs: Mapping[str, Profile], schedule: ScheduleSpec
                 ) -> tuple[Setting, list[OwnerGroup]]:
    """What the walks of `topo`'s owners share under `schedule`, and the groups of owners
    alike in all but N (each group's N is 1: give each walk its own)."""
    return _setting(topo, profs, [1] * len(topo.owners), None, schedule)


def _setting(topo: Topology, profs: Mapping[str, Profile], ns: Sequence[int],
             owners: int | None, schedule: ScheduleSpec) -> tuple[Setting, list[OwnerGroup]]:
    """What every group's walk shares, and the groups of owners alike."""
    placement = placement_for(topo)
    P = len(placement)
    B = topo.training.batch_size
    smallest = smallest_micro_batch(topo)
    specs = list(topo.owners)
    if owners is not None and owners != len(specs):
        specs = [specs[0]] * owners
        ns = [ns[0]] * owners
    emulated = emulated_nodes(topo)
    caps = memory_caps(topo)
    groups: dict[tuple[object, ...], OwnerGroup] = {}
    for i, (o, n) in enumerate(zip(specs, ns)):
        name = owner_name(i)
        prof = profs.get(name, profs[specs[0].name])
        sleeps = o.name in emulated
        key = (id(prof), n, o.uplink_mbps, o.downlink_mbps, o.latency_ms, caps[o.name], sleeps)
        if key in groups:
            groups[key].members.append(name)
        else:
            groups[key] = OwnerGroup(name, i, [name], prof, micro_batch_count(B, n, smallest),
                                     o.uplink_mbps, o.downlink_mbps, caps[o.name], sleeps)
    L = next(iter(profs.values())).num_layers
    # the tasks depend on the placement, N and the schedule only: any cuts will do
    plan = Plan(max(L, P), tuple(range(1, P)), placement, tuple(max(1, n) for n in ns),
                schedule.name, schedule.max_in_flight)
    links = Links(topo, {owner_name(i): o for i, o in enumerate(specs)})
    sl = topo.mode == "sl"
    setting = Setting(plan, B, topo.labels == "shared" and P > 1, sl, sl and len(groups) > 1,
                      links, emulated, profs, smallest)
    return setting, list(groups.values())


def _memory(topo: Topology, setting: Setting, walks: list[GroupWalk]
            ) -> tuple[dict[str, Form], dict[str, float | None]]:
    """Memory forms and caps of every owner group and compute node."""
    caps_all = memory_caps(topo)
    factor = state_factor(topo)
    placement = setting.plan.placement
    memory: dict[str, Form] = {}
    caps: dict[str, float | None] = {}
    uses = [w.memory() for w in walks]
    for w, use in zip(walks, uses):
        g = w.g
        own = g.profile.layers
        mem = memory[g.rep] = Form()
        caps[g.rep] = g.cap
        node = use[g.rep]
        for p, where in enumerate(placement):
            if where == OWNER:
                peak = node.peak.get(p, 0)
                mem.add_x(p, [lp.param_bytes * factor + lp.act_bytes * peak for lp in own])
        for c, samples in node.received.items():
            mem.add_z(c, w.out, samples)
    copies = copies_on_compute(topo, sum(len(w.g.members) for w in walks))
    for node_name in dict.fromkeys(n for n in placement if n != OWNER):
        shares = [(w.mult, use[node_name]) for w, use in zip(walks, uses)]
        memory[node_name] = _compute_memory(setting, node_name, shares, factor * copies)
        caps[node_name] = caps_all.get(node_name)
    return memory, caps


def _compute_memory(setting: Setting, node: str, shares: list[tuple[int, NodeUse]],
                    param_factor: float) -> Form:
    """A compute node's memory: `param_factor` x its parameters, and activations and buffers
    of the owners it serves at once. The node runs one task at a time, so activations that
    every task frees before it ends count once (the largest), those left live between tasks
    once per owner: sum over owners of the live samples carried + the largest peak above
    that. SL's owners take turns: the largest peak. Buffers: the samples received per cut,
    summed over the owners (SL: the largest)."""
    prof = setting.profs[node]
    out = [lp.out_bytes for lp in prof.layers][:-1]
    mem = Form()
    for p, where in enumerate(setting.plan.placement):
        if where != node:
            continue
        if setting.sl:
            samples = max(u.peak.get(p, 0) for _, u in shares)
        else:
            samples = (sum(k * u.carried.get(p, 0) for k, u in shares)
                       + max(u.peak.get(p, 0) - u.carried.get(p, 0) for _, u in shares))
        mem.add_x(p, [lp.param_bytes * param_factor + lp.act_bytes * samples
                      for lp in prof.layers])
    cuts = sorted({c for _, u in shares for c in u.received})
    for c in cuts:
        got = [k * u.received.get(c, 0) for k, u in shares]
        mem.add_z(c, out, max(got) if setting.sl else sum(got))
    return mem


def _aggregation(g: OwnerGroup, placement: Sequence[str], up: Hop, down: Hop, k: int,
                 per: float) -> Form:
    """PARAMS up, averaging of k copies, GLOBAL down, per iteration of a round of `per`."""
    f = Form(const=(up.tx_s(HEADER_BYTES) + down.tx_s(HEADER_BYTES) + up.latency_s
                    + down.latency_s) / per)
    per_byte = (up.tx_s(1.0) + down.tx_s(1.0) + k / AVERAGE_BYTES_PER_S) / per
    for p, node in enumerate(placement):
        if node == OWNER:
            f.add_x(p, [lp.param_bytes for lp in g.profile.layers], per_byte)
    return f
