"""A mixed-integer linear program as plain rows, solved in process by HiGHS (`scipy.optimize.
milp`) or through PuLP (CBC in a subprocess).

The cuts ILP (`planner.ilp`) writes its variables and constraints here once; the solver is a
choice made at the end. HiGHS runs in this process on a sparse matrix (no model files, no
process start: a solve of the planner's ILP takes milliseconds); CBC stays for comparison and
where scipy's HiGHS is missing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pulp

# HiGHS stops at this relative gap; the ILP's tie-break term is 1e-6 of the objective, so
# the default (1e-4) would return any of several cut tuples that CBC (gap 0) tells apart.
MIP_REL_GAP = 1e-12


@dataclass
class Lin:
    """A linear expression: sum of coef[v] x variable v, plus const."""

    coef: dict[int, float] = field(default_factory=dict)
    const: float = 0.0

    def put(self, v: int, c: float) -> None:
        self.coef[v] = self.coef.get(v, 0.0) + c

    def plus(self, other: Lin, scale: float = 1.0) -> Lin:
        """A new expression: this one + `scale` x `other`."""
        out = Lin(dict(self.coef), self.const + scale * other.const)
        for v, c in other.coef.items():
            out.put(v, scale * c)
        return out


@dataclass
class Solution:
    """A solver's answer: `status` ("Optimal", "Infeasible", ...), the variables' values
    where it found a solution, and whether it stopped at its time limit."""

    status: str
    values: np.ndarray | None
    limit: bool = False

    @property
    def found(self) -> bool:
        return self.values is not None


class LinearProgram:
    """Variables (bounds, integrality, names) and rows lo <= expression <= hi; minimize."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integer: list[bool] = []
        self.rows: list[tuple[dict[int, float], float, float]] = []
        self.objective = Lin()

    def var(self, name: str, lb: float = 0.0, ub: float = math.inf,
            integer: bool = False) -> int:
        self.names.append(name)
        self.lb.append(lb)
        self.ub.append(ub)
        self.integer.append(integer)
        return len(self.names) - 1

    def add(self, e: Lin, lo: float = -math.inf, hi: float = math.inf) -> None:
        """lo <= e <= hi."""
        coef = {v: c for v, c in e.coef.items() if c}
        self.rows.append((coef, lo - e.const, hi - e.const))

    def le(self, a: Lin, b: Lin) -> None:
        """a <= b."""
        self.add(a.plus(b, -1.0), hi=0.0)

    def value(self, e: Lin, x: np.ndarray) -> float:
        return e.const + math.fsum(c * float(x[v]) for v, c in e.coef.items())

    # ------------------------------------------------------------------ solvers

    def solve(self, solver: str, time_limit_s: float | None) -> Solution:
        """Solve with "highs" (scipy's, in process) or "cbc" (through PuLP, a subprocess)."""
        if solver == "highs":
            return self._highs(time_limit_s)
        return self._pulp(solver, time_limit_s)

    def _highs(self, time_limit_s: float | None) -> Solution:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import csr_array

        n = len(self.names)
        c = np.zeros(n)
        for v, k in self.objective.coef.items():
            c[v] += k
        data: list[float] = []
        rows: list[int] = []
        cols: list[int] = []
        for i, (coef, _, _) in enumerate(self.rows):
            rows.extend([i] * len(coef))
            cols.extend(coef)
            data.extend(coef.values())
        A = csr_array((data, (rows, cols)), shape=(len(self.rows), n))
        lo = np.array([r[1] for r in self.rows])
        hi = np.array([r[2] for r in self.rows])
        options: dict[str, object] = {"disp": False, "mip_rel_gap": MIP_REL_GAP}
        if time_limit_s is not None:
            options["time_limit"] = time_limit_s
        res = milp(c, integrality=np.array(self.integer, dtype=int),
                   bounds=Bounds(np.array(self.lb), np.array(self.ub)),
                   constraints=[LinearConstraint(A, lo, hi)] if self.rows else [],
                   options=options)
        x = None if res.x is None else np.asarray(res.x)
        if res.status == 0:
            return Solution("Optimal", x)
        if res.status == 1:
            return Solution("Optimal" if x is not None else "Not Solved", x, limit=True)
        return Solution({2: "Infeasible", 3: "Unbounded"}.get(res.status, "Undefined"), None)

    def _pulp(self, solver: str, time_limit_s: float | None) -> Solution:
        prob = pulp.LpProblem("cuts", pulp.LpMinimize)
        xs = [prob.add_variable(name, lb if math.isfinite(lb) else None,
                                ub if math.isfinite(ub) else None,
                                cat="Binary" if integer and lb == 0 and ub == 1 else
                                "Integer" if integer else "Continuous")
              for name, lb, ub, integer in zip(self.names, self.lb, self.ub, self.integer)]

        def expr(coef: dict[int, float], const: float = 0.0) -> pulp.LpAffineExpression:
            return pulp.LpAffineExpression([(xs[v], c) for v, c in coef.items()], const)

        for coef, lo, hi in self.rows:
            e = expr(coef)
            if lo == hi:
                prob.addConstraint(e == hi)
                continue
            if math.isfinite(lo):
                prob.addConstraint(e >= lo)
            if math.isfinite(hi):
                prob.addConstraint(e <= hi)
        prob.setObjective(expr(self.objective.coef, self.objective.const))
        prob.solve(pulp_solver(solver, time_limit_s))
        status = pulp.LpStatus[prob.status]
        if status != "Optimal" or prob.sol_status not in (1, 2):
            return Solution(status, None)
        values = np.array([v.value() or 0.0 for v in xs])
        return Solution(status, values, limit=prob.sol_status == 2)


def pulp_solver(name: str, time_limit_s: float | None = None) -> pulp.LpSolver:
    """PuLP's CBC (`name` "cbc"): a system one (COIN_CMD) when installed, else the binary
    bundled with PuLP."""
    if name != "cbc":
        raise ValueError(f"no PuLP solver {name!r} here: cbc")
    coin = pulp.COIN_CMD(msg=False, timeLimit=time_limit_s)
    if coin.available():
        return coin
    with warnings.catch_warnings():  # deprecated for PuLP 4.0, still the bundled binary
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s)


def lin_sum(items: Iterable[Lin]) -> Lin:
    """The sum of the expressions."""
    out = Lin()
    for e in items:
        out.const += e.const
        for v, c in e.coef.items():
            out.put(v, c)
    return out
