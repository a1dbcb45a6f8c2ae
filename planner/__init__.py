"""planner."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Profile": "planner.profile", "ProfileError": "planner.profile",
    "measure_profile": "planner.measure", "byte_profile": "planner.measure",
    "profile_sizes": "planner.measure",
    "Estimate": "planner.estimate",
    "simulate": "planner.cost",
    "IlpResult": "planner.ilp", "Infeasible": "planner.ilp", "solve_cuts": "planner.ilp",
    "choose_n": "planner.nchoice", "choose_plan": "planner.aps", "exhaustive": "planner.aps",
    "Candidate": "planner.report", "PlanReport": "planner.report",
    "Bound": "planner.bound", "lower_bound": "planner.bound",
    "PlanningError": "planner.resources", "node_profiles": "planner.resources",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import on first use, so `import planner.profile` stays light."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'planner' has no attribute {name!r}")
