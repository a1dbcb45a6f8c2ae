"""The cuts ILP (PuLP): minimize the busiest resource and owner path under memory caps.

Unknowns y[l][p] in {0, 1}: layer l lies in part p or an earlier one. They are monotone,
y[l][p] <= y[l][p+1] and y[l+1][p] <= y[l][p], so every part is a contiguous run; then
x(l, p) = y[l][p] - y[l][p-1] places layer l in part p, z(l, p) = y[l][p] - y[l+1][p] puts
cut p after layer l, and cut p = sum_l y[l][p]. Each part holds a layer; a pinned cut c has
sum_p z(c-1, p) = 1. Minimize T + A (+ 1e-6 x the mean of the terms, to break ties) with
T >= every busy time of `planner.cutmodel` and the end of every owner's path, A >= every
owner's aggregation term, and memory(node) <= its cap. A path is a graph of start times: a
continuous variable s_v >= 0 per vertex (a task or a message of the owner's iteration) with
s_v >= s_u + w per edge and T >= s_u + w per end, so the smallest T is at least the longest
path, and equal to it at the optimum (the potentials can sit on the longest path).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mpsl.plan import owner_micro_batches
from mpsl.topology import Topology
from planner.cutenum import ENUM_MAX, Scores, best_row, excluded, scores, space_size
from planner.cutmodel import CutModel, Form, PathGraph, build
from planner.milp import Lin, LinearProgram, Solution, lin_sum
from planner.profile import Profile
from planner.resources import (
    BYTES_PER_MB,
    PlanningError,
    iterations_per_epoch,
    node_profiles,
    owner_samples,
)

# enum: every cut tuple (planner.cutenum); highs: in process (scipy); cbc: PuLP's subprocess;
# auto: enum up to cutenum.ENUM_MAX tuples, else highs (scipy, a dependency)
SOLVERS = ("cbc", "highs", "enum", "auto")
TIE_BREAK = 1e-6


class Infeasible(PlanningError):
    """No cuts satisfy the constraints; the message says which node or cut is to blame."""


@dataclass
class IlpResult:
    """The cuts, T (seconds per iteration), and the per-resource numbers behind it.

    `objective_T` is the largest busy time or path plus the aggregation term (`paths`
    holds the paths and `aggregation`); `loads` the busy seconds per resource per iteration.
    """

    cuts: tuple[int, ...]
    objective_T: float
    loads: dict[str, float]
    paths: dict[str, float]
    memory: dict[str, float]
    status: str
    solve_s: float
    solver: str
    caps: dict[str, float | None] = field(default_factory=dict)
    solved_T: float | None = None  # the solver's T + A: objective_T up to its tolerance


def _solver(name: str, model: CutModel, pinned: Sequence[int]) -> str:
    """The solver that runs (see SOLVERS)."""
    if name not in SOLVERS:
        raise PlanningError(f"unknown solver {name!r}; valid: {', '.join(SOLVERS)}")
    if name == "auto":
        if space_size(model, pinned) <= ENUM_MAX:
            return "enum"
        return "highs"
    return name


class _Ilp:
    """The cuts ILP's variables and shape constraints (see the module's docstring)."""

    def __init__(self, model: CutModel, pinned: Sequence[int]) -> None:
        self.m = model
        L, P = model.num_layers, model.num_parts
        self.lp = lp = LinearProgram()
        self.y = [[lp.var(f"y_{l}_{p}", 0, 1, integer=True) for p in range(P - 1)]
                  for l in range(L)]
        y = self.y
        for l in range(L):
            for p in range(P - 1):
                if p + 1 < P - 1:
                    lp.add(Lin({y[l][p]: 1.0, y[l][p + 1]: -1.0}), hi=0.0)
                if l + 1 < L:
                    lp.add(Lin({y[l + 1][p]: 1.0, y[l][p]: -1.0}), hi=0.0)
        lp.add(Lin({y[0][0]: 1.0}), 1.0, 1.0)
        lp.add(Lin({y[L - 1][P - 2]: 1.0}), 0.0, 0.0)
        for p in range(P):
            cnt = Form()
            cnt.add_x(p, [1.0] * L)
            lp.add(self.expr(cnt), lo=1.0)
        for c in pinned:
            f = Form()
            for p in range(P - 1):
                f.add_z(p, [1.0 if l == c - 1 else 0.0 for l in range(L - 1)])
            lp.add(self.expr(f), 1.0, 1.0)

    def expr(self, f: Form) -> Lin:
        """The form over y: x(l,p) = y[l][p] - y[l][p-1] (y[l][-1] = 0, y[l][P-1] = 1)."""
        P, y = self.m.num_parts, self.y
        e = Lin(const=f.const)
        for p, row in f.x.items():
            for l, c in enumerate(row):
                if not c:
                    continue
                if p < P - 1:
                    e.put(y[l][p], c)
                else:
                    e.const += c
                if p > 0:
                    e.put(y[l][p - 1], -c)
        for p, row in f.z.items():
            for l, c in enumerate(row):
                if c:
                    e.put(y[l][p], c)
                    e.put(y[l + 1][p], -c)
        return e

    def path_ends(self, name: str, graph: PathGraph) -> list[Lin]:
        """Start-time variables of `graph`'s vertices (the start is 0) with s_v >= s_u + w
        for every edge; the expressions s_u + w of its ends."""
        tag = "".join(ch if ch.isalnum() else "_" for ch in name)
        s = [Lin()] + [Lin({self.lp.var(f"s_{tag}_{i}"): 1.0})
                       for i in range(1, len(graph.names))]
        weights: dict[int, Lin] = {}  # by form: micro-batches share their forms

        def weight(w: Form) -> Lin:
            got = weights.get(id(w))
            if got is None:
                got = weights[id(w)] = self.expr(w)
            return got

        for u, v, w in graph.edges:
            self.lp.le(s[u].plus(weight(w)), s[v])
        return [s[u].plus(weight(w)) for u, w in graph.ends]

    def cuts(self, x: np.ndarray) -> tuple[int, ...]:
        return tuple(round(float(sum(x[v] for v in col)))
                     for col in zip(*self.y)) if self.y[0] else ()


def _mb(x: float) -> str:
    return f"{x / BYTES_PER_MB:,.1f} MB"


def solve_cuts(
    profiles: Profile | Mapping[str, Profile],
    topo: Topology,
    *,
    owners: int | None = None,
    micro_batches: int | Sequence[int] | None = None,
    micro_batch_size: int | None = None,
    pinned_cuts: Sequence[int] | None = None,
    memory_caps: Mapping[str, float | None] | None = None,
    solver: str = "auto",
    exclude: Sequence[Sequence[int]] = (),
    time_limit_s: float | None = 60.0,
    round_iterations: float | None = None,
) -> IlpResult:
    """Optimal cuts for `topo` with K = `owners` (default: the topology's) and N per owner
    (`micro_batches`, default the topology's; or N = ceil(B / `micro_batch_size`)).

    `memory_caps` (bytes per node name) replace the topology's `memory_mb`; `pinned_cuts`
    default to `plan.pinned_cuts`; `exclude` lists cut tuples not to return (for the next
    best); `round_iterations` (iterations between aggregations) defaults to the data's.
    Raises Infeasible with the reason when nothing fits.
    """
    profs = node_profiles(topo, profiles, measure=False)
    if micro_batch_size is not None:
        n = -(-topo.training.batch_size // max(1, micro_batch_size))
        ns: Sequence[int] = [n] * len(topo.owners)
    elif micro_batches is None:
        ns = owner_micro_batches(topo)
    elif isinstance(micro_batches, int):
        ns = [micro_batches] * len(topo.owners)
    else:
        ns = list(micro_batches)
    if round_iterations is None:
        round_iterations = default_round_iterations(topo)
    model = build(topo, profs, ns, owners, round_iterations)
    if memory_caps is not None:
        model.caps.update({k: v for k, v in memory_caps.items() if k in model.caps})
    pinned = tuple(topo.plan.pinned_cuts if pinned_cuts is None else pinned_cuts)
    return solve_model(model, pinned, solver, exclude, time_limit_s)


def solve_model(model: CutModel, pinned: Sequence[int] = (), solver: str = "auto",
                exclude: Sequence[Sequence[int]] = (),
                time_limit_s: float | None = 60.0) -> IlpResult:
    """Solve a built CutModel (see solve_cuts)."""
    started = time.perf_counter()
    L, P = model.num_layers, model.num_parts
    _check_shape(model, pinned)
    if P == 1:
        t, loads, paths, memory = model.evaluate(())
        for node, used in memory.items():
            cap = model.caps.get(node)
            if cap is not None and used > cap:
                raise Infeasible(f"FL does not fit on {node}: needs {_mb(used)} > {_mb(cap)}")
        return IlpResult((), t, loads, paths, memory, "Optimal",
                         time.perf_counter() - started, "none", dict(model.caps))
    name = _solver(solver, model, pinned)
    if name == "enum":
        return _enumerated(model, pinned, exclude, started)
    ilp = _Ilp(model, pinned)
    lp = ilp.lp
    T, A = Lin({lp.var("T"): 1.0}), Lin({lp.var("A"): 1.0})
    exprs = [ilp.expr(f) for f in model.loads.values()]
    for path, graph in model.paths.items():
        exprs.extend(ilp.path_ends(path, graph))
    for e in exprs:
        lp.le(e, T)
    for f in model.aggregation.values():
        lp.le(ilp.expr(f), A)
    for node, f in model.memory.items():
        cap = model.caps.get(node)
        if cap is not None:
            lp.add(ilp.expr(f), hi=cap)
    for cuts in exclude:  # no-good: not every one of these cuts again
        if len(cuts) == P - 1:
            f = Form()
            for p, c in enumerate(cuts):
                f.add_z(p, [1.0 if l == c - 1 else 0.0 for l in range(L - 1)])
            lp.add(ilp.expr(f), hi=P - 2)
    lp.objective = T.plus(A).plus(lin_sum(exprs), TIE_BREAK / max(1, len(exprs)))
    sol = lp.solve(name, time_limit_s)
    solve_s = time.perf_counter() - started
    if sol.values is None:
        if exclude:
            raise Infeasible(f"no further cuts ({sol.status})")
        raise Infeasible(_diagnose(model, pinned, sol.status, name))
    cuts = ilp.cuts(sol.values)
    t, loads, paths, memory = model.evaluate(cuts)
    status = "Feasible (time limit)" if sol.limit else "Optimal"
    return IlpResult(cuts, t, loads, paths, memory, status, solve_s, name, dict(model.caps),
                     lp.value(T.plus(A), sol.values))


def _enumerated(model: CutModel, pinned: Sequence[int], exclude: Sequence[Sequence[int]],
                started: float) -> IlpResult:
    """The ILP's optimum by enumeration (`planner.cutenum`)."""
    sc = scores(model, pinned, TIE_BREAK)
    fits = sc.fits(model.caps)
    i = best_row(sc, fits & ~excluded(sc, exclude))
    if i is None:
        if exclude and fits.any():
            raise Infeasible("no further cuts (Infeasible)")
        raise Infeasible(_diagnose_enumerated(model, pinned, sc))
    cuts = tuple(int(c) for c in sc.bounds[i, 1:-1])
    t, loads, paths, memory = model.evaluate(cuts)
    return IlpResult(cuts, t, loads, paths, memory, "Optimal", time.perf_counter() - started,
                     "enum", dict(model.caps), float(sc.t[i]))


def default_round_iterations(topo: Topology, samples: Sequence[int] | None = None) -> float | None:
    """Iterations between aggregations: aggregate_every, else the mean per epoch (SL: per
    turn); None when the data's size is unknown."""
    if topo.training.aggregate_every is not None and topo.mode != "sl":
        return float(topo.training.aggregate_every)
    try:
        samples = owner_samples(topo) if samples is None else samples
    except (OSError, ValueError):
        return None
    its = [iterations_per_epoch(topo, s) for s in samples]
    return sum(its) / len(its)


def _check_shape(model: CutModel, pinned: Sequence[int]) -> None:
    L, P = model.num_layers, model.num_parts
    if L < P:
        raise Infeasible(f"{P} parts need at least {P} layers, the model has {L}")
    bad = [c for c in pinned if not 0 < c < L]
    if bad or len(set(pinned)) > P - 1:
        raise Infeasible(f"pinned cuts {list(pinned)} do not fit: {P - 1} cut(s) in 1..{L - 1}")


def _diagnose_enumerated(model: CutModel, pinned: Sequence[int], sc: Scores) -> str:
    """`_diagnose` from every tuple's memory."""
    if not len(sc.bounds):
        return f"no cuts are possible with pinned cuts {list(pinned)} (Infeasible)"
    for node, used in sc.memory.items():
        cap = model.caps.get(node)
        if cap is not None and used.min() > cap * (1 + 1e-9):
            i = int(np.argmin(used))
            return (f"{node} cannot hold any part it may be given: needs at least "
                    f"{_mb(float(used[i]))} > {_mb(cap)} (cuts {sc.bounds[i, 1:-1].tolist()})")
    capped = ", ".join(f"{n} {_mb(c)}" for n, c in model.caps.items() if c is not None)
    return f"no cuts fit every node's memory at once ({capped}); raise a memory_mb"


def _diagnose(model: CutModel, pinned: Sequence[int], status: str, solver: str) -> str:
    """Why nothing fits: the first node that cannot hold even its smallest share."""
    for node, f in model.memory.items():
        cap = model.caps.get(node)
        if cap is None:
            continue
        ilp = _Ilp(model, pinned)
        least_mem = ilp.expr(f)
        ilp.lp.objective = least_mem
        sol: Solution = ilp.lp.solve(solver, None)
        if sol.values is None:
            return f"no cuts are possible with pinned cuts {list(pinned)} ({status})"
        least = ilp.lp.value(least_mem, sol.values)
        if least > cap * (1 + 1e-9):
            return (f"{node} cannot hold any part it may be given: needs at least "
                    f"{_mb(least)} > {_mb(cap)} (cuts {list(ilp.cuts(sol.values))})")
    capped = ", ".join(f"{n} {_mb(c)}" for n, c in model.caps.items() if c is not None)
    return f"no cuts fit every node's memory at once ({capped}); raise a memory_mb"
