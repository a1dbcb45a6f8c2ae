"""Plans: the cuts, which node runs each part, N micro-batches per data owner, the schedule;
and the plan file that `mpsl plan --out` writes and every node reads."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from mpsl.cuts import check_cuts
from mpsl.names import OWNER
from mpsl.topology import SCHEDULE_NAMES, Topology, expected_cut_count

SINGLE_BATCH_MODES = ("sfl", "sl", "fl")  # modes that run one micro-batch per iteration
PLAN_FILE_MAX_BYTES = 1 << 20


class PlanError(ValueError):
    """A plan does not fit its model or topology."""


@dataclass(frozen=True)
class Plan:
    """Cuts, placement, micro-batch counts and the schedule.

    `cuts` are the first layers of the parts after the first, so part i is
    `[bounds[i], bounds[i+1])` with bounds = (0, *cuts, num_layers). `placement[i]` is
    `OWNER` (every data owner runs it) or a compute node's name. `micro_batches[k]` is N for
    owner k. The loss is computed where the last part runs. `schedule` names the order of
    the owner's passes (`mpsl.schedule.SCHEDULES`); `max_in_flight` bounds the micro-batches
    between forward and backward under `1f1b` (None: one per part).

    `owner_cuts` are per-owner plans: (owner index, its cuts), by owner; the other owners take
    `cuts`. An owner's cuts are as many as `cuts` (the same placement, parts of other sizes),
    or none: that owner runs every layer itself (FL beside split owners). `for_owner(k)` is
    owner k's plan.
    """

    num_layers: int
    cuts: tuple[int, ...]
    placement: tuple[str, ...]
    micro_batches: tuple[int, ...]
    schedule: str = "gpipe"
    max_in_flight: int | None = None
    owner_cuts: tuple[tuple[int, tuple[int, ...]], ...] = ()

    def __post_init__(self) -> None:
        try:
            check_cuts(self.num_layers, self.cuts)
        except ValueError as err:
            raise PlanError(str(err)) from None
        if len(self.placement) != len(self.cuts) + 1:
            raise PlanError(f"{len(self.cuts)} cuts need {len(self.cuts) + 1} placements, "
                            f"got {list(self.placement)}")
        if self.placement[0] != OWNER:
            raise PlanError(f"the first part runs on the data owner, got {self.placement[0]!r}")
        if not self.micro_batches or min(self.micro_batches) < 1:
            raise PlanError(f"micro_batches must be >= 1 per owner, got {list(self.micro_batches)}")
        if self.schedule not in SCHEDULE_NAMES:
            raise PlanError(f"unknown schedule {self.schedule!r}; valid: "
                            f"{', '.join(SCHEDULE_NAMES)}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise PlanError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        self._check_owner_cuts()

    def _check_owner_cuts(self) -> None:
        owners = [k for k, _ in self.owner_cuts]
        if owners != sorted(set(owners)) or any(not 0 <= k < len(self.micro_batches)
                                                for k in owners):
            raise PlanError(f"owner_cuts: owners {owners}, expected distinct indices in "
                            f"[0, {len(self.micro_batches)}) in order")
        if self.owner_cuts and self.num_parts > 1 and all(
                k in dict(self.owner_cuts) and not dict(self.owner_cuts)[k]
                for k in range(len(self.micro_batches))):
            raise PlanError("owner_cuts: every owner runs every layer (mode: fl), none the "
                            "compute nodes: use mode fl")
        for k, cuts in self.owner_cuts:
            if cuts and len(cuts) != len(self.cuts):
                raise PlanError(f"owner {k}'s cuts {list(cuts)}: {len(self.cuts)} cut(s) "
                                f"(as the plan's) or none (FL)")
            try:
                check_cuts(self.num_layers, cuts)
            except ValueError as err:
                raise PlanError(f"owner {k}'s cuts: {err}") from None

    @cached_property
    def _views(self) -> dict[int, Plan]:
        views: dict[int, Plan] = {}
        for k, cuts in self.owner_cuts:
            if cuts == self.cuts:
                continue
            views[k] = replace(self, cuts=cuts, owner_cuts=(),
                               placement=self.placement if cuts else (OWNER,))
        return views

    def for_owner(self, owner: int) -> Plan:
        """Owner `owner`'s plan: its cuts and placement (this plan when it takes the common
        cuts); an FL owner's runs every layer on the owner."""
        return self._views.get(owner, self)

    @property
    def uniform(self) -> bool:
        """Whether every owner takes the common cuts (no per-owner plan)."""
        return not self._views

    def is_fl_owner(self, owner: int) -> bool:
        """Whether `owner` runs every layer itself while others split."""
        return self.for_owner(owner).num_parts == 1 and self.num_parts > 1

    def owners_on(self, node: str) -> list[int]:
        """The owners that have a part on compute node `node`."""
        return [k for k in range(len(self.micro_batches))
                if node in self.for_owner(k).placement]

    def groups(self) -> list[tuple[list[int], Plan]]:
        """The owners that share a plan, with it (first owner's order)."""
        out: dict[tuple[int, ...], tuple[list[int], Plan]] = {}
        for k in range(len(self.micro_batches)):
            view = self.for_owner(k)
            out.setdefault(view.cuts, ([], view))[0].append(k)
        return list(out.values())

    @property
    def bounds(self) -> tuple[int, ...]:
        return (0, *self.cuts, self.num_layers)

    @property
    def parts(self) -> list[tuple[int, int]]:
        b = self.bounds
        return [(b[i], b[i + 1]) for i in range(len(b) - 1)]

    @property
    def num_parts(self) -> int:
        return len(self.placement)

    @property
    def labels_local(self) -> bool:
        return self.placement[-1] == OWNER

    def parts_on(self, node: str) -> list[int]:
        """Indices of the parts that `node` runs (`OWNER` for any data owner)."""
        return [i for i, n in enumerate(self.placement) if n == node]

    def node_of(self, part: int, owner_name: str) -> str:
        """The process that runs `part` for the owner called `owner_name`."""
        n = self.placement[part]
        return owner_name if n == OWNER else n

    def part_of_layer(self, layer: int) -> int:
        """The part that holds `layer`."""
        return next(i for i, (a, b) in enumerate(self.parts) if a <= layer < b)

    def plans_by_owner(self) -> list[dict[str, Any]]:
        """The owners that share a plan, with its cuts, placement, parts and their N."""
        return [{"owners": owners, "cuts": list(view.cuts), "placement": list(view.placement),
                 "parts": [list(p) for p in view.parts],
                 "micro_batches": [self.micro_batches[k] for k in owners]}
                for owners, view in self.groups()]

    def probe(self) -> Plan:
        """One owner per distinct (cuts, N), renumbered from 0 (a dry run of these shows every
        deadlock the plan has); a uniform plan: its N sorted."""
        if self.uniform:
            return replace(self, micro_batches=tuple(sorted(set(self.micro_batches))))
        firsts: dict[tuple[tuple[int, ...], int], int] = {}
        for k, n in enumerate(self.micro_batches):
            firsts.setdefault((self.for_owner(k).cuts, n), k)
        keep = sorted(firsts.values())
        return replace(self, micro_batches=tuple(self.micro_batches[k] for k in keep),
                       owner_cuts=tuple((i, self.for_owner(k).cuts) for i, k in enumerate(keep)
                                        if self.for_owner(k).cuts != self.cuts))

    def describe(self) -> str:
        spans = [f"{n}[{a}:{b})" for n, (a, b) in zip(self.placement, self.parts)]
        ns = sorted(set(self.micro_batches))
        n_text = str(ns[0]) if len(ns) == 1 else "/".join(map(str, self.micro_batches))
        sched = "" if self.schedule == "gpipe" else f", {self.schedule}" + (
            f" (max {self.max_in_flight} in flight)" if self.max_in_flight else "")
        text = " -> ".join(spans) + f", N={n_text}{sched}"
        if self.uniform:
            return text
        return "; ".join(f"{_owner_list(owners)}: " + " -> ".join(
            f"{n}[{a}:{b})" for n, (a, b) in zip(view.placement, view.parts))
            for owners, view in self.groups()) + f", N={n_text}{sched}"

    def to_json(self) -> dict[str, Any]:
        """The plan file's content (`owner_cuts` only when some owner has its own plan)."""
        out: dict[str, Any] = {
            "num_layers": self.num_layers, "cuts": list(self.cuts),
            "placement": list(self.placement), "micro_batches": list(self.micro_batches),
            "schedule": self.schedule, "max_in_flight": self.max_in_flight}
        if self.owner_cuts:
            out["owner_cuts"] = [{"owner": k, "cuts": list(c)} for k, c in self.owner_cuts]
        return out

    @staticmethod
    def from_json(data: Any, source: str = "plan") -> Plan:
        """The plan of a plan file's content; PlanError naming `source` and the field."""
        if not isinstance(data, Mapping):
            raise PlanError(f"{source}: not a plan: expected a JSON object")
        try:
            return Plan(
                num_layers=_int(data, "num_layers", source),
                cuts=tuple(_ints(data, "cuts", source)),
                placement=tuple(_strings(data, "placement", source)),
                micro_batches=tuple(_ints(data, "micro_batches", source)),
                schedule=str(data.get("schedule", "gpipe")),
                max_in_flight=(None if data.get("max_in_flight") is None
                               else _int(data, "max_in_flight", source)),
                owner_cuts=_owner_cuts(data, source),
            )
        except PlanError as err:
            if str(err).startswith(source):
                raise
            raise PlanError(f"{source}: {err}") from None


