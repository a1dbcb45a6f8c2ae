"""A lower bound on the simulated epoch of every plan the planner may return, and a plan's gap.

The space bounded: every cut tuple holding the pinned cuts (and the topology's own cuts),
with the memory caps left out (a relaxation: the least over more plans is no larger); every N
in 1..max(N_max, the topology's N), each owner its own (1 in SFL, SL and FL); every schedule
of `mpsl.schedule.SCHEDULES` (the topology's alone in the single-batch modes).

For one plan the simulated epoch (`planner.cost`) is at least each of these terms:

- busy: the busy seconds of one processor or link in the epoch. A processor runs one action
  at a time, a link sends one message at a time, and all the work counted here ends before
  the epoch does: each ACT and GRAD starts a task; an owner's loss reports go ahead of its
  PARAMS on its link to the aggregator; PARAMS start the averaging (SL: the next turn) that
  GLOBAL follows; the epoch ends after every task, every averaging and every owner's last
  GLOBAL. Counted: per iteration of every owner, the cut model's busy terms at that
  iteration's batch size without wake-ups (`planner.boundterms`); per round, each owner's
  PARAMS and GLOBAL on its links and the averaging on the aggregator (K copies of the owner
  part) and on every compute node (K copies of its parts; not in SL). Wake-ups and syncs,
  left out, only add.
- chain: an owner runs its iterations one after another, each at least its path
  (`planner.boundterms`), and after each round waits for its PARAMS to reach the aggregator
  (transmission and latency), the averaging and its GLOBAL. In SL the owners take turns, so
  the term is the sum over the owners of their GLOBAL, iterations and PARAMS.
- windows (not in SL): let G_k be the first arrival of round k's GLOBAL at an owner (G_0 = 0)
  and take, on one processor or link, the work of the tasks and messages whose work ends
  before a path to their iteration's end starts (`PathTerms`). Each starts at least `head`
  after its iteration's start, so after G_{k-1}; after each ends, its iteration needs
  `tail` more, its owner's PARAMS their transmission and latency, the aggregator the
  averaging and every GLOBAL at least the least one's, so it ends before G_k less all that.
  The windows of the rounds are disjoint, so the epoch is at least that work plus, per
  round, head and tail and the rest. Per owner the work counts its iterations of its most
  frequent batch size; head and tail are the least over the owners.

Each term depends on the cuts, the schedule and the owners' N. Per cut tuple and schedule the
bound takes each term's least value over N (per owner; for windows, work, head and tail each
at its least), the largest term, then the least of that over the cut tuples and schedules: no
plan of the space is faster. It is lowered by
`MARGIN` (float rounding; the steady state's tolerance when the estimate skips periods).

The ILP's objective (or its LP relaxation) is not used: its paths charge wake-ups that the
simulator may not, and it adds the aggregation term to the busiest resource while the
simulator overlaps the two, so it is no lower bound of the simulated epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mpsl.names import AGGREGATOR, OWNER
from mpsl.schedule import in_flight
from mpsl.spec import ScheduleSpec
from mpsl.topology import Topology
from planner.boundspace import OwnerClass, Space
from planner.boundterms import IterationTerms, PathTerms, iteration_terms
from planner.cutmodel import owner_groups
from planner.profile import Profile
from planner.resources import (
    AVERAGE_BYTES_PER_S,
    HEADER_BYTES,
    node_profiles,
)
from planner.taskwalk import OwnerGroup, Setting

MARGIN = 1e-6  # the bound is lowered by this fraction
# Batch sizes other than an owner's most frequent one get their own paths (else the owner's
# busy time stands for their length) where they are at least this share of its iterations.
PARTIAL_SHARE = 0.1
FIRST_ROWS = 64  # cut tuples completed with their paths first, then every one that may be lower


@dataclass
class Bound:
    """A lower bound (seconds per epoch) on every plan's simulated epoch; `source` names the
    term that gives it, `cuts` and `schedule` where its least value lies."""

    seconds: float
    source: str
    cuts: tuple[int, ...]
    schedule: str
    compute_s: float = 0.0  # seconds spent computing it

    def gap(self, epoch_s: float) -> float:
        """(epoch - bound) / bound: how far a plan's epoch may be from the optimum."""
        return (epoch_s - self.seconds) / self.seconds if self.seconds > 0 else math.inf

    def describe(self) -> str:
        return f"{self.source}, at cuts {list(self.cuts)}, {self.schedule}"


