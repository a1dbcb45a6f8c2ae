"""Planner output: candidates (a plan and its estimate), the ranked report, JSON and tables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from mpsl.plan import Plan
from planner.estimate import Estimate, grouped
from planner.resources import BYTES_PER_MB


@dataclass
class Candidate:
    """A plan, its simulated estimate, where it came from (`ilp`, `ilp#2`, `topology`...)."""

    plan: Plan
    estimate: Estimate
    source: str = ""
    ilp_T: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "cuts": list(self.plan.cuts),
            "placement": list(self.plan.placement),
            "micro_batches": list(self.plan.micro_batches),
            "estimate": self.estimate.to_json(),
            "source": self.source,
        }


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan file `mpsl plan --out` writes and `mpsl run` reads."""
    return {"cuts": list(plan.cuts), "placement": list(plan.placement),
            "micro_batches": list(plan.micro_batches), "num_layers": plan.num_layers}


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

    def table(self, lines: int = 4) -> Table:
        """One row per candidate: plan, times, the bottleneck, the busiest processors and links
        (seconds per epoch) and the largest memories, owners folded, `lines` of each."""
        t = Table(title=f"plans ranked by simulated epoch time (solver {self.solver}, "
                        f"ILP {self.solve_s:.2f} s, planning {self.plan_s:.2f} s)")
        for col in ("#", "plan", "epoch s", "iter s", "bottleneck", "busy s (processors)",
                    "busy s (links)", "memory MB"):
            t.add_column(col, justify="right" if col in ("#", "epoch s", "iter s") else "left")
        for i, c in enumerate(self.candidates, 1):
            e = c.estimate
            procs = {r: s for r, s in e.busy_s.items() if "->" not in r}
            links = {r: s for r, s in e.busy_s.items() if "->" in r}
            util = e.utilization(e.bottleneck)
            t.add_row(
                str(i),
                f"{c.plan.describe()}\n[dim]{c.source}[/dim]",
                f"{e.epoch_s:.3f}",
                f"{e.iteration_s:.4f}",
                f"{e.bottleneck}\n{util:.0%} busy",
                folded_lines(procs, "{:.3f}", lines),
                folded_lines(links, "{:.3f}", lines),
                folded_lines({n: b / BYTES_PER_MB for n, b in e.memory_bytes.items()}, "{:.1f}",
                             lines),
            )
        return t


def folded_lines(values: Mapping[str, float], fmt: str, limit: int = 8) -> str:
    """`name value` lines, owners folded (`owner* (x1000) max`), the largest first."""
    rows = sorted(grouped(values).items(), key=lambda kv: -kv[1][0])
    out = [f"{g}{f' (x{n})' if n > 1 else ''} {fmt.format(v)}" for g, (v, n) in rows[:limit]]
    if len(rows) > limit:
        out.append(f"... {len(rows) - limit} more")
    return "\n".join(out)