def _int(data: Mapping[str, Any], key: str, source: str) -> int:
    v = data.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise PlanError(f"{source}: field '{key}': got {v!r}, expected an integer")
    return v


def _ints(data: Mapping[str, Any], key: str, source: str) -> list[int]:
    v = data.get(key)
    if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, int) for x in v):
        raise PlanError(f"{source}: field '{key}': got {v!r}, expected a list of integers")
    return v


def _owner_cuts(data: Mapping[str, Any], source: str) -> tuple[tuple[int, tuple[int, ...]], ...]:
    v = data.get("owner_cuts", [])
    want = "a list of {owner: index, cuts: [...]} objects"
    if not isinstance(v, list) or any(not isinstance(x, Mapping) for x in v):
        raise PlanError(f"{source}: field 'owner_cuts': got {v!r}, expected {want}")
    return tuple((_int(x, "owner", f"{source}: owner_cuts"),
                  tuple(_ints(x, "cuts", f"{source}: owner_cuts"))) for x in v)


def _owner_list(owners: list[int]) -> str:
    """`owner0-3,5`: owner indices as ranges."""
    runs: list[list[int]] = []
    for k in owners:
        if runs and runs[-1][-1] == k - 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    return "owner" + ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _strings(data: Mapping[str, Any], key: str, source: str) -> list[str]:
    v = data.get(key)
    if not isinstance(v, list) or not v or any(not isinstance(x, str) for x in v):
        raise PlanError(f"{source}: field '{key}': got {v!r}, expected a list of node names")
    return v