def lower_bound(topo: Topology, profiles: Profile | Mapping[str, Profile] | None = None, *,
                iterations: int | None = None, samples: list[int] | None = None) -> Bound:
    """The bound over the planner's space for `topo` (see the module's docstring);
    `iterations` and `samples` as in `planner.cost.simulate`."""
    return Bounds(topo, profiles, iterations=iterations, samples=samples).least()


class Bounds:
    """The bound's terms for `topo`, each iteration's walk and path graph kept: the least
    over every plan (`least`) and the least over the plans of given cuts (`at`)."""

    def __init__(self, topo: Topology, profiles: Profile | Mapping[str, Profile] | None = None,
                 *, iterations: int | None = None, samples: list[int] | None = None) -> None:
        started = time.perf_counter()
        self.space = Space(topo, node_profiles(topo, profiles, measure=False), iterations,
                            samples)
        self.walks = _Walks({}, {})  # every schedule's: they share the iterations alike
        self.compute_s = time.perf_counter() - started
        self.row = {tuple(int(c) for c in r[1:-1]): i for i, r in enumerate(self.space.bounds)}

    def least(self) -> Bound:
        """The bound over every plan.

        Every term is first taken without its paths (`_Terms(paths=False)`: each
        path-derived part at 0, no larger than with them); the cut tuples are then completed
        with their paths in order of that cheaper maximum, until it exceeds the least
        complete one found: no tuple left can be lower, so the bound is the one over every
        tuple, at a few of them."""
        started = time.perf_counter()
        space = self.space
        best: tuple[float, int, str, str] | None = None  # value, row, source, schedule
        for spec in space.schedules:
            got = _least_row(space, spec, math.inf if best is None else best[0],
                             self.walks)
            if got is not None and (best is None or got[0] < best[0]):
                best = (*got, spec.name)
        assert best is not None
        seconds, row, source, schedule = best
        cuts = tuple(int(c) for c in space.bounds[row][1:-1])
        self.compute_s += time.perf_counter() - started
        return Bound(seconds * (1 - MARGIN), source, cuts, schedule, self.compute_s)

    def at(self, cuts: Sequence[Sequence[int]], schedule: str | None = None,
           paths: bool = True, ns: Sequence[int] | None = None) -> list[float]:
        """Per cut tuple, a lower bound on the simulated epoch of every plan with those cuts
        (any N, or one of `ns` for every owner; under `schedule`, else any schedule); 0 for
        cuts outside the space. Without `paths`, the cheaper bound of the terms without their
        path-derived parts (lower)."""
        started = time.perf_counter()
        found = [(i, self.row[tuple(c)]) for i, c in enumerate(cuts) if tuple(c) in self.row]
        out = [0.0] * len(cuts)
        specs = [s for s in self.space.schedules if schedule in (None, s.name)]
        if found and specs:
            rows = np.array([r for _, r in found])
            least = np.min([_tops(self.space, s, self.walks, rows, paths, ns)[0]
                            for s in specs], axis=0)
            for (i, _), v in zip(found, least):
                out[i] = float(v) * (1 - MARGIN)
        self.compute_s += time.perf_counter() - started
        return out


def _least_row(space: Space, spec: ScheduleSpec, below: float, walks: _Walks
               ) -> tuple[float, int, str] | None:
    """The least largest term over the cut rows under `spec` (the first row of that value,
    the term's name), None where every row's is at least `below`."""
    cheap = _Terms(space, spec, space.bounds, walks, False).all()
    low = np.vstack(list(cheap.values())).max(axis=0)
    order = np.argsort(low, kind="stable")
    first = order[:FIRST_ROWS]  # the most promising rows, then every row that may be lower
    best = _least_of(space, spec, walks, first[low[first] < below])
    rest = order[FIRST_ROWS:]
    bar = below if best is None else min(below, math.nextafter(best[0], math.inf))
    got = _least_of(space, spec, walks, rest[low[rest] < bar])
    if got is not None and (best is None or got[:2] < best[:2]):
        best = got
    return best


def _least_of(space: Space, spec: ScheduleSpec, walks: _Walks, rows: np.ndarray
              ) -> tuple[float, int, str] | None:
    """The least largest term over `rows` (indices of cut rows), the first such row, the
    term's name; None without rows."""
    if not len(rows):
        return None
    rows = np.sort(rows)
    top, stack, names = _tops(space, spec, walks, rows)
    j = int(np.lexsort((rows, top))[0])  # the least value, then the first row
    return float(top[j]), int(rows[j]), names[int(np.argmax(stack[:, j]))]


