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
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulp

from mpsl.plan import owner_micro_batches
from mpsl.topology import Topology
from planner.cutmodel import CutModel, Form, PathGraph, build
from planner.profile import Profile
from planner.resources import (
    BYTES_PER_MB,
    PlanningError,
    iterations_per_epoch,
    node_profiles,
    owner_samples,
)

SOLVERS = ("cbc", "highs", "auto")
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


def highs_available() -> bool:
    return bool(pulp.HiGHS(msg=False).available())


def _solver(name: str, time_limit_s: float | None) -> tuple[pulp.LpSolver, str]:
    if name not in SOLVERS:
        raise PlanningError(f"unknown solver {name!r}; valid: {', '.join(SOLVERS)}")
    if name == "highs" or name == "auto" and highs_available():
        s = pulp.HiGHS(msg=False, timeLimit=time_limit_s)
        if not s.available():
            raise PlanningError("solver 'highs' needs highspy: pip install highspy")
        return s, "highs"
    return _cbc(time_limit_s), "cbc"


def _cbc(time_limit_s: float | None = None) -> pulp.LpSolver:
    """CBC: a system one (COIN_CMD) when installed, else the binary bundled with PuLP."""
    coin = pulp.COIN_CMD(msg=False, timeLimit=time_limit_s)
    if coin.available():
        return coin
    with warnings.catch_warnings():  # deprecated for PuLP 4.0, still the bundled binary
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s)


class _Ilp:
    def __init__(self, model: CutModel, pinned: Sequence[int]) -> None:
        self.m = model
        L, P = model.num_layers, model.num_parts
        self.prob = pulp.LpProblem("cuts", pulp.LpMinimize)
        self.y = [[self.prob.add_variable(f"y_{l}_{p}", 0, 1, cat="Binary")
                   for p in range(P - 1)] for l in range(L)]
        y, add = self.y, self.prob.addConstraint
        for l in range(L):
            for p in range(P - 1):
                if p + 1 < P - 1:
                    add(y[l][p] <= y[l][p + 1])
                if l + 1 < L:
                    add(y[l + 1][p] <= y[l][p])
        add(y[0][0] == 1)
        add(y[L - 1][P - 2] == 0)
        for p in range(P):
            cnt = Form()
            cnt.add_x(p, [1.0] * L)
            add(self.expr(cnt) >= 1)
        for c in pinned:
            f = Form()
            for p in range(P - 1):
                f.add_z(p, [1.0 if l == c - 1 else 0.0 for l in range(L - 1)])
            add(self.expr(f) == 1)

    def expr(self, f: Form) -> pulp.LpAffineExpression:
        """The form over y: x(l,p) = y[l][p] - y[l][p-1] (y[l][-1] = 0, y[l][P-1] = 1)."""
        P, y = self.m.num_parts, self.y
        coef: dict[pulp.LpVariable, float] = {}
        const = f.const

        def put(v: pulp.LpVariable, c: float) -> None:
            coef[v] = coef.get(v, 0.0) + c

        for p, row in f.x.items():
            for l, c in enumerate(row):
                if not c:
                    continue
                if p < P - 1:
                    put(y[l][p], c)
                else:
                    const += c
                if p > 0:
                    put(y[l][p - 1], -c)
        for p, row in f.z.items():
            for l, c in enumerate(row):
                if c:
                    put(y[l][p], c)
                    put(y[l + 1][p], -c)
        return pulp.LpAffineExpression([(v, c) for v, c in coef.items() if c], const)

    def path_ends(self, name: str, graph: PathGraph) -> list[pulp.LpAffineExpression]:
        """Start-time variables of `graph`'s vertices (the start is 0) with s_v >= s_u + w
        for every edge; the expressions s_u + w of its ends."""
        tag = "".join(ch if ch.isalnum() else "_" for ch in name)
        s: list[pulp.LpAffineExpression | pulp.LpVariable | float] = [0.0] + [
            self.prob.add_variable(f"s_{tag}_{i}", lowBound=0) for i in range(1, len(graph.names))]
        for u, v, w in graph.edges:
            self.prob.addConstraint(s[v] >= s[u] + self.expr(w))
        return [s[u] + self.expr(w) for u, w in graph.ends]

    def cuts(self) -> tuple[int, ...]:
        return tuple(round(sum(v.value() for v in col))
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
    solver: str = "cbc",
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


def solve_model(model: CutModel, pinned: Sequence[int] = (), solver: str = "cbc",
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
    ilp = _Ilp(model, pinned)
    T = ilp.prob.add_variable("T", lowBound=0)
    A = ilp.prob.add_variable("A", lowBound=0)
    exprs = [ilp.expr(f) for f in model.loads.values()]
    for name, graph in model.paths.items():
        exprs.extend(ilp.path_ends(name, graph))
    for e in exprs:
        ilp.prob.addConstraint(e <= T)
    for f in model.aggregation.values():
        ilp.prob.addConstraint(ilp.expr(f) <= A)
    for node, f in model.memory.items():
        cap = model.caps.get(node)
        if cap is not None:
            ilp.prob.addConstraint(ilp.expr(f) <= cap)
    for cuts in exclude:  # no-good: not every one of these cuts again
        if len(cuts) == P - 1:
            f = Form()
            for p, c in enumerate(cuts):
                f.add_z(p, [1.0 if l == c - 1 else 0.0 for l in range(L - 1)])
            ilp.prob.addConstraint(ilp.expr(f) <= P - 2)
    ilp.prob.setObjective(T + A + TIE_BREAK / max(1, len(exprs)) * pulp.lpSum(exprs))
    engine, name = _solver(solver, time_limit_s)
    ilp.prob.solve(engine)
    status = pulp.LpStatus[ilp.prob.status]
    solve_s = time.perf_counter() - started
    if status != "Optimal" or ilp.prob.sol_status not in (1, 2):
        if exclude:
            raise Infeasible(f"no further cuts ({status})")
        raise Infeasible(_diagnose(model, pinned, status))
    cuts = ilp.cuts()
    t, loads, paths, memory = model.evaluate(cuts)
    if ilp.prob.sol_status == 2:
        status = "Feasible (time limit)"
    return IlpResult(cuts, t, loads, paths, memory, status, solve_s, name, dict(model.caps),
                     float(pulp.value(T) + pulp.value(A)))


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


def _diagnose(model: CutModel, pinned: Sequence[int], status: str) -> str:
    """Why nothing fits: the first node that cannot hold even its smallest share."""
    for node, f in model.memory.items():
        cap = model.caps.get(node)
        if cap is None:
            continue
        ilp = _Ilp(model, pinned)
        ilp.prob.setObjective(ilp.expr(f))
        ilp.prob.solve(_cbc())
        if pulp.LpStatus[ilp.prob.status] != "Optimal":
            return f"no cuts are possible with pinned cuts {list(pinned)} ({status})"
        least = pulp.value(ilp.prob.objective)
        if least > cap * (1 + 1e-9):
            return (f"{node} cannot hold any part it may be given: needs at least "
                    f"{_mb(least)} > {_mb(cap)} (cuts {list(ilp.cuts())})")
    capped = ", ".join(f"{n} {_mb(c)}" for n, c in model.caps.items() if c is not None)
    return f"no cuts fit every node's memory at once ({capped}); raise a memory_mb"
