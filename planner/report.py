"""Planner output as data: candidates (a plan and its estimate) and the ranked report.

The CLI renders them (`mpsl.cli.tables`) from `to_json`, so tables and JSON show the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mpsl.plan import Plan
from planner.estimate import Estimate

if TYPE_CHECKING:
    from planner.bound import Bound


@dataclass
class Candidate:
    """A plan, its simulated estimate, where it came from (`ilp`, `ilp#2`, `topology`...)."""

    plan: Plan
    estimate: Estimate
    source: str = ""
    ilp_T: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The plan file's fields, the plan as text, its estimate and its source."""
        return {**self.plan.to_json(), "text": self.plan.describe(),
                "plans_by_owner": self.plan.plans_by_owner(),
                "estimate": self.estimate.to_json(), "source": self.source}


@dataclass
class PlanReport:
    """Candidates ranked by simulated epoch time, the best first, and a lower bound on the
    epoch of every plan of the planner's space (`planner.bound`; None: not computed)."""

    candidates: list[Candidate]
    solver: str
    solve_s: float
    plan_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    bound: Bound | None = None

    @property
    def best(self) -> Candidate:
        return self.candidates[0]

    @property
    def gap(self) -> float | None:
        """(best epoch - bound) / bound, None without a bound."""
        return None if self.bound is None else self.bound.gap(self.best.estimate.epoch_s)

    def to_json(self) -> dict[str, Any]:
        """The candidates, the solver, and the bound: `lower_bound_s` (seconds per epoch),
        `bound_from` (the term that gives it, where), the best plan's `gap` to it and
        `bound_s` (seconds spent on it); None where no bound was computed."""
        b = self.bound
        return {
            "best": self.best.to_json(),
            "candidates": [c.to_json() for c in self.candidates],
            "solver": self.solver,
            "solve_s": self.solve_s,
            "lower_bound_s": None if b is None else b.seconds,
            "bound_from": None if b is None else b.describe(),
            "gap": self.gap,
            "bound_s": None if b is None else b.compute_s,
        }