def _tops(space: Space, spec: ScheduleSpec, walks: _Walks, rows: np.ndarray,
          paths: bool = True, ns: Sequence[int] | None = None
          ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The largest term at each of `rows` (indices of cut rows), every term, their names."""
    terms = _Terms(space, spec, space.bounds[rows], walks, paths, ns).all()
    names = list(terms)
    stack = np.vstack([terms[n] for n in names])
    return stack.max(axis=0), stack, names


@dataclass
class _Walks:
    """Each iteration's terms (walk, path graph) by (group rep, batch, N, micro-batches in
    flight), and whether its orders are forced per group rep and (N, in flight): kept across
    the cut rows and the schedules (theirs agree where their micro-batches in flight do)."""

    terms: dict[tuple[str, int, int, int], IterationTerms]
    forced: dict[str, dict[tuple[int, int], bool]]


class _Terms:
    """One schedule's terms, each an array over the cut tuples (`Space.bounds`)."""

    def __init__(self, space: Space, spec: ScheduleSpec, bounds: np.ndarray, walks: _Walks,
                 paths: bool = True, ns: Sequence[int] | None = None) -> None:
        """The terms at the cut rows `bounds`; `walks` keeps each iteration's terms (its
        walk and path graph) for the next rows; without `paths` every path-derived part
        is 0; `ns`, the N taken (default the space's)."""
        self.sp, self.spec, self.bounds, self.walks = space, spec, bounds, walks
        self.paths = paths
        self.ns = space.ns if ns is None else list(ns)
        self.setting: Setting = owner_groups(space.topo, space.profs, spec)[0]
        self.out: dict[str, np.ndarray] = {}
        self.seen: dict[tuple[str, int, int], _Iteration] = {}

    def add(self, name: str, v: np.ndarray) -> None:
        self.out[name] = self.out[name] + v if name in self.out else v

    def all(self) -> dict[str, np.ndarray]:
        sp, rounds = self.sp, self.sp.rounds
        owner_params = sp.params(OWNER).values(self.bounds)
        turns = np.zeros(len(self.bounds))
        avg = 0.0 if sp.sl else sp.K / AVERAGE_BYTES_PER_S
        windows = _Windows(len(self.bounds))
        for cls in self.sp.classes:
            least = self.least(cls)
            for r, v in least.busy.items():
                self.add(f"busy time of {r}", v if sp.owns(r) else cls.count * v)
            rep = cls.rep
            up, down = sp.links(rep, AGGREGATOR), sp.links(AGGREGATOR, rep)
            params = up.tx_s(1.0) * owner_params + up.tx_s(HEADER_BYTES) + up.latency_s
            glob = down.tx_s(1.0) * owner_params + down.tx_s(HEADER_BYTES) + down.latency_s
            self.add(f"busy time of {up.name}", rounds * (params - up.latency_s))
            self.add(f"busy time of {down.name}", rounds * (glob - down.latency_s))
            wait = params + avg * owner_params + glob
            if sp.sl:
                turns = turns + cls.count * (least.chain + rounds * wait)
            else:
                self.add(f"{rep}'s iterations and aggregations", least.chain + rounds * wait)
                windows.add(least, cls.count, params, glob, sp.owns)
        if sp.sl:
            self.add("the owners' turns (SL)", turns)
            return self.out
        self.add(f"busy time of {AGGREGATOR}", rounds * avg * owner_params)
        for node in dict.fromkeys(n for n in sp.placement if n != OWNER):
            self.add(f"busy time of {node}", rounds * avg * sp.params(node).values(self.bounds))
        for r, v in windows.terms(rounds, avg * owner_params).items():
            self.add(f"busy time of {r} and its idle time as each round starts and ends", v)
        return self.out

    def least(self, cls: OwnerClass) -> _Least:
        """One owner of the class, each term at its least over N. The length of a batch size
        other than the most frequent (an owner's last, partial batch) is the owner's busy
        time unless those are at least `PARTIAL_SHARE` of its iterations; windows are of the
        most frequent size alone (fewer tasks counted only lower that term)."""
        R = len(self.bounds)
        out = _Least({}, np.full(R, np.inf) if cls.sizes else np.zeros(R), {}, {}, {})
        main = max(cls.sizes, key=lambda b: cls.sizes[b], default=0)
        exact = 1 - cls.sizes.get(main, 0) / max(1, sum(cls.sizes.values())) >= PARTIAL_SHARE
        seen: list[tuple[dict[str, np.ndarray], ...]] = []
        for n in self.ns:
            loads: dict[str, np.ndarray] = {}
            work: dict[str, np.ndarray] = {}
            head: dict[str, np.ndarray] = {}
            tail: dict[str, np.ndarray] = {}
            length = np.zeros(R)
            for b, count in cls.sizes.items():
                it = self.iteration(cls.group, b, n)
                for r, v in it.loads.items():
                    _put(loads, _renamed(r, cls.group.rep, cls.rep), count * v)
                if b != main and not exact:
                    length += count * it.own
                    continue
                path = self.path(it)
                length += count * path.length
                if b == main:
                    for r in path.busy:
                        name = _renamed(r, cls.group.rep, cls.rep)
                        work[name], head[name] = count * path.busy[r], path.head[r]
                        tail[name] = path.tail[r]
            out.chain = np.minimum(out.chain, length)
            seen.append((loads, work, head, tail))
        for i, (target, empty) in enumerate(((out.busy, 0.0), (out.work, 0.0),
                                            (out.head, np.inf), (out.tail, np.inf))):
            for r in {r for got in seen for r in got[i]}:
                target[r] = np.min([got[i].get(r, np.full(R, empty)) for got in seen], axis=0)
        return out

    def iteration(self, group: OwnerGroup, b: int, n: int) -> _Iteration:
        """The group rep's iteration of b samples in min(n, b) micro-batches."""
        nn = max(1, min(n, b))
        key = (group.rep, b, nn)
        if key not in self.seen:
            shared = (*key, in_flight(self.setting.plan, nn))  # as other schedules' may be
            terms = self.walks.terms.get(shared)
            if terms is None:
                forced = self.walks.forced.setdefault(group.rep, {})
                terms = self.walks.terms[shared] = iteration_terms(self.setting, group, b, n,
                                                                   forced)
            self.seen[key] = _Iteration(terms, {r: f.values(self.bounds)
                                                for r, f in terms.loads.items()},
                                        terms.own.values(self.bounds))
        return self.seen[key]

    def path(self, it: _Iteration) -> PathTerms:
        """The iteration's `PathTerms` per cut row, computed once (0 without `paths`)."""
        if it.path is None:
            it.path = (it.terms.path(self.bounds) if self.paths else
                       PathTerms(np.zeros(len(self.bounds)), {}, {}, {}))
        return it.path


