"""The ILP's cost model: busy time per resource, paths and memory as linear forms in the cuts.

A form is linear in two kinds of 0/1 unknowns: x(l, p), layer l is in part p, and z(l, p),
cut p (the boundary after part p) falls right after layer l. Per iteration of every owner:

- a processor's busy time: sum over its parts and layers of N*(fa+ba) + B*(fc+bc) + opt,
  times the owners it serves (one at a time in SL), plus N wake-ups (F and B) per part on an
  emulated device, which sleeps after every pass;
- a link's busy time: the bytes of the ACT or GRAD at each cut it carries (B*out per sample,
  + labels when shared, + N headers) * 8 / rate, summed over the owners sharing it;
- an owner's two critical paths (lower bounds of its iteration): its N forwards, one
  micro-batch's round trip through the chain (F+B on every later part, both messages and
  latencies of every hop), its last backward, its STEP; or one forward, the round trip and
  N backwards;
- an owner's aggregation, per iteration: its parameters up and back down (plus averaging at
  the aggregator), divided by the iterations between two aggregations;
- a node's memory: parameters x (2 + optimizer copies) x copies, plus activations of the
  micro-batches that may be in flight (owner: B, last part: one micro-batch, other compute
  parts: B per owner) and the messages at its cuts (B per owner).

The ILP minimizes the largest busy time or path plus the largest aggregation term;
`evaluate` gives the same numbers for given cuts, for brute force and reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from mpsl.plan import placement_for
from mpsl.topology import OWNER, Topology
from planner.profile import Profile
from planner.resources import (
    AGGREGATOR,
    AVERAGE_BYTES_PER_S,
    HEADER_BYTES,
    LABEL_BYTES,
    Hop,
    Links,
    copies_on_compute,
    emulated_nodes,
    memory_caps,
    state_factor,
)


@dataclass
class Form:
    """const + sum of x[p][l] over the layers l of part p + z[p][l] at the layer before cut p."""

    const: float = 0.0
    x: dict[int, list[float]] = field(default_factory=dict)
    z: dict[int, list[float]] = field(default_factory=dict)

    def add_x(self, p: int, coef: Sequence[float], scale: float = 1.0) -> None:
        row = self.x.setdefault(p, [0.0] * len(coef))
        for i, c in enumerate(coef):
            row[i] += c * scale

    def add_z(self, p: int, coef: Sequence[float], scale: float = 1.0) -> None:
        row = self.z.setdefault(p, [0.0] * len(coef))
        for i, c in enumerate(coef):
            row[i] += c * scale

    def value(self, bounds: Sequence[int]) -> float:
        v = [self.const]
        for p, row in self.x.items():
            v.extend(row[bounds[p]:bounds[p + 1]])
        for p, row in self.z.items():
            v.append(row[bounds[p + 1] - 1])
        return math.fsum(v)


@dataclass
class OwnerGroup:
    """Owners alike in profile, N, links and memory cap, stood for by the first of them."""

    rep: str
    members: list[str]
    profile: Profile
    n: int
    uplink: float | None
    downlink: float | None
    cap: float | None
    sleeps: bool = False  # emulated slower device: it wakes for every pass


@dataclass
class CutModel:
    num_layers: int
    placement: tuple[str, ...]
    loads: dict[str, Form]
    paths: dict[str, Form]
    memory: dict[str, Form]
    caps: dict[str, float | None]
    groups: list[OwnerGroup]
    aggregation: dict[str, Form] = field(default_factory=dict)

    @property
    def num_parts(self) -> int:
        return len(self.placement)

    def evaluate(self, cuts: Sequence[int]) -> tuple[float, dict[str, float], dict[str, float],
                                                     dict[str, float]]:
        """(T, busy per resource, paths, memory per node) of `cuts`, owners expanded; T is the
        largest busy time or path plus the largest aggregation term (`paths['aggregation']`)."""
        bounds = (0, *cuts, self.num_layers)
        loads = self.expand({r: f.value(bounds) for r, f in self.loads.items()})
        paths = {r: f.value(bounds) for r, f in self.paths.items()}
        memory = self.expand({r: f.value(bounds) for r, f in self.memory.items()})
        agg = max((f.value(bounds) for f in self.aggregation.values()), default=0.0)
        t = max([*loads.values(), *paths.values()], default=0.0) + agg
        paths["aggregation"] = agg
        return t, loads, paths, memory

    def fits(self, cuts: Sequence[int]) -> bool:
        bounds = (0, *cuts, self.num_layers)
        return all(self.caps.get(n) is None or f.value(bounds) <= self.caps[n] * (1 + 1e-9)
                   for n, f in self.memory.items())

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


def build(topo: Topology, profs: dict[str, Profile], ns: Sequence[int],
          owners: int | None = None, round_iterations: float | None = None) -> CutModel:
    """The linear forms of `topo` with N per owner `ns` (`owners` K: copies of owner 0);
    `round_iterations`, iterations between aggregations, adds their cost (None: left out)."""
    placement = placement_for(topo)
    P = len(placement)
    B = topo.training.batch_size
    labels = topo.labels == "shared" and P > 1
    caps_all = memory_caps(topo)
    factor = state_factor(topo)
    sl = topo.mode == "sl"
    specs = list(topo.owners)
    if owners is not None and owners != len(specs):
        specs = [specs[0]] * owners
        ns = [ns[0]] * owners
    emulated = emulated_nodes(topo)
    groups: dict[tuple, OwnerGroup] = {}
    for i, (o, n) in enumerate(zip(specs, ns)):
        name = f"owner{i}"
        prof = profs.get(name, profs[specs[0].name])
        sleeps = o.name in emulated
        key = (id(prof), n, o.uplink_mbps, o.downlink_mbps, o.latency_ms, caps_all[o.name],
               sleeps)
        if key in groups:
            groups[key].members.append(name)
        else:
            groups[key] = OwnerGroup(name, [name], prof, min(n, B), o.uplink_mbps,
                                     o.downlink_mbps, caps_all[o.name], sleeps)
    links = Links(topo, {f"owner{i}": o for i, o in enumerate(specs)})
    K = len(specs)
    copies = copies_on_compute(topo, K)
    L = next(iter(profs.values())).num_layers
    loads: dict[str, Form] = {}
    paths: dict[str, Form] = {}
    aggregation: dict[str, Form] = {}
    memory: dict[str, Form] = {}
    caps: dict[str, float | None] = {}

    def prof_of(node: str, g: OwnerGroup) -> Profile:
        return g.profile if node == OWNER else profs[node]

    def work(prof: Profile, n: int) -> list[float]:
        return [n * (lp.fwd(B / n) + lp.bwd(B / n)) + lp.opt_s for lp in prof.layers]

    def one_mb(prof: Profile, b: float) -> list[float]:
        return [lp.fwd(b) + lp.bwd(b) for lp in prof.layers]

    for g in groups.values():
        mult = 1 if sl else len(g.members)
        out = [lp.out_bytes for lp in g.profile.layers]
        bbar = B / g.n
        for p, node in enumerate(placement):  # processors
            res = g.rep if node == OWNER else node if len(groups) == 1 or not sl else \
                f"{node}/{g.rep}"
            k = 1 if node == OWNER else mult
            prof = prof_of(node, g)
            form = loads.setdefault(res, Form())
            form.add_x(p, work(prof, g.n), k)
            form.const += k * prof.step_s  # every part has its optimizer
            # an emulated device wakes for every pass and its STEP (the owner's one STEP steps
            # all its parts); a busy node runs its passes warm
            if g.sleeps if node == OWNER else node in emulated:
                form.const += k * g.n * (prof.wake_fwd_s + prof.wake_bwd_s)
                if node != OWNER or p == 0:
                    form.const += k * prof.wake_step_s
        burst, drain = Form(), Form()
        own = g.profile.layers
        gp = g.profile
        burst.add_x(0, [g.n * lp.fwd(bbar) + lp.bwd(bbar) for lp in own])
        drain.add_x(0, [lp.fwd(bbar) + g.n * lp.bwd(bbar) for lp in own])
        bursts = g.n if g.sleeps else 1  # forwards (burst) or backwards (drain) that wake
        burst.const += bursts * gp.wake_fwd_s + gp.wake_bwd_s
        drain.const += gp.wake_fwd_s + bursts * gp.wake_bwd_s
        for p, node in enumerate(placement):
            if node == OWNER:
                for f in (burst, drain):
                    f.add_x(p, [lp.opt_s for lp in own])
                    f.const += gp.step_s + (gp.wake_step_s if g.sleeps and p == 0 else 0.0)
            if p:  # one micro-batch's round trip: every node on it wakes from a wait
                prof = prof_of(node, g)
                for f in (burst, drain):
                    f.add_x(p, one_mb(prof, bbar))
                    f.const += prof.wake_fwd_s + prof.wake_bwd_s
        for p in range(P - 1):  # links at cut p: ACT a->b, GRAD b->a
            a, b = placement[p], placement[p + 1]
            for src, dst, msg in ((a, b, "ACT"), (b, a, "GRAD")):
                extra = LABEL_BYTES * B if msg == "ACT" and labels else 0
                shared = src != OWNER and dst != OWNER
                h = links(g.rep if src == OWNER else src, g.rep if dst == OWNER else dst)
                res = h.name if not shared or len(groups) == 1 or not sl else f"{h.name}/{g.rep}"
                if h.rate_mbps is not None:
                    per_byte = 8.0 / (h.rate_mbps * 1e6)
                    scale = (mult if shared else 1) * per_byte
                    f = loads.setdefault(res, Form())
                    f.add_z(p, [o * B for o in out[:-1]], scale)
                    f.const += (extra + g.n * HEADER_BYTES) * scale
                    mb_extra = (extra / B * bbar + HEADER_BYTES) * per_byte
                    for f in (burst, drain):
                        f.add_z(p, [o * bbar for o in out[:-1]], per_byte)
                        f.const += mb_extra
                for f in (burst, drain):
                    f.const += h.latency_s
        paths[f"{g.rep} burst"] = burst
        paths[f"{g.rep} drain"] = drain
        if round_iterations:
            aggregation[g.rep] = _aggregation(g, placement, links(g.rep, AGGREGATOR),
                                              links(AGGREGATOR, g.rep), 1 if sl else K,
                                              round_iterations)
        # memory
        bmax = math.ceil(B / g.n)
        mem = memory.setdefault(g.rep, Form())
        caps[g.rep] = g.cap
        for p, node in enumerate(placement):
            if node != OWNER:
                continue
            inflight = B if p == 0 else bmax
            mem.add_x(p, [lp.param_bytes * factor + lp.act_bytes * inflight for lp in own])
            for c in (p - 1, p):
                if 0 <= c < P - 1:
                    mem.add_z(c, out[:-1], B)
    for p, node in enumerate(placement):
        if node == OWNER:
            continue
        prof = profs[node]
        owners_b = B * (1 if sl else K)
        bmax = max(math.ceil(B / g.n) for g in groups.values())
        inflight = bmax if p == P - 1 else owners_b
        mem = memory.setdefault(node, Form())
        caps[node] = caps_all.get(node)
        mem.add_x(p, [lp.param_bytes * factor * copies + lp.act_bytes * inflight
                      for lp in prof.layers])
        for c in (p - 1, p):
            if 0 <= c < P - 1:
                mem.add_z(c, [lp.out_bytes for lp in prof.layers[:-1]], owners_b)
    return CutModel(L, placement, loads, paths, memory, caps, list(groups.values()), aggregation)


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
