"""Bandwidth that changes during a run: an owner's `bandwidth_schedule`, and the `replan`
section that re-plans when the links' measured rates drift from what the plan assumed.

A schedule is a list of steps `{at_s, uplink_mbps, downlink_mbps}` (seconds from the run's
start; a rate left out keeps the one before, or the owner's static rate, which also holds
before the first step),
or a cycle `{cycle: [{uplink_mbps, downlink_mbps}, ...], period_s: T}`: each entry holds for T
seconds, in turn, from the run's start, for ever (4G / 4G+ / WiFi every T seconds). It is
given for every owner under `data_owners` and per owner under `data_owners.overrides[]`.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mpsl.schema import MISSING, FieldReader

if TYPE_CHECKING:
    from mpsl.spec import Topology

PLANNERS = ("aps", "fixed")
MAX_STEPS = 10_000


@dataclass(frozen=True)
class Step:
    """From `at_s` on (seconds from the run's start), the owner's rates in Mbps (None: its
    static rate, from the topology)."""

    at_s: float
    uplink_mbps: float | None
    downlink_mbps: float | None


@dataclass(frozen=True)
class BandwidthSchedule:
    """An owner's rates over time: `steps` in order of `at_s`; with `cycle_s`, the steps
    repeat every `cycle_s` seconds (their `at_s` within [0, cycle_s))."""

    steps: tuple[Step, ...]
    cycle_s: float | None = None

    def step_at(self, t: float) -> Step | None:
        """The step in force `t` s after the run's start; None before the first."""
        if self.cycle_s is not None:
            t = t % self.cycle_s if t >= 0 else -1.0
        i = bisect.bisect_right([s.at_s for s in self.steps], t) - 1
        return self.steps[i] if i >= 0 else None

    def changes(self, until_s: float) -> list[Step]:
        """Every step that takes effect in [0, until_s] (a cycle's, unrolled)."""
        if self.cycle_s is None:
            return [s for s in self.steps if s.at_s <= until_s]
        out: list[Step] = []
        laps = min(int(until_s // self.cycle_s) + 1, MAX_STEPS // max(1, len(self.steps)))
        for lap in range(laps):
            for s in self.steps:
                at = lap * self.cycle_s + s.at_s
                if at <= until_s:
                    out.append(Step(at, s.uplink_mbps, s.downlink_mbps))
        return out


@dataclass(frozen=True)
class LinkRates:
    """One link's rate over the run: `static` (the topology's) until the schedule's first
    step, then the schedule's uplink or downlink rate."""

    static: float | None
    schedule: BandwidthSchedule
    uplink: bool

    def rate_at(self, t: float) -> float | None:
        """The link's rate in Mbps `t` s after the run's start (None: unshaped)."""
        step = self.schedule.step_at(t)
        if step is None:
            return self.static
        rate = step.uplink_mbps if self.uplink else step.downlink_mbps
        return self.static if rate is None else rate


@dataclass(frozen=True)
class ReplanSpec:
    """Online re-planning (off by default): when a link's measured rate (the median of its
    messages' rates over the last `window_s` s) differs from the rate the current plan
    assumed by more than `threshold` (a fraction of it), the aggregator re-plans at the next
    aggregation, at most once every `min_interval_s`. `planner`: `aps` (the planner, with the
    measured rates; per owner with `plan.per_owner`) or `fixed` (`cuts`, `owner_cuts` (owner
    index, its cuts) and `micro_batches`; the current plan's when not given: a re-plan that
    keeps the plan but still carries out the switch)."""

    enabled: bool = False
    threshold: float = 0.3
    min_interval_s: float = 0.0
    window_s: float = 5.0
    planner: str = "aps"
    cuts: tuple[int, ...] | None = None
    micro_batches: int | None = None
    owner_cuts: tuple[tuple[int, tuple[int, ...]], ...] | None = None


def parse_schedule(r: FieldReader, key: str) -> BandwidthSchedule | None:
    """The `bandwidth_schedule` field of the mapping `r` reads (a list of steps or a cycle)."""
    raw = r.raw(key, None)
    if raw is None:
        return None
    where = f"{r.path}.{key}" if r.path else key
    if isinstance(raw, dict):
        c = FieldReader(r.source, raw, where)
        period = c.number("period_s", positive=True)
        items = c.raw("cycle")
        if not isinstance(items, list) or not items or len(items) > MAX_STEPS:
            raise c.fail("cycle", items, "a non-empty list of {uplink_mbps, downlink_mbps}")
        c.finish()
        steps = _steps(c, "cycle", items, period)
        return BandwidthSchedule(steps, period * len(steps))
    if not isinstance(raw, list) or not raw or len(raw) > MAX_STEPS:
        raise r.fail(key, raw, "a non-empty list of {at_s, uplink_mbps, downlink_mbps}, or "
                     "{cycle: [...], period_s: T}")
    return BandwidthSchedule(_steps(r, key, raw, None))


def _steps(r: FieldReader, key: str, items: list[Any], period: float | None) -> tuple[Step, ...]:
    """The steps of a list (`period` None: each has its `at_s`) or of a cycle."""
    steps: list[Step] = []
    up: float | None = None
    down: float | None = None
    for i, item in enumerate(items):
        s = FieldReader(r.source, item, f"{r._field(key)}[{i}]")
        at = float(i) * period if period is not None else s.number("at_s")
        if period is None and steps and not at > steps[-1].at_s:
            raise s.fail("at_s", at, f"more than the step before ({steps[-1].at_s:g})")
        if not math.isfinite(at):
            raise s.fail("at_s", at, "a finite number")
        up = s.number("uplink_mbps", up, positive=True)
        down = s.number("downlink_mbps", down, positive=True)
        if up is None and down is None:
            raise s.fail("uplink_mbps", MISSING, "uplink_mbps or downlink_mbps")
        s.finish()
        steps.append(Step(at, up, down))
    return tuple(steps)


def parse_replan(top: FieldReader) -> ReplanSpec:
    """The `replan` section: absent (or `off`/false) is off; a mapping turns it on."""
    raw = top.raw("replan", None)
    if raw is None or raw is False or raw == "off":
        return ReplanSpec()
    p = top.sub("replan")
    cuts = p.raw("cuts", None)
    if cuts is not None and (not isinstance(cuts, list) or not all(
            type(c) is int and c >= 1 for c in cuts)):
        raise p.fail("cuts", cuts, "a list of integers >= 1")
    owner_cuts = _owner_cuts(p)
    spec = ReplanSpec(
        enabled=p.flag("enabled", True),
        threshold=p.number("threshold", 0.3, positive=True),
        min_interval_s=p.number("min_interval_s", 0.0),
        window_s=p.number("window_s", 5.0, positive=True),
        planner=p.text("planner", "aps", PLANNERS),
        cuts=None if cuts is None else tuple(cuts),
        micro_batches=p.integer("micro_batches", None, minimum=1),
        owner_cuts=owner_cuts,
    )
    p.finish()
    if spec.planner == "aps" and (spec.cuts is not None or spec.micro_batches is not None
                                  or spec.owner_cuts is not None):
        raise p.fail("planner", "aps", "fixed with cuts, owner_cuts or micro_batches")
    return spec


def _owner_cuts(p: FieldReader) -> tuple[tuple[int, tuple[int, ...]], ...] | None:
    """`replan.owner_cuts`: `[{owner: INDEX, cuts: [...]}, ...]`, owners distinct, in order."""
    raw = p.raw("owner_cuts", None)
    if raw is None:
        return None
    want = "a list of {owner: index, cuts: [integers >= 1]}"
    if not isinstance(raw, list) or not all(
            isinstance(e, dict) and set(e) == {"owner", "cuts"} and type(e["owner"]) is int
            and isinstance(e["cuts"], list) and all(type(c) is int and c >= 1 for c in e["cuts"])
            for e in raw):
        raise p.fail("owner_cuts", raw, want)
    owners = [e["owner"] for e in raw]
    if owners != sorted(set(owners)):
        raise p.fail("owner_cuts", raw, "distinct owners, in order")
    return tuple((e["owner"], tuple(e["cuts"])) for e in raw)


def link_rates(topo: Topology, src: str, dst: str) -> LinkRates | None:
    """The rates over the run of the link `src` -> `dst`: an owner's uplink (from it) or
    downlink (to it) when that owner has a schedule; None for a link of constant rate."""
    for o in topo.owners:
        if o.bandwidth_schedule is not None and o.name in (src, dst):
            up = o.name == src
            static = o.uplink_mbps if up else o.downlink_mbps
            return LinkRates(static, o.bandwidth_schedule, up)
    return None


def check_replan(topo: Topology) -> None:
    """Re-planning needs a split mode and none of the failure handling that restores a plan's
    state (checkpoints, restarts, stragglers); `fixed` cuts as many as the plan's, for owners
    of the topology that take no cuts of their own (`data_owners.overrides`)."""
    from mpsl.schema import TopologyError
    from mpsl.spec import expected_cut_count

    spec = topo.replan
    if not spec.enabled:
        return
    f = topo.failure
    why = ("mode " + topo.mode if topo.mode in ("fl", "sl") else
           "failure.checkpoint" if f.checkpoint else "failure.restart" if f.restart else
           "failure.min_owners" if f.min_owners is not None else None)
    if why is not None:
        raise TopologyError(topo.source, "replan", "on", f"no re-planning with {why}")
    count = expected_cut_count(topo)
    if spec.cuts is not None and len(spec.cuts) != count:
        raise TopologyError(topo.source, "replan.cuts", list(spec.cuts), f"{count} cut(s)")
    for i, (k, cuts) in enumerate(spec.owner_cuts or ()):
        field = f"replan.owner_cuts[{i}]"
        if not 0 <= k < len(topo.owners):
            raise TopologyError(topo.source, field + ".owner", k,
                                f"an owner index below {len(topo.owners)}")
        if topo.owners[k].cuts is not None:
            raise TopologyError(topo.source, field + ".owner", k, "an owner whose cuts "
                                "data_owners.overrides does not give")
        if len(cuts) != count:
            raise TopologyError(topo.source, field + ".cuts", list(cuts), f"{count} cut(s)")
    if spec.micro_batches is not None and spec.micro_batches > topo.training.batch_size:
        raise TopologyError(topo.source, "replan.micro_batches", spec.micro_batches,
                            f"at most training.batch_size ({topo.training.batch_size})")