def read_plan_file(path: str | Path) -> Plan:
    """A plan file, read with a size limit; one-line errors naming the file."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(PLAN_FILE_MAX_BYTES + 1)
    except OSError as err:
        raise PlanError(f"{source}: cannot read the plan file ({err.strerror or err})") from None
    if len(raw) > PLAN_FILE_MAX_BYTES:
        raise PlanError(f"{source}: not a plan file: larger than {PLAN_FILE_MAX_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PlanError(f"{source}: not a plan file: not JSON ({err})") from None
    return Plan.from_json(data, source)


def write_plan_file(path: str | Path, plan: Plan) -> None:
    Path(path).write_text(json.dumps(plan.to_json(), indent=2) + "\n")


def check_plan_fits(plan: Plan, topo: Topology, num_layers: int, source: str = "plan") -> None:
    """A plan made for this topology and model: its layers, placement and owners match."""
    if plan.num_layers != num_layers:
        raise PlanError(f"{source}: the plan has {plan.num_layers} layers, model "
                        f"{topo.model.name} of {topo.source} has {num_layers}")
    want = placement_for(topo)
    if plan.placement != want:
        raise PlanError(f"{source}: the plan places its parts on {list(plan.placement)}, "
                        f"{topo.source} (mode {topo.mode}, labels {topo.labels}) needs "
                        f"{list(want)}")
    if len(plan.micro_batches) != len(topo.owners):
        raise PlanError(f"{source}: the plan has N for {len(plan.micro_batches)} owners, "
                        f"{topo.source} has {len(topo.owners)}")
    for o in topo.owners:
        mine = plan.for_owner(o.index).cuts
        if o.cuts is not None and topo.mode not in ("fl", "sl") and mine != o.cuts:
            raise PlanError(f"{source}: owner {o.index} has cuts {list(mine)} in the plan, "
                            f"data_owners.overrides of {topo.source} give {list(o.cuts)}")
    B = topo.training.batch_size
    if max(plan.micro_batches) > B:
        raise PlanError(f"{source}: N = {max(plan.micro_batches)} micro-batches exceed "
                        f"training.batch_size ({B}) of {topo.source}")


def placement_for(topo: Topology) -> tuple[str, ...]:
    """Owner, then the compute chain, then the owner again when labels are local."""
    if topo.mode == "fl":
        return (OWNER,)
    tail = (OWNER,) if topo.labels == "local" else ()
    return (OWNER, *topo.chain, *tail)


def owner_micro_batches(topo: Topology, default: int | None = None) -> tuple[int, ...]:
    """N per owner: the plan's (or `default`), owner overrides, forced to 1 in SFL, SL and FL."""
    if topo.mode in SINGLE_BATCH_MODES:
        return tuple(1 for _ in topo.owners)
    base = topo.plan.micro_batches if default is None else default
    return tuple(o.micro_batches or base for o in topo.owners)


