"""Plans: the cuts, which node runs each part, and N micro-batches per data owner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mpsl.topology import OWNER, Topology, expected_cut_count

SINGLE_BATCH_MODES = ("sfl", "sl", "fl")  # modes that run one micro-batch per iteration


class PlanError(ValueError):
    """A plan does not fit its model or topology."""


@dataclass(frozen=True)
class Plan:
    """Cuts, placement and micro-batch counts.

    `cuts` are the first layers of the parts after the first, so part i is
    `[bounds[i], bounds[i+1])` with bounds = (0, *cuts, num_layers). `placement[i]` is
    `OWNER` (every data owner runs it) or a compute node's name. `micro_batches[k]` is N for
    owner k. The loss is computed where the last part runs.
    """

    num_layers: int
    cuts: tuple[int, ...]
    placement: tuple[str, ...]
    micro_batches: tuple[int, ...]

    def __post_init__(self) -> None:
        check_cuts(self.cuts, self.num_layers)
        if len(self.placement) != len(self.cuts) + 1:
            raise PlanError(f"{len(self.cuts)} cuts need {len(self.cuts) + 1} placements, "
                            f"got {list(self.placement)}")
        if self.placement[0] != OWNER:
            raise PlanError(f"the first part runs on the data owner, got {self.placement[0]!r}")
        if not self.micro_batches or min(self.micro_batches) < 1:
            raise PlanError(f"micro_batches must be >= 1 per owner, got {list(self.micro_batches)}")

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

    def describe(self) -> str:
        spans = [f"{n}[{a}:{b})" for n, (a, b) in zip(self.placement, self.parts)]
        ns = sorted(set(self.micro_batches))
        n_text = str(ns[0]) if len(ns) == 1 else "/".join(map(str, self.micro_batches))
        return " -> ".join(spans) + f", N={n_text}"


def check_cuts(cuts: Sequence[int], num_layers: int) -> None:
    """Cuts must be strictly increasing and inside (0, num_layers)."""
    prev = 0
    for c in cuts:
        if not isinstance(c, int) or c <= prev or c >= num_layers:
            raise PlanError(
                f"cut {c!r} is out of place in {list(cuts)}: cuts must be strictly increasing "
                f"integers in 1..{num_layers - 1} for a model of {num_layers} layers"
            )
        prev = c


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


def make_plan(
    topo: Topology,
    num_layers: int,
    cuts: Sequence[int] | None = None,
    micro_batches: int | Sequence[int] | None = None,
) -> Plan:
    """The plan a topology states, or one with the given cuts and N (from the planner)."""
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
        return Plan(num_layers=num_layers, cuts=tuple(cuts), placement=placement, micro_batches=ns)
    except PlanError as err:
        raise PlanError(f"{topo.source}: {err}") from None
