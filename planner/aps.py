"""Automated parameter selection: the plan search (the ILP's cuts and the next best, N for each
by `planner.nchoice`, every candidate simulated, the lower bound)."""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Iterable, Mapping, Sequence

from mpsl.plan import SINGLE_BATCH_MODES, Plan, make_plan, owner_micro_batches, placement_for
from mpsl.schedule import SCHEDULES
from mpsl.spec import ScheduleSpec
from mpsl.topology import Topology
from planner.batchsim import batching
from planner.bound import Bounds
from planner.cost import simulate
from planner.cutmodel import CutModel, build
from planner.estimate import Estimate
from planner.gcpause import paused
from planner.ilp import IlpResult, Infeasible, default_round_iterations, solve_model
from planner.nchoice import choose_n, eq14_start, sim_key
from planner.owner_cuts import owner_bound, owner_candidates
from planner.profile import Profile
from planner.report import Candidate, PlanReport
from planner.resources import max_micro_batches, node_profiles, owner_samples

Profiles = Profile | Mapping[str, Profile]
# A candidate's cuts are left out where their lower bound is at least the best epoch found
# times 1 + this: the steady-state estimates may lie this far from the full simulation.
SCREEN_MARGIN = 1e-3


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


@paused()  # the cyclic collector: a fifth of the time (planner.gcpause)
def choose_plan(topo: Topology, profiles: Profiles | None = None, *, top: int = 5,
                solver: str = "auto", iterations: int | None = None,
                time_limit_s: float | None = 60.0, steady: bool = True,
                bound: bool = True, budget_s: float | None = None) -> PlanReport:
    """Plan `topo`: ILP cuts, N by APS, the next-best cuts, all simulated and ranked, and
    (with `bound`) a lower bound on every plan's epoch (`planner.bound`).

    Profiles default to the topology's files or a measurement on this host. The best plan
    of every other schedule of `mpsl.schedule.SCHEDULES` (source `ilp (name)`: its ILP cuts
    with the cut model's N, `eq14_start`, which costs no simulation beyond its estimate) and
    the topology's own plan, when it states cuts, are ranked too; the topology's is kept past
    `top`. `steady=False` simulates every event of every candidate (no steady-state skipping).

    With `bound`, a candidate's cuts whose own lower bound (over every N) is not below the
    best epoch simulated so far are not simulated: no plan with them can be faster. With
    `budget_s`, once that many seconds have passed no further candidate is simulated (the
    ILP's first is always). Either way the report's notes name every candidate left out.
    With `bound`, the ILP's first cuts are simulated whole at the cut model's N
    (`eq14_start`) before `choose_n` tries other N, which the bound may then screen; that
    plan is ranked (source `ilp (the cut model's N)`) where no other candidate is it.
    """
    started = time.perf_counter()
    search = _Search(topo, node_profiles(topo, profiles), iterations, solver, time_limit_s)
    search.steady = steady
    search.deadline = None if budget_s is None else started + budget_s
    if bound and not batching(topo, search.profs):  # batched copies: no such bound
        search.bounds = Bounds(topo, search.profs, iterations=iterations,
                               samples=search.samples)
    mine = topo.schedule.name
    cands = search.ranked(mine, top)
    if not search.single:
        for name in SCHEDULES:
            if name != mine:
                with contextlib.suppress(Infeasible):
                    cands += search.ranked(name, 1, f" ({name})", simulate_n=False)
    notes = search.add_topology_plan(cands) + search.notes
    cands.sort(key=lambda c: (c.estimate.epoch_s, c.source != "ilp"))
    kept = cands[:top] + [c for c in cands[top:] if "topology" in c.source]  # always compared
    if topo.plan.per_owner and not search.single:  # owners' own cuts (planner.owner_cuts)
        cands += owner_candidates(search)
        cands.sort(key=lambda c: (c.estimate.epoch_s, c.source != "ilp"))
        kept = cands[:top] + [c for c in cands[top:] if "topology" in c.source]
    low = search.bounds.least() if search.bounds is not None else None
    if low is not None and topo.plan.per_owner and not search.single:
        low = owner_bound(low, topo, search.profs, iterations, search.samples)
    return PlanReport(kept, search.solver_used, search.solve_s, time.perf_counter() - started,
                      notes, low)


