"""The space the lower bound (`planner.bound`) covers: every cut tuple holding the pinned cuts
(and the topology's own), every N, the schedules, and the owners in classes alike in their
cut-model group and batch sizes."""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, replace

import numpy as np

from mpsl.names import OWNER
from mpsl.plan import SINGLE_BATCH_MODES, owner_micro_batches, placement_for
from mpsl.schedule import SCHEDULES
from mpsl.spec import ScheduleSpec
from mpsl.topology import Topology
from mpsl.training import mode_round_ends
from planner.cutmodel import owner_groups
from planner.forms import Form
from planner.profile import Profile
from planner.resources import (
    Links,
    PlanningError,
    iterations_per_epoch,
    max_micro_batches,
    owner_samples,
)
from planner.taskwalk import OwnerGroup


@dataclass
class OwnerClass:
    """Owners of one cut-model group with the same batch sizes; `rep` stands for them."""

    group: OwnerGroup
    rep: str
    count: int
    sizes: dict[int, int]  # batch size: iterations per epoch


class Space:
    """What every schedule's terms share: the cut tuples, N, the owners' batches and classes."""

    def __init__(self, topo: Topology, profs: dict[str, Profile], iterations: int | None,
                 samples: list[int] | None) -> None:
        self.topo, self.profs = topo, profs
        self.placement = placement_for(topo)
        self.L = next(iter(profs.values())).num_layers
        self.bounds = cut_rows(topo, self.L, len(self.placement))
        self.K = len(topo.owners)
        self.sl = topo.mode == "sl"
        batches = epoch_batches(topo, iterations, samples)
        every = topo.training.aggregate_every
        self.rounds = len(mode_round_ends(topo.mode, [len(b) for b in batches], every))
        single = topo.mode in SINGLE_BATCH_MODES or len(self.placement) == 1
        mine = set(owner_micro_batches(topo))
        self.ns = sorted(mine | ({1} if single else set(range(1, max_micro_batches(topo) + 1))))
        self.schedules = [topo.schedule] if single else [
            ScheduleSpec(name, topo.schedule.max_in_flight) for name in SCHEDULES]
        self.links = Links(topo)
        self.owner_names = {o.name for o in topo.owners}
        groups = owner_groups(topo, profs, topo.schedule)[1]
        index = {o.name: i for i, o in enumerate(topo.owners)}
        found: dict[tuple[object, ...], OwnerClass] = {}
        for g in groups:
            for m in g.members:
                sizes = dict(sorted(collections.Counter(batches[index[m]]).items()))
                key = (g.rep, tuple(sizes.items()))
                if key in found:
                    found[key].count += 1
                else:
                    found[key] = OwnerClass(replace(g, members=[g.rep]), m, 1, sizes)
        self.classes = list(found.values())

    def owns(self, resource: str) -> bool:
        """Whether the resource is an owner's own (its processor or one of its links)."""
        return any(end in self.owner_names for end in resource.split("->"))

    def params(self, node: str) -> Form:
        """Parameter bytes of the parts `node` runs (OWNER: the owner part, owner 0's)."""
        prof = self.profs[self.topo.owners[0].name if node == OWNER else node]
        f = Form()
        for p, where in enumerate(self.placement):
            if where == node:
                f.add_x(p, [lp.param_bytes for lp in prof.layers])
        return f


def cut_rows(topo: Topology, L: int, P: int) -> np.ndarray:
    """Rows (0, *cuts, L) of every cut tuple holding the pinned cuts, and the topology's."""
    pinned = set(topo.plan.pinned_cuts)
    rows = [c for c in itertools.combinations(range(1, L), P - 1) if pinned <= set(c)]
    own = tuple(topo.plan.cuts or ())
    if (topo.plan.cuts is not None and len(own) == P - 1 and own not in rows
            and all(a < b for a, b in zip((0, *own), (*own, L)))):
        rows.append(own)
    if not rows:
        raise PlanningError(f"no cuts hold the pinned cuts {sorted(pinned)}")
    return np.array([(0, *c, L) for c in rows], dtype=np.int64).reshape(len(rows), P + 1)


def epoch_batches(topo: Topology, iterations: int | None, samples: list[int] | None
             ) -> list[list[int]]:
    """Each owner's batch sizes in an epoch, as `planner.workload.Workload` has them."""
    B = topo.training.batch_size
    if iterations is not None:
        return [[B] * iterations for _ in topo.owners]
    counts = owner_samples(topo) if samples is None else samples
    return [[min(B, n - j * B) for j in range(iterations_per_epoch(topo, n))] for n in counts]
