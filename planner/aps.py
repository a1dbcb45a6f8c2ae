"""Automated parameter selection: N per owner (eq. 14, then the simulator), the plan search."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping, Sequence

from mpsl.plan import SINGLE_BATCH_MODES, Plan, make_plan, owner_micro_batches, placement_for
from mpsl.topology import OWNER, Topology
from planner.cost import simulate
from planner.cutmodel import build
from planner.ilp import Infeasible, default_round_iterations, solve_model
from planner.profile import Profile
from planner.report import Candidate, PlanReport
from planner.resources import (
    HEADER_BYTES,
    LABEL_BYTES,
    Links,
    emulated_nodes,
    iterations_per_epoch,
    max_micro_batches,
    node_profiles,
    owner_samples,
)

Profiles = Profile | Mapping[str, Profile]
SIM_BUDGET = 500  # owner-iterations simulated per N compared; fewer iterations past that
# Simulated epochs within 1% count as tied, and the fewest micro-batches wins: every message
# costs a little CPU (encode, decode) that the cost model leaves out.
NEAR_TIE = 0.01
# Every N common to all owners is simulated while N_max x the owner-iterations simulated per N
# stays under this: vgg5 on 4G (B = 32) simulates N = 11..15 at 1.485-1.488 s and N = 18 at
# 1.456 s, a step no +-1 walk from N = 11 gets past.
SCAN_BUDGET = 2_000


def eq14_start(topo: Topology, plan: Plan, profs: Mapping[str, Profile]) -> tuple[int, ...]:
    """PiPar's eq. 14, as used here: the smallest N whose forward burst covers a round trip.

    For owner k with micro-batches of b = B/N samples, let f(b) be its forward of part 0 and
    R(b) the round trip of one micro-batch after it: every later part's F + B (times the
    owners sharing its node, who are served in turn) plus every hop's transmission and
    latency, both ways. N is the smallest in 1..N_max (B, or B/2 for BatchNorm on 1x1 maps)
    with (N - 1) f(b) >= R(b), so the owner is still busy with its burst when the first
    gradient returns and never idles in between; N_max if none is. With t(b) not
    proportional to b the condition is not monotone in general, hence a scan.
    """
    if topo.mode in SINGLE_BATCH_MODES or plan.num_parts == 1:
        return tuple(1 for _ in topo.owners)
    B = topo.training.batch_size
    n_max = max_micro_batches(topo)
    K = 1 if topo.mode == "sl" else len(topo.owners)
    links = Links(topo)
    emulated = emulated_nodes(topo)
    labels = topo.labels == "shared"
    parts = plan.parts
    out = []
    for o in topo.owners:
        own = profs[o.name]
        outb = [0] + [own.out_bytes(c - 1) for c in plan.bounds[1:-1]]
        best = n_max
        for n in range(1, n_max + 1):
            b = B / n
            f = own.fwd(parts[0], b) + (own.wake_fwd_s if o.name in emulated else 0.0)
            trip = 0.0
            for p in range(1, plan.num_parts):
                node = plan.placement[p]
                prof = own if node == OWNER else profs[node]
                mult = 1 if node == OWNER else K
                trip += mult * (prof.fwd(parts[p], b) + prof.bwd(parts[p], b)
                                + prof.wake_fwd_s + prof.wake_bwd_s)
                src = plan.node_of(p - 1, o.name)
                dst = plan.node_of(p, o.name)
                act = outb[p] * b + (LABEL_BYTES * b if labels else 0) + HEADER_BYTES
                grad = outb[p] * b + HEADER_BYTES
                up, down = links(src, dst), links(dst, src)
                trip += up.tx_s(act) + down.tx_s(grad) + up.latency_s + down.latency_s
            if (n - 1) * f >= trip:
                best = n
                break
        out.append(best)
    return tuple(out)


def _with_n(plan: Plan, ns: Sequence[int]) -> Plan:
    return Plan(plan.num_layers, plan.cuts, plan.placement, tuple(ns))


def choose_n(topo: Topology, plan: Plan, profiles: Profiles, *,
             iterations: int | None = None, samples: list[int] | None = None,
             max_steps: int = 12) -> tuple[int, ...]:
    """N per owner for `plan`: eq. 14's start, then the simulator over nearby N.

    Tries the start scaled by 1/4, 1/2, 1, 2, 4 (all owners together) and, within
    SCAN_BUDGET, every N common to all owners, then walks +-1 from the fastest while the
    simulated epoch improves. Of all N tried, those within NEAR_TIE of the fastest count as
    tied, and the fewest micro-batches wins (breaking ties during the walk instead lets it
    drift to fewer N in 1% steps, away from the fastest). The whole epoch is simulated while
    it is at most SIM_BUDGET owner-iterations, else `iterations` (default SIM_BUDGET / K, at
    least 3) per owner.
    """
    if topo.mode in SINGLE_BATCH_MODES or plan.num_parts == 1:
        return tuple(1 for _ in topo.owners)
    profs = node_profiles(topo, profiles, measure=False)
    start = eq14_start(topo, plan, profs)
    if iterations is None:
        if samples is None:
            samples = owner_samples(topo)
        work = sum(iterations_per_epoch(topo, s) for s in samples)
        if work > SIM_BUDGET:
            iterations = max(3, SIM_BUDGET // len(topo.owners))
    per_n = iterations * len(topo.owners) if iterations is not None else work
    seen: dict[tuple[int, ...], float] = {}

    def cost(ns: tuple[int, ...]) -> float:
        if ns not in seen:
            est = simulate(topo, _with_n(plan, ns), profs, iterations=iterations,
                           samples=samples)
            seen[ns] = est.epoch_s
        return seen[ns]

    n_max = max_micro_batches(topo)

    def clamp(ns: Iterable[float]) -> tuple[int, ...]:
        return tuple(min(n_max, max(1, round(n))) for n in ns)

    def pick() -> tuple[int, ...]:
        """The fewest micro-batches among the N within NEAR_TIE of the fastest."""
        fastest = min(seen.values())
        near = [ns for ns in seen if seen[ns] <= fastest * (1 + NEAR_TIE)]
        return min(near, key=lambda ns: (sum(ns), seen[ns]))

    for factor in (1, 0.5, 2, 0.25, 4):
        cost(clamp(n * factor for n in start))
    if n_max * per_n <= SCAN_BUDGET:  # the epoch is not unimodal in N (sizes round): scan it
        for n in range(1, n_max + 1):
            cost(tuple(n for _ in start))
    best = min(seen, key=seen.__getitem__)
    for _ in range(max_steps):  # walk to the fastest; the tie-break comes after
        for d in (-1, 1):
            cost(clamp(n + d for n in best))
        nxt = min(seen, key=seen.__getitem__)
        if nxt == best:
            break
        best = nxt
    return pick()


def exhaustive(topo: Topology, profiles: Profiles, *, ns: Iterable[int] | None = None,
               iterations: int | None = None, samples: list[int] | None = None,
               memory: bool = True) -> list[Candidate]:
    """Every cut tuple (with the pinned cuts, within the memory caps when `memory`) x every N
    (default 1..B, or as far as BatchNorm allows, 1 in SFL, SL and FL), simulated and ranked
    by epoch time."""
    profs = node_profiles(topo, profiles, measure=False)
    L = next(iter(profs.values())).num_layers
    if ns is None:
        ns = [1] if topo.mode in SINGLE_BATCH_MODES else range(1, max_micro_batches(topo) + 1)
    if samples is None and iterations is None:
        samples = owner_samples(topo)
    P = len(placement_for(topo))
    pinned = set(topo.plan.pinned_cuts)
    out = []
    for n in ns:
        model = build(topo, profs, [n] * len(topo.owners))
        for cuts in itertools.combinations(range(1, L), P - 1):
            if not pinned <= set(cuts) or memory and not model.fits(cuts):
                continue
            plan = make_plan(topo, L, cuts, n)
            est = simulate(topo, plan, profs, iterations=iterations, samples=samples)
            out.append(Candidate(plan, est, "exhaustive"))
    out.sort(key=lambda c: (c.estimate.epoch_s, sum(c.plan.micro_batches), c.plan.cuts))
    return out


def choose_plan(topo: Topology, profiles: Profiles | None = None, *, top: int = 5,
                solver: str = "cbc", iterations: int | None = None,
                time_limit_s: float | None = 60.0) -> PlanReport:
    """Plan `topo`: ILP cuts, N by APS, the next-best cuts, all simulated and ranked.

    Profiles default to the topology's files or a measurement on this host. The topology's
    own plan, when it states cuts, is ranked among the candidates too (kept past `top`).
    """
    started = time.perf_counter()
    profs = node_profiles(topo, profiles)
    L = next(iter(profs.values())).num_layers
    samples = None if iterations is not None else owner_samples(topo)
    per_round = (float(iterations) if iterations is not None and topo.mode == "sl" else
                 default_round_iterations(topo, samples) if samples is not None else
                 float(min(iterations or 1, topo.training.aggregate_every or iterations or 1)))
    pinned = tuple(topo.plan.pinned_cuts)
    solve_s, solver_used = 0.0, "none"

    def solve(ns: Sequence[int], exclude: Sequence[Sequence[int]] = ()) -> tuple[int, ...]:
        nonlocal solve_s, solver_used
        model = build(topo, profs, ns, round_iterations=per_round)
        res = solve_model(model, pinned, solver, exclude, time_limit_s)
        solve_s += res.solve_s
        solver_used = res.solver if res.solver != "none" else solver_used
        return res.cuts

    def estimate(cuts: Sequence[int], ns: Sequence[int], source: str) -> Candidate:
        plan = make_plan(topo, L, cuts, list(ns))
        est = simulate(topo, plan, profs, epochs=topo.training.epochs, iterations=iterations,
                       samples=samples)
        return Candidate(plan, est, source)

    ns0 = owner_micro_batches(topo)
    cuts = solve(ns0)
    single = topo.mode in SINGLE_BATCH_MODES or not cuts
    def pick_n(c: Sequence[int], start: Sequence[int]) -> tuple[int, ...]:
        return choose_n(topo, make_plan(topo, L, c, list(start)), profs,
                        iterations=iterations, samples=samples)

    ns = ns0 if single else pick_n(cuts, ns0)
    if ns != ns0:
        cuts = solve(ns)
    found: list[tuple[int, ...]] = [cuts]
    while len(found) < top and cuts:
        try:
            found.append(solve(ns, found))
        except Infeasible:
            break
    cands = []
    for i, c in enumerate(found):
        n_c = ns if single or i == 0 else pick_n(c, ns)
        cands.append(estimate(c, n_c, "ilp" if i == 0 else f"ilp#{i + 1}"))
    notes = []
    if topo.plan.cuts is not None and not topo.plan.auto and topo.mode != "fl":
        mine = (tuple(topo.plan.cuts), owner_micro_batches(topo))
        same = [c for c in cands if (c.plan.cuts, c.plan.micro_batches) == mine]
        if same:
            same[0].source += " = topology"
        else:
            try:
                cands.append(estimate(topo.plan.cuts, mine[1], "topology"))
            except ValueError as err:
                notes.append(f"the topology's plan was not ranked: {err}")
    cands.sort(key=lambda c: (c.estimate.epoch_s, c.source != "ilp"))
    kept = cands[:top] + [c for c in cands[top:] if "topology" in c.source]  # always compared
    return PlanReport(kept, solver_used, solve_s, time.perf_counter() - started, notes)