def owner_cuts_for(topo: Topology, cuts: Sequence[int],
                   chosen: Mapping[int, Sequence[int]] | None = None,
                   ) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """Per-owner cuts: the topology's overrides (`cuts`, or none for `mode: fl`), then those
    `chosen` (the planner's) for the other owners; owners whose cuts are `cuts` are left out."""
    if topo.mode in ("fl", "sl"):
        return ()
    out = []
    for o in topo.owners:
        mine = o.cuts if o.cuts is not None else (chosen or {}).get(o.index)
        if mine is not None and tuple(mine) != tuple(cuts):
            out.append((o.index, tuple(mine)))
    return tuple(out)


def make_plan(
    topo: Topology,
    num_layers: int,
    cuts: Sequence[int] | None = None,
    micro_batches: int | Sequence[int] | None = None,
    schedule: str | None = None,
    owner_cuts: Mapping[int, Sequence[int]] | None = None,
) -> Plan:
    """The plan a topology states, or one with the given cuts, N and schedule (the planner's);
    per-owner cuts from the topology's overrides and `owner_cuts` (the planner's)."""
    placement = placement_for(topo)
    if topo.mode == "fl":
        cuts = ()
    elif cuts is None:
        if topo.plan.cuts is None:
            raise PlanError(f"{topo.source}: plan is auto: run the planner to choose the cuts")
        cuts = topo.plan.cuts
    if len(cuts) != expected_cut_count(topo):
        raise PlanError(
            f"{topo.source}: {len(cuts)} cut(s) given, mode {topo.mode} with labels {topo.labels} "
            f"and {len(topo.chain)} compute node(s) needs {expected_cut_count(topo)}"
        )
    if isinstance(micro_batches, int) or micro_batches is None:
        ns = owner_micro_batches(topo, micro_batches)
    else:
        ns = tuple(micro_batches)
        if len(ns) != len(topo.owners):
            raise PlanError(f"{len(ns)} micro-batch counts for {len(topo.owners)} owners")
    try:
        return Plan(num_layers=num_layers, cuts=tuple(cuts), placement=placement,
                    micro_batches=ns, schedule=schedule or topo.schedule.name,
                    max_in_flight=topo.schedule.max_in_flight,
                    owner_cuts=owner_cuts_for(topo, cuts, owner_cuts))
    except PlanError as err:
        raise PlanError(f"{topo.source}: {err}") from None
