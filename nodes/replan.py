"""Online re-planning, the aggregator's side (a node's side of the switch: nodes.switch).

At each aggregation boundary r (every owner's PARAMS of round r are in, nothing is in flight:
the owners wait for round r's GLOBAL), the aggregator compares each owner link's measured rate
(nodes.throughput: an owner's uplinks, reported in its PARAMS; its downlink, reported by the
compute nodes that send to it) with the rate the current plan assumed. When one drifted by
more than `replan.threshold`, and `replan.min_interval_s` passed since the last re-plan, it
plans again with the measured rates (the planner `mpsl run` hands it, or `replan.planner:
fixed`), records the re-plan, and, when the plan changed (or the planner is `fixed`: a re-plan
that keeps the plan still switches), switches every node to it: `switch` to all, their
`handover`, each its `handin`, the compute nodes' `switched`; then round r's GLOBAL carries the
owners' new parts. The aggregator itself takes the new plan when the next round starts (an
epoch's evaluation still takes the compute nodes' PARAMS of round r, of the old plan); until
then it takes what either plan's rules take (`EitherRules`).

Per-owner plans (`plan.per_owner`, or `data_owners.overrides` with cuts): the planner may give
each owner cuts and N of its own, and the switch moves each owner's layers between it and its
own compute nodes (nodes.switch); an owner whose cuts stay moves nothing. A plan may go from
one cut tuple for all to per-owner cuts and back: the compute nodes then average their copies
themselves, or the aggregator averages whole models (nodes.owner_plans), from the next round.

When only N changes (the same cuts for every owner), the switch still waits for the
aggregation boundary: the rates that decide a re-plan reach the aggregator only there (in the
owners' PARAMS and the compute nodes' `rates` at a round's end), so an aggregation boundary is
the first iteration boundary after the decision, and nothing is in flight there. A switch
inside a round would need rate reports every iteration and compute nodes that take a new N
from an iteration the owner names (their admission checks each ACT's `n_mb` against the
plan's N). At the boundary such a switch moves no tensors: its handovers and handins are empty
(tens of ms for the small runs of tests/e2e/test_replan.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from mpsl.actions import Action, Msg
from mpsl.bandwidth import ReplanSpec
from mpsl.names import CPU, OWNER, owner_name
from mpsl.plan import Plan, make_plan
from mpsl.topology import Topology
from mpsl.trace import Event
from mpsl.training import num_layers
from nodes.admission import Rules
from nodes.node import NodeError
from nodes.switch import layer_of, layers_of
from nodes.throughput import drifts, link_rate, valid_rate
from nodes.wire import Message

if TYPE_CHECKING:
    from nodes.aggregator import Aggregator

log = logging.getLogger(__name__)
Planner = Callable[[Topology, Plan], Plan]  # (the topology at the measured rates, the plan)
PlannerFactory = Callable[[Topology], Planner]  # made once, before the run's clock starts
Tensors = dict[str, torch.Tensor]


def fixed_planner(spec: ReplanSpec) -> Planner:
    """`replan.planner: fixed`: its cuts, owners' cuts and N, the current plan's where not
    given (owners' own cuts are kept only with the plan's cuts)."""

    def plan(topo: Topology, current: Plan) -> Plan:
        ns = current.micro_batches if spec.micro_batches is None else spec.micro_batches
        owners = {k: c for k, c in current.owner_cuts} if spec.cuts is None else {}
        owners.update(spec.owner_cuts or ())
        return make_plan(topo, num_layers(topo), spec.cuts or current.cuts, ns,
                         current.schedule, owner_cuts=owners)

    return plan


def at_rates(topo: Topology, rates: dict[str, float | None]) -> Topology:
    """The topology with each owner's link rates as measured (`NAME uplink`/`NAME downlink`)."""
    owners = tuple(replace(o, uplink_mbps=rates.get(f"{o.name} uplink", o.uplink_mbps),
                           downlink_mbps=rates.get(f"{o.name} downlink", o.downlink_mbps))
                   for o in topo.owners)
    return replace(topo, owners=owners)


