"""Planner output as data: candidates (a plan and its estimate) and the ranked report.

The CLI renders them (`mpsl.cli.tables`) from `to_json`, so tables and JSON show the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mpsl.plan import Plan
from planner.estimate import Estimate


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
                "estimate": self.estimate.to_json(), "source": self.source}


@dataclass
class PlanReport:
    """Candidates ranked by simulated epoch time, the best first."""

    candidates: list[Candidate]
    solver: str
    solve_s: float
    plan_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> Candidate:
        return self.candidates[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "best": self.best.to_json(),
            "candidates": [c.to_json() for c in self.candidates],
            "solver": self.solver,
            "solve_s": self.solve_s,
        }
