"""N per owner for a plan's cuts: the cut model's best N (PiPar's eq. 14, any schedule), then
the simulator over nearby N (`choose_n`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

from mpsl.plan import SINGLE_BATCH_MODES, Plan
from mpsl.schedule import in_flight
from mpsl.spec import ScheduleSpec
from mpsl.topology import Topology
from planner.cost import simulate
from planner.cutmodel import CutModel, build
from planner.estimate import Estimate
from planner.profile import Profile
from planner.resources import (
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
# stays under this: the simulated epoch is not unimodal in N (micro-batch sizes round), so a
# +-1 walk can stop short of the fastest N.
SCAN_BUDGET = 2_000


def eq14_start(topo: Topology, plan: Plan, profs: Mapping[str, Profile],
               models: dict[tuple[int, ScheduleSpec | None], CutModel] | None = None
               ) -> tuple[int, ...]:
    """The start of the N search, from the cut model: the N in 1..N_max (B, or less for
    BatchNorm on 1x1 maps), the same for every owner, whose model of the plan's schedule
    (`planner.cutmodel.build`: busy times and the paths through the schedule's tasks) has
    the smallest T at the plan's cuts; ties go to the fewer N.

    PiPar's eq. 14 picks the smallest N whose forward burst covers a micro-batch's round
    trip; the model's path term holds that balance for any schedule, and its busy terms what
    more micro-batches cost (headers, small-batch inefficiency), so no message arithmetic of
    its own is needed here. `models` keeps the cut models built (by N and schedule: they do
    not depend on the cuts) for the next call on the same topology and profiles.
    """
    if topo.mode in SINGLE_BATCH_MODES or plan.num_parts == 1:
        return tuple(1 for _ in topo.owners)
    spec = ScheduleSpec(plan.schedule, plan.max_in_flight)
    models = {} if models is None else models
    K = len(topo.owners)

    def model(n: int, whole: bool) -> CutModel:
        # -n: the model without paths, whose busy terms are the same under every schedule
        # (the same actions, grouped in other tasks): one for all
        key = (n, spec) if whole else (-n, None)
        got = models.get(key)
        if got is None:
            got = models[key] = build(topo, profs, [n] * K, schedule=spec, paths=whole,
                                      memory=False)
        return got

    # The busy terms alone bound each N's T from below: the paths are built only for the N
    # whose bound is not clearly above the least T found. An N left out has T > (1 + 1e-8)
    # x the least: never the choice below, nor does leaving it out change the choice.
    ns = range(1, max_micro_batches(topo) + 1)
    low = {n: model(n, False).t_at(plan.cuts) for n in ns}
    t: dict[int, float] = {}
    for n in sorted(ns, key=lambda n: (low[n], n)):
        if t and low[n] > min(t.values()) * (1 + 1e-8):
            break
        t[n] = model(n, True).t_at(plan.cuts)
    best: tuple[float, int] | None = None
    for n in sorted(t):
        if best is None or t[n] < best[0] * (1 - 1e-9):
            best = (t[n], n)
    assert best is not None
    return tuple(best[1] for _ in topo.owners)


def sim_key(plan: Plan) -> Plan:
    """The plan as its simulation sees it: where every owner's micro-batches all go out
    before its first backward (one micro-batch, or 1F1B's window at least N), every schedule
    gives GPipe's tasks (`mpsl.schedule.in_flight`), so the schedule is dropped."""
    if all(in_flight(plan.for_owner(k), n) == n for k, n in enumerate(plan.micro_batches)):
        return dataclasses.replace(plan, schedule="gpipe", max_in_flight=None)
    return plan


def _with_n(plan: Plan, ns: Sequence[int]) -> Plan:
    return dataclasses.replace(plan, micro_batches=tuple(ns))


def choose_n(topo: Topology, plan: Plan, profiles: Profiles, *,
             iterations: int | None = None, samples: list[int] | None = None,
             max_steps: int = 12, steady: bool = True,
             models: dict[tuple[int, ScheduleSpec | None], CutModel] | None = None,
             full: dict[Plan, Estimate] | None = None,
             screened: Callable[[tuple[int, ...]], bool] | None = None) -> tuple[int, ...]:
    """N per owner for `plan`: eq. 14's start, then the simulator over nearby N.

    Tries the start scaled by 1/4, 1/2, 1, 2, 4 (all owners together) and, within
    SCAN_BUDGET, every N common to all owners, then walks +-1 from the fastest while the
    simulated epoch improves. Of all N tried, those within NEAR_TIE of the fastest count as
    tied, and the fewest micro-batches wins (breaking ties during the walk instead lets it
    drift to fewer N in 1% steps, away from the fastest). The whole epoch is simulated while
    it is at most SIM_BUDGET owner-iterations, else `iterations` (default SIM_BUDGET / K, at
    least 3) per owner. `steady=False` simulates every event (`planner.cost.simulate`);
    `models` is `eq14_start`'s. Whole epochs simulated are kept in `full` (by `sim_key`,
    with memory and `topo`'s epochs) for the plan's estimate; shortened ones skip memory. N
    for which `screened` says no plan can beat the best found are not simulated (as if
    infinitely slow), unless every N tried is; where it leaves one of the first N tried and
    screens that one's neighbours, that N is the choice, simulated by none.
    """
    if topo.mode in SINGLE_BATCH_MODES or plan.num_parts == 1:
        return tuple(1 for _ in topo.owners)
    profs = node_profiles(topo, profiles, measure=False)
    start = eq14_start(topo, plan, profs, models)
    given = iterations  # the estimate's: simulations with it are kept in `full`
    if iterations is None:
        if samples is None:
            samples = owner_samples(topo)
        work = sum(iterations_per_epoch(topo, s) for s in samples)
        if work > SIM_BUDGET:
            iterations = max(3, SIM_BUDGET // len(topo.owners))
    per_n = iterations * len(topo.owners) if iterations is not None else work
    seen: dict[tuple[int, ...], float] = {}

    def screen(ns: tuple[int, ...]) -> bool:
        """Whether `screened` leaves `ns` out (kept in `seen` as infinitely slow)."""
        if ns not in seen and screened is not None and screened(ns):
            seen[ns] = math.inf
        return seen.get(ns) == math.inf

    def cost(ns: tuple[int, ...]) -> float:
        screen(ns)
        if ns not in seen:
            trial = _with_n(plan, ns)
            whole = iterations == given and full is not None
            est = full.get(sim_key(trial)) if whole and full is not None else None
            if est is None:
                est = simulate(topo, trial, profs, epochs=topo.training.epochs,
                               iterations=iterations, samples=samples, steady=steady,
                               memory=whole)
            if whole and full is not None:
                full[sim_key(trial)] = est
            seen[ns] = est.epoch_s
        return seen[ns]

    n_max = max_micro_batches(topo)

    def clamp(ns: Iterable[float]) -> tuple[int, ...]:
        return tuple(min(n_max, max(1, round(n))) for n in ns)

    def pick() -> tuple[int, ...]:
        """The fewest micro-batches among the N within NEAR_TIE of the fastest."""
        if all(v == math.inf for v in seen.values()):  # every N screened: the first
            return min(seen, key=sum)
        fastest = min(seen.values())
        near = [ns for ns in seen if seen[ns] <= fastest * (1 + NEAR_TIE)]
        return min(near, key=lambda ns: (sum(ns), seen[ns]))

    firsts = list(dict.fromkeys(clamp(n * f for n in start) for f in (1, 0.5, 2, 0.25, 4)))
    scan = n_max * per_n <= SCAN_BUDGET  # the epoch is not unimodal in N (sizes round)
    if screened is not None and not scan:
        lone = _lone(firsts, screen, clamp)
        if lone is not None:
            return lone
    for ns in firsts:
        cost(ns)
    if scan:
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


def _lone(firsts: list[tuple[int, ...]], screen: Callable[[tuple[int, ...]], bool],
          clamp: Callable[[Iterable[float]], tuple[int, ...]]) -> tuple[int, ...] | None:
    """The one N of `firsts` that `screen` leaves, where it leaves one and screens its
    neighbours (+-1) too: `choose_n`'s walk would stop there, so no simulation is needed."""
    left = [ns for ns in firsts if not screen(ns)]
    if len(left) != 1:
        return None
    near = [ns for ns in dict.fromkeys(clamp(n + d for n in left[0]) for d in (-1, 1))
            if ns != left[0]]
    return left[0] if all(screen(ns) for ns in near) else None