class Replanning:
    """The aggregator's re-planning: measure, decide, plan, switch, record (`records`)."""

    def __init__(self, agg: Aggregator, factory: PlannerFactory | None) -> None:
        self.agg, self.spec = agg, agg.topo.replan
        if self.spec.planner == "fixed":
            self.planner = fixed_planner(self.spec)
        elif factory is None:
            raise NodeError(f"{agg.name}: replan.planner aps needs the planner (`mpsl run` and "
                            "`mpsl node` hand it over)")
        else:
            self.planner = factory(agg.topo)
        self.assumed: dict[str, float | None] = {}
        for o in agg.topo.owners:
            self.assumed[f"{o.name} uplink"] = o.uplink_mbps
            self.assumed[f"{o.name} downlink"] = o.downlink_mbps
        self.records: list[dict[str, Any]] = []
        self.last = -math.inf  # when the last re-plan was (monotonic)
        self.adopt_next: Plan | None = None  # the aggregator's own plan from the next round
        self.edges = [c for c in agg.topo.chain if OWNER in _neighbours(agg.plan, c)]

    # measuring -------------------------------------------------------------------------------
    def measured(self, r: int, got: dict[int, Message]
                 ) -> tuple[dict[str, float | None], dict[str, float | None]]:
        """Each owner link's measured rate at round r's end, over the window and now:
        uplinks from the owners' PARAMS, downlinks from the compute nodes' reports (else the
        aggregator's own GLOBAL sends)."""
        agg, window, now = self.agg, {}, {}
        reports: dict[str, tuple[float, float]] = {}
        for c in self.edges:
            msg = agg.wait(lambda m, c=c: m.kind == Msg.CONTROL and m.src == c  # type: ignore[misc]
                           and m.meta.get("type") == "rates" and m.iter == r,
                           f"{c}'s link rates of round {r}")
            rates = msg.meta.get("rates")
            for name, v in (rates.items() if isinstance(rates, dict) else ()):
                pair = [valid_rate(x) for x in v] if isinstance(v, list) and len(v) == 2 else []
                if pair and None not in pair and isinstance(name, str):
                    reports[name] = (float(v[0]), float(v[1]))
        for k, msg in got.items():
            name = owner_name(k)
            meta = msg.meta.get("rates")
            meta = meta if isinstance(meta, dict) else {}
            window[f"{name} uplink"] = valid_rate(meta.get("uplink_mbps"))
            now[f"{name} uplink"] = valid_rate(meta.get("uplink_now_mbps"))
            link = {f"{agg.name}->{name}"}
            own = (link_rate(agg.events, link, self.spec.window_s),
                   link_rate(agg.events, link, 0.0))
            window[f"{name} downlink"], now[f"{name} downlink"] = reports.get(name, own)
        return window, now

    # the boundary ----------------------------------------------------------------------------
    def at_boundary(self, r: int, got: dict[int, Message], avg: Tensors) -> Tensors:
        """Re-plan after round r when a link drifted; the GLOBAL the owners get (`avg`, or,
        after a switch, the owners' new parts of the global model)."""
        window, measured = self.measured(r, got)
        if r + 1 >= self.agg.rules.rounds:
            return avg  # the run's last round: nothing left to plan for
        drifted = drifts(window, self.assumed, self.spec.threshold)
        log.debug("%s: round %d: measured %s", self.agg.name, r, window)
        if not drifted or time.monotonic() - self.last < self.spec.min_interval_s:
            return avg
        t0 = time.time()
        old = self.agg.plan
        topo = at_rates(self.agg.topo, {k: v for k, v in measured.items() if v is not None})
        new = self.planner(topo, old)
        planning_s = time.time() - t0
        switch = new != old or self.spec.planner == "fixed"
        why = "; ".join(f"{k} {_mbps(window[k])} Mbps, assumed {_mbps(self.assumed.get(k))}"
                        for k in drifted)
        self.assumed.update({k: v for k, v in measured.items() if v is not None})
        self.last = time.monotonic()
        self.heard_all()
        t1 = time.time()
        if switch:
            avg = self.switch(r, new)
        t2 = time.time()
        self.heard_all()
        self.agg.events.append(Event(self.agg.name, CPU, str(Action.plan()), None, r, None,
                                     t0, t2))
        self.records.append({
            "round": r, "t_s": round(t0 - self.agg.t_start, 3), "why": why,
            "old": old.to_json(), "new": new.to_json(), "old_plan": old.describe(),
            "new_plan": new.describe(), "switched": switch, "planning_s": planning_s,
            "switch_s": t2 - t1, "measured_mbps": measured})
        log.info("%s: re-planned after round %d (%s): %s -> %s%s, %.3f s planning, %.3f s "
                 "switching", self.agg.name, r, why, old.describe(), new.describe(),
                 "" if switch else " (kept)", planning_s, t2 - t1)
        self.agg.tell_monitor(type="replan", round=r, plan=new.describe())
        return avg

    def switch(self, r: int, new: Plan) -> Tensors:
        """Switch every node to `new` after round r; the owners' new parts of the global
        model (round r's GLOBAL)."""
        agg, old = self.agg, self.agg.plan
        owners = sorted(agg.members.active)
        nodes = list(agg.topo.chain) + [owner_name(k) for k in owners]
        for n in nodes:
            agg.send(n, Msg.CONTROL, iteration=r, type="switch", round=r, plan=new.to_json(),
                     trace=False)
        came: dict[str, Tensors] = {}
        for n in nodes:
            came[n] = agg.wait(lambda m, n=n: m.kind == Msg.CONTROL  # type: ignore[misc]
                               and m.src == n and m.meta.get("type") == "handover"
                               and m.iter == r, f"{n}'s handover after round {r}").tensors
        params = {k: v for t in came.values() for k, v in t.items() if k.startswith("p/")}
        held = layers_of(old, OWNER)  # per-owner plans: the aggregator holds every layer
        params.update((f"p/{key}", v) for key, v in agg.owner_state.items()
                      if not old.uniform or layer_of(key) in held)
        opt = {k: v for t in came.values() for k, v in t.items() if k.startswith("o/")}
        for n in nodes:
            holder = n if n in agg.topo.chain else OWNER
            ks = range(len(new.micro_batches)) if holder != OWNER else [agg.topo.owner(n).index]
            tensors: Tensors = {}
            for k in ks:  # each owner's layers that come to `n`, by that owner's cuts
                coming = layers_of(new, holder, k) - layers_of(old, holder, k)
                tensors.update((key, v) for key, v in params.items() if layer_of(key[2:]) in coming)
                tensors.update((key, v) for key, v in opt.items()
                               if key.startswith(f"o/{k}/") and layer_of(key.split("/", 2)[2])
                               in coming)
            agg.send(n, Msg.CONTROL, iteration=r, type="handin", round=r, tensors=tensors)
        agg.owner_state.update((k[2:], v) for k, v in params.items())
        for c in agg.topo.chain:  # before any owner's work of the next round reaches it
            agg.wait(lambda m, c=c: m.kind == Msg.CONTROL and m.src == c  # type: ignore[misc]
                     and m.meta.get("type") == "switched" and m.iter == r,
                     f"{c}'s switch after round {r}")
        self.adopt_next = new
        agg.rules = EitherRules(agg.topo, new, agg.rules)
        mine = layers_of(new, OWNER)
        return {k: v for k, v in agg.owner_state.items() if layer_of(k) in mine}

    def heard_all(self) -> None:
        """Every node counts as heard now: while the aggregator planned, their heartbeats
        waited in its inbox, unread (liveness: nodes.presence)."""
        now = time.monotonic()
        for name in list(self.agg.members.last_heard):
            self.agg.members.last_heard[name] = now

    def adopt(self) -> None:
        """The aggregator takes the new plan as the next round starts."""
        if self.adopt_next is None:
            return
        agg, plan = self.agg, self.adopt_next
        rules = Rules(agg.topo, plan, agg.name)
        rules.round = agg.rules.round
        agg.plan, agg.rules, self.adopt_next = plan, rules, None


