"""The planner the aggregator re-plans with during a run (nodes.replan): the planner's choice
(`choose_plan`) at the links' measured rates, with the profiles read or measured once, before
the run's clock starts. `mpsl run` and `mpsl node` hand `aps_planner` to the aggregator, so
that nodes and planner stay apart."""

from __future__ import annotations

from collections.abc import Callable

from mpsl.plan import Plan
from mpsl.topology import Topology
from planner.aps import choose_plan
from planner.resources import node_profiles


def aps_planner(topo: Topology) -> Callable[[Topology, Plan], Plan]:
    """A planner for `topo`'s run: (the topology at the measured rates, the current plan) ->
    the best plan the planner finds for it (its schedule may change; its placement does not).
    With `plan.per_owner`, each owner may get cuts and N of its own (`planner.owner_cuts`);
    owners whose cuts `data_owners.overrides` gives keep them, FL owners included."""
    profiles = node_profiles(topo)  # the topology's profile files, else this host, measured

    def plan(at: Topology, current: Plan) -> Plan:
        return choose_plan(at, profiles, top=1, bound=False).best.plan

    return plan


def replanner_for(topo: Topology) -> Callable[[Topology], Callable[[Topology, Plan], Plan]] | None:
    """What `mpsl run` and `mpsl node` hand the aggregator: `aps_planner` when the topology
    re-plans with the planner, else None."""
    return aps_planner if topo.replan.enabled and topo.replan.planner == "aps" else None