class _Search:
    """choose_plan's steps: solve the cuts, choose N, simulate, for one schedule at a time."""

    def __init__(self, topo: Topology, profs: dict[str, Profile], iterations: int | None,
                 solver: str, time_limit_s: float | None) -> None:
        self.topo, self.profs, self.iterations = topo, profs, iterations
        self.solver, self.time_limit_s = solver, time_limit_s
        self.L = next(iter(profs.values())).num_layers
        self.samples = None if iterations is not None else owner_samples(topo)
        self.per_round = (
            float(iterations) if iterations is not None and topo.mode == "sl" else
            default_round_iterations(topo, self.samples) if self.samples is not None else
            float(min(iterations or 1, topo.training.aggregate_every or iterations or 1)))
        self.pinned = tuple(topo.plan.pinned_cuts)
        self.solve_s, self.solver_used = 0.0, "none"
        self.single = topo.mode in SINGLE_BATCH_MODES or len(placement_for(topo)) == 1
        self.steady = True  # skip the steady state's periods when simulating
        self.models: dict[tuple[int, ScheduleSpec | None], CutModel] = {}  # eq14_start's, kept
        self.full: dict[Plan, Estimate] = {}  # whole epochs simulated, by sim_key
        self.ilp_models: dict[tuple[tuple[int, ...], str], CutModel] = {}  # solve's, kept
        self.bounds: Bounds | None = None  # to leave out cuts that cannot be faster
        self.lows: dict[tuple[tuple[int, ...], str, bool], float] = {}  # their bounds, kept
        self.n_lows: dict[tuple[tuple[int, ...], str], dict[int, float]] = {}  # and per N
        self.deadline: float | None = None  # perf_counter past which no more is simulated
        self.best_s = math.inf  # the least epoch simulated so far
        self.opening: Candidate | None = None  # the first simulated, to screen N (pick_n)
        self.notes: list[str] = []  # the candidates left out, and why

    def solve(self, ns: Sequence[int], schedule: str,
              exclude: Sequence[Sequence[int]] = ()) -> IlpResult:
        key = (tuple(ns), schedule)
        model = self.ilp_models.get(key)
        if model is None:  # the same model for the next-best cuts (its scores are kept)
            spec = ScheduleSpec(schedule, self.topo.schedule.max_in_flight)
            model = self.ilp_models[key] = build(self.topo, self.profs, ns,
                                                 round_iterations=self.per_round,
                                                 schedule=spec)
        res = solve_model(model, self.pinned, self.solver, exclude, self.time_limit_s)
        self.solve_s += res.solve_s
        self.solver_used = res.solver if res.solver != "none" else self.solver_used
        return res

    def plan(self, cuts: Sequence[int], ns: Sequence[int], schedule: str) -> Plan:
        return make_plan(self.topo, self.L, cuts, list(ns), schedule)

    def estimate(self, plan: Plan, source: str, ilp_T: float | None = None) -> Candidate:
        key = sim_key(plan)
        est = self.full.get(key)  # simulated whole before (by choose_n, or as an estimate)
        if est is None:
            est = self.full[key] = simulate(
                self.topo, plan, self.profs, epochs=self.topo.training.epochs,
                iterations=self.iterations, samples=self.samples, steady=self.steady)
        return Candidate(plan, est, source, ilp_T)

    def pick_n(self, cuts: Sequence[int], start: Sequence[int], schedule: str,
               simulate_n: bool = True) -> tuple[int, ...]:
        """N for the cuts: by `choose_n`, or (not `simulate_n`) the cut model's `eq14_start`."""
        if self.single:
            return tuple(start)
        plan = self.plan(cuts, start, schedule)
        if not simulate_n:
            return eq14_start(self.topo, plan, self.profs, self.models)
        if self.bounds is not None and self.best_s == math.inf:
            # the cut model's N simulated whole first: the bound then screens the other N
            first = eq14_start(self.topo, plan, self.profs, self.models)
            self.opening = self.estimate(self.plan(cuts, first, schedule), "")
            self.best_s = self.opening.estimate.epoch_s
        return choose_n(self.topo, plan, self.profs, iterations=self.iterations,
                        samples=self.samples, steady=self.steady, models=self.models,
                        full=self.full, screened=lambda ns: self.n_screened(cuts, schedule, ns))

    def n_screened(self, cuts: Sequence[int], schedule: str, ns: tuple[int, ...]) -> bool:
        """Whether no plan with these cuts and one N for all, `ns`, can beat the best epoch
        found (the bound at that N, kept for `screened_out`): `choose_n` then does not
        simulate it."""
        if self.bounds is None or self.best_s == math.inf or len(set(ns)) != 1:
            return False
        low = self.bounds.at([cuts], schedule, ns=ns[:1])[0]
        if low < self.best_s * (1 + SCREEN_MARGIN):
            return False
        self.n_lows.setdefault((tuple(cuts), schedule), {})[ns[0]] = low
        return True

    def screened_out(self, source: str, cuts: Sequence[int], schedule: str,
                     ns: tuple[int, ...]) -> bool:
        """Note the N that `n_screened` kept `choose_n` from simulating for the cuts; True
        (the candidate left out) where that was every N it tried, `ns` among them."""
        lows = self.n_lows.get((tuple(cuts), schedule), {})
        if not lows:
            return False
        gone = ns[0] in lows
        tried = _spans(sorted(lows))
        self.notes.append(f"{source} (cuts {list(cuts)}){' not simulated' if gone else ''}: "
                          f"N = {tried} {'every N tried, ' if gone else ''}bounded at "
                          f"{min(lows.values()):.3f} s or more, above the best found "
                          f"({self.best_s:.3f} s)")
        return gone

    def ranked(self, schedule: str, top: int, tag: str = "", simulate_n: bool = True
               ) -> list[Candidate]:
        """The ILP's cuts with N chosen for them, then the next-best cuts, simulated."""
        ns0 = owner_micro_batches(self.topo)
        res = self.solve(ns0, schedule)
        ns = self.pick_n(res.cuts, ns0, schedule, simulate_n)
        if simulate_n:
            self.screened_out(f"ilp{tag}", res.cuts, schedule, ns)
        if ns != ns0:
            res = self.solve(ns, schedule)
        found = [res]
        while len(found) < top and res.cuts:
            try:
                found.append(self.solve(ns, schedule, [r.cuts for r in found]))
            except Infeasible:
                break
        cands = []
        for i, r in enumerate(found):
            source = ("ilp" if i == 0 else f"ilp#{i + 1}") + tag
            n_r = (ns if i == 0 else None if simulate_n
                   else self.pick_n(r.cuts, ns, schedule, simulate_n))
            known = n_r is not None and sim_key(self.plan(r.cuts, n_r, schedule)) in self.full
            if not known and self.left_out(source, r.cuts, schedule,
                                           [f.cuts for f in found[i:]]):
                continue  # an estimate simulated already costs nothing: no bound for it
            if n_r is None:
                n_r = self.pick_n(r.cuts, ns, schedule)
                if self.screened_out(source, r.cuts, schedule, n_r):
                    continue
            c = self.estimate(self.plan(r.cuts, n_r, schedule), source, r.objective_T)
            self.best_s = min(self.best_s, c.estimate.epoch_s)
            cands.append(c)
        opened = self.opening  # simulated to screen N: ranked too, where no candidate is it
        if opened is not None and not opened.source:
            opened.source = f"ilp{tag} (the cut model's N)"
            if all(c.plan != opened.plan for c in cands):
                cands.append(opened)
        return cands

    def left_out(self, source: str, cuts: Sequence[int], schedule: str,
                 ahead: Sequence[Sequence[int]] = ()) -> bool:
        """Whether to leave a candidate unsimulated (noted): its cuts' lower bound under
        `schedule` is not below the best epoch found (with SCREEN_MARGIN for the estimates'
        tolerance), or the time budget is spent (after the first candidate). The bound
        without paths goes first: where it screens the cuts out, no path is built. `ahead`,
        the cuts still to come, are bounded in the same pass (its cost is mostly per N)."""
        what = f"{source} (cuts {list(cuts)})"
        if self.bounds is not None and self.best_s < math.inf:
            bar = self.best_s * (1 + SCREEN_MARGIN)
            low = self._low(cuts, schedule, False, ahead)
            if low < bar:
                ahead = [c for c in ahead if self._low(c, schedule, False, ()) < bar]
                low = self._low(cuts, schedule, True, ahead)
            if low >= bar:
                self.notes.append(f"{what} not simulated: no plan with these cuts beats "
                                  f"{low:.3f} s per epoch, above the best found "
                                  f"({self.best_s:.3f} s)")
                return True
        if self.deadline is not None and self.best_s < math.inf and (
                time.perf_counter() > self.deadline):
            self.notes.append(f"{what} not simulated: the time budget was spent")
            return True
        return False

    def _low(self, cuts: Sequence[int], schedule: str, paths: bool,
             ahead: Sequence[Sequence[int]]) -> float:
        """`Bounds.at` of the cuts, kept; those of `ahead` not yet known found with them."""
        assert self.bounds is not None
        key = (tuple(cuts), schedule, paths)
        if key not in self.lows:
            todo = [c for c in dict.fromkeys(map(tuple, [cuts, *ahead]))
                    if (c, schedule, paths) not in self.lows]
            for c, v in zip(todo, self.bounds.at(todo, schedule, paths)):
                self.lows[(c, schedule, paths)] = v
        return self.lows[key]

    def add_topology_plan(self, cands: list[Candidate]) -> list[str]:
        """Rank the topology's own plan (marking a candidate equal to it); notes on failure."""
        topo = self.topo
        if topo.plan.cuts is None or topo.plan.auto or topo.mode == "fl":
            return []
        mine = (tuple(topo.plan.cuts), owner_micro_batches(topo), topo.schedule.name)
        same = [c for c in cands
                if (c.plan.cuts, c.plan.micro_batches, c.plan.schedule) == mine]
        if same:
            same[0].source += " = topology"
            return []
        try:
            cands.append(self.estimate(self.plan(mine[0], mine[1], mine[2]), "topology"))
        except ValueError as err:
            return [f"the topology's plan was not ranked: {err}"]
        return []


def _spans(ns: list[int]) -> str:
    """Sorted integers as runs: [1, 2, 3, 5, 7, 8] -> '1-3, 5, 7-8'."""
    runs: list[list[int]] = []
    for n in ns:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