class EitherRules(Rules):
    """The aggregator's rules between a switch and the next round: the new plan's, and what
    the old plan's take (round r's PARAMS of the compute nodes for the epoch's evaluation may
    still wait in its inbox, and the next round's may come early)."""

    def __init__(self, topo: Topology, plan: Plan, old: Rules) -> None:
        super().__init__(topo, plan, old.name)
        self.round, self.old = old.round, old

    def check(self, msg: Any, run_id: str = "") -> tuple[str, str] | None:
        refused = super().check(msg, run_id)
        if refused is None:
            return None
        self.old.round = self.round
        return refused if self.old.check(msg, run_id) is not None else None


def _neighbours(plan: Plan, node: str) -> set[str]:
    (part,) = plan.parts_on(node)
    nxt = plan.placement[part + 1] if part + 1 < plan.num_parts else None
    return {plan.placement[part - 1]} | ({nxt} if nxt else set())


def _mbps(x: float | None) -> str:
    return "unshaped" if x is None else f"{x:.3g}"


def replan_record(topo: Topology, replanning: Replanning | None,
                  wall_s: float) -> dict[str, Any]:
    """results.json's `replans` (each re-plan: when, why, old and new plan, planning and switch
    time) and `bandwidth` (each owner's schedule steps that took effect during the run)."""
    out: dict[str, Any] = {"replans": replanning.records if replanning is not None else []}
    steps = {o.name: [{"at_s": s.at_s, "uplink_mbps": s.uplink_mbps or o.uplink_mbps,
                       "downlink_mbps": s.downlink_mbps or o.downlink_mbps}
                      for s in o.bandwidth_schedule.changes(wall_s)]
             for o in topo.owners if o.bandwidth_schedule is not None}
    if steps:
        out["bandwidth"] = steps
    return out