@dataclass
class _Iteration:
    """An iteration's terms and their values per cut row."""

    terms: IterationTerms
    loads: dict[str, np.ndarray]
    own: np.ndarray
    path: PathTerms | None = None


@dataclass
class _Least:
    """One owner's terms, each at its least over N: busy seconds per resource in an epoch,
    the sum of its iterations' lengths (`chain`), and per resource the work, head and tail
    of `PathTerms` (work: over its iterations of the most frequent size)."""

    busy: dict[str, np.ndarray]
    chain: np.ndarray
    work: dict[str, np.ndarray]
    head: dict[str, np.ndarray]
    tail: dict[str, np.ndarray]


class _Windows:
    """Per resource, the work every owner must do on it in a round between the round's
    start plus a head and its end less a tail (`PathTerms`), summed over the owners."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.work: dict[str, np.ndarray] = {}
        self.head: dict[str, np.ndarray] = {}
        self.tail: dict[str, np.ndarray] = {}  # to the end of the PARAMS' arrival
        self.down = np.full(rows, np.inf)  # the least GLOBAL transmission and latency

    def add(self, least: _Least, count: int, params: np.ndarray, glob: np.ndarray,
            owns: Callable[[str], bool]) -> None:
        """One class of `count` owners: `params` and `glob`, its PARAMS' and GLOBAL's
        transmission and latency."""
        for r, v in least.work.items():
            _put(self.work, r, v if owns(r) else count * v)
            self.head[r] = np.minimum(self.head.get(r, np.inf), least.head[r])
            self.tail[r] = np.minimum(self.tail.get(r, np.inf), least.tail[r] + params)
        self.down = np.minimum(self.down, glob)

    def terms(self, rounds: int, avg: np.ndarray) -> dict[str, np.ndarray]:
        """Per resource: its work plus, per round, its head and its tail (to the PARAMS'
        arrival, the averaging and the first GLOBAL's arrival); 0 where it has no work."""
        out = {}
        for r, work in self.work.items():
            gaps = self.head[r] + self.tail[r] + avg + self.down
            out[r] = np.where(work > 0, work + rounds * np.where(work > 0, gaps, 0.0), 0.0)
        return out


def _put(into: dict[str, np.ndarray], name: str, v: np.ndarray) -> None:
    into[name] = into[name] + v if name in into else v


def _renamed(resource: str, old: str, new: str) -> str:
    """`resource` (a node or `src->dst`) with the node `old` named `new`."""
    if old == new:
        return resource
    return "->".join(new if end == old else end for end in resource.split("->"))
