"""Rate extrapolation: skip rounds of a fleet's saturated steady state that never repeats exactly.

With many owners sharing a compute node the schedule settles into a regime that is not
periodic (the order in which a node meets its owners' micro-batches keeps shifting its wake-up
costs a little, so no permutation of alike owners makes two states equal either) but whose
rate is steady: one resource, the bottleneck, is busy all the time and every owner runs one
iteration per round (a round: from one of owner 0's iteration starts to the next). Where
`planner.steady` finds no exact period, `RateSkip` keeps a window of rounds in which every
owner steps alike (the same aggregation round, the same iterations per round). It skips once

- the window holds at least `MIN_ROUNDS` rounds and `MIN_ITERATIONS` owner-iterations,
- the fleet's rounds (the mean start of the running owners' iterations, round by round) have
  halves whose mean rounds differ by at most `DRIFT` of the mean round plus `NOISE` x the
  larger half's jitter (how far its round starts stray from the line through its ends) / the
  window's rounds (else the older half is dropped: the pipeline is still filling). A regime
  whose rounds jitter forever passes once the window is long enough; a trend in the rounds'
  length moves the halves apart 16 x more than it adds to that allowance, so it does not,
- some processor or link was busy for all but `IDLE` of it (a saturated bottleneck, whose
  work sets the rate), and
- the error bound of the extrapolation is at most `ERROR` of the time simulated by then. The
  rounds extrapolated are of the fleet's mean round, which averages out each owner's own
  jitter; with `jitter` the farthest a class's mean start strays from its line, m rounds
  extrapolated from n are off by at most m x how far the class's mean round is from the
  fleet's plus (2m/n + 1) x jitter while the regime holds, and the instant the state is read
  at (owner 0's start) adds twice owner 0's own jitter.

The engine's state at the window's end is then moved on by m whole rounds of the fleet's mean
length (times shifted, iterations advanced, busy time and iteration times repeated at the
window's rates; an owner's own processor and links at its rate since its steps last changed),
as far as every owner's alike iterations allow; the rest (the last partial batch, the
aggregation rounds, the drain) is simulated exactly. The estimate is not exact: bench.scale
and tests/planner/test_fleet_sim.py measure it against the full simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mpsl.plan import Plan
from mpsl.topology import Topology

if TYPE_CHECKING:
    from planner.engine import Engine

MIN_ROUNDS = 2  # rounds in a window at least
MIN_ITERATIONS = 400  # owner-iterations in a window at least
MAX_ROUNDS = 64  # rounds kept in a window
ERROR = 1.5e-4  # the extrapolation's error bound allowed, a share of the time simulated
DRIFT = 1e-3  # relative difference allowed between the window's halves' mean rounds
IDLE = 2e-3  # share of the window the busiest resource may idle
NOISE = 1.0  # drift allowed for noise: this x the halves' jitter / the window's rounds


@dataclass
class Round:
    """The engine at a round's start (owner 0 starting an iteration)."""

    t: float
    it_next: list[int]
    round_now: tuple[int, ...]
    busy: dict[str, float]
    n_its: int
    index: int  # rounds offered before it
    starts: np.ndarray  # each owner's current iteration's start


class RateSkip:
    """The rounds of one simulation and the rounds extrapolated."""

    def __init__(self) -> None:
        self.rounds: list[Round] = []
        # the window's first round, or one before it where the owners' steps already held:
        # an owner's own processor and links keep its rate from there, not only after the
        # shared resources settle, so their busy rate is measured from there
        self.first: Round | None = None
        self.skipped = 0  # rounds extrapolated, all skips together
        self.offered = 0
        self.rounds_last = 0  # rounds extrapolated by the last skip

    def reset(self) -> None:
        """Forget the rounds seen (the engine's state jumped)."""
        self.rounds.clear()
        self.first = None

    def offer(self, eng: Engine, t: float, may_skip: bool = True) -> float:
        """Note a round starting at `t`; on a steady window (and `may_skip`), skip rounds.
        The seconds skipped."""
        rounds = self.rounds
        self.offered += 1
        rounds.append(Round(t, list(eng.it_next), tuple(eng.round_now), dict(eng.busy),
                            len(eng.it_times), self.offered, np.array(eng.it_start)))
        if len(rounds) >= 2 and rounds[-1].round_now != rounds[-2].round_now:
            del rounds[:-1]  # another aggregation round
            self.first = rounds[0]
        elif len(rounds) >= 3 and _steps(rounds[-2], rounds[-1]) != _steps(rounds[-3],
                                                                            rounds[-2]):
            del rounds[:-2]  # the owners' steps changed: the window starts anew
            self.first = rounds[0]
        if self.first is None:
            self.first = rounds[0]
        if len(rounds) > MAX_ROUNDS + 1:
            del rounds[0]
        if len(rounds) < MIN_ROUNDS + 1 or not may_skip:
            return 0.0
        running = sum(1 for d in _steps(rounds[-2], rounds[-1]) if d)
        if not running or running * (len(rounds) - 1) < MIN_ITERATIONS:
            return 0.0
        return self._try(eng)

    def _try(self, eng: Engine) -> float:
        """Skip rounds if the rate of the window (or of its later part, whichever bounds the
        error best) is steady and known well enough."""
        b = self.rounds[-1]
        n = len(self.rounds) - 1
        half = n // 2
        per = _steps(self.rounds[-2], b)
        series, counts = _class_starts(self.rounds, per, eng.classes)
        fleet = _fleet(series, counts)
        if settling(fleet):
            del self.rounds[:half]  # keep the later half
            series, fleet = series[half:], fleet[half:]
            n -= half
            if n < MIN_ROUNDS:
                return 0.0
        running = sum(1 for d in per if d)
        best: tuple[float, int, int, float] | None = None  # error / allowed, start, m, mean
        for s in range(n - MIN_ROUNDS + 1):  # the window's suffixes: the settled part
            w, n_s = self.rounds[s], n - s
            if running * n_s < MIN_ITERATIONS:
                break
            if max((v - w.busy.get(k, 0.0) for k, v in b.busy.items()), default=0.0) < (
                    1.0 - IDLE) * (b.t - w.t):
                continue  # no resource saturated: the rate need not hold
            m = _room(eng, w, b, per)
            if m < 1:
                continue
            mean_s = _mean_round(fleet[s:])
            ratio = _error(series[s:], m, mean_s) / (ERROR * (b.t + m * mean_s))
            if ratio <= 1.0 and (best is None or ratio < best[0]):
                best = (ratio, s, m, mean_s)
        if best is None:
            return 0.0  # the rate is not known well enough yet
        _, s, m, mean_s = best
        del self.rounds[:s]
        return self._apply(eng, m, m * mean_s, per)

    def _apply(self, eng: Engine, m: int, dt: float, per: list[int]) -> float:
        """Move the engine `m` rounds (`dt` seconds) on at the window's rates."""
        from planner.steady import shift

        a, b = self.rounds[0], self.rounds[-1]
        n = len(self.rounds) - 1
        first = a if self.first is None else self.first
        n_first = b.index - first.index
        owned = _owned(eng, b)
        shift(eng, dt, [m * d for d in per])
        for name, v in b.busy.items():
            since, k = (first, n_first) if name in owned else (a, n)
            eng.busy[name] = v + m * (v - since.busy.get(name, 0.0)) / k
        window = eng.it_times[a.n_its:b.n_its]
        whole, part = divmod(m, n)
        extra = window * whole
        if part:
            extra += eng.it_times[a.n_its:self.rounds[part].n_its]
        eng.it_times.extend(extra)
        self.skipped += m
        self.rounds_last = m
        self.rounds.clear()
        return dt


def owner_classes(topo: Topology, plan: Plan, batches: list[list[int]]) -> list[int]:
    """Each owner's class: owners alike in device, links, profile, N, cuts and batches."""
    keys: dict[tuple[object, ...], int] = {}
    seen: dict[int, tuple[int, ...]] = {}  # owners often share one list of batches
    out = []
    for o, n, bs in zip(topo.owners, plan.micro_batches, batches):
        if id(bs) not in seen:
            seen[id(bs)] = tuple(bs)
        key = (o.compute_scale, o.uplink_mbps, o.downlink_mbps, o.latency_ms, o.profile,
               o.cuts, n, seen[id(bs)])
        out.append(keys.setdefault(key, len(keys)))
    return out


def _class_starts(rounds: list[Round], per: list[int], classes: list[int]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per round (rows) and owner class (columns): the mean start of the current iteration
    of the class's running owners; column 0 is the round's own start (owner 0's). With it,
    each class's running owners."""
    running = np.flatnonzero(per)
    ids = np.asarray(classes)[running]
    starts = np.array([r.starts[running] for r in rounds])  # rounds x running owners
    kinds, counts = np.unique(ids, return_counts=True)
    cols = [np.array([r.t for r in rounds])]
    cols += [starts[:, ids == c].mean(axis=1) for c in kinds]
    return np.stack(cols, axis=1), counts


def _fleet(series: np.ndarray, counts: np.ndarray) -> list[float]:
    """The running owners' mean start per round, from `_class_starts`."""
    return [float(v) for v in series[:, 1:] @ counts / counts.sum()]


def _mean_round(fleet: list[float]) -> float:
    """The fleet's mean round over its mean starts `fleet` (`_fleet`)."""
    return (fleet[-1] - fleet[0]) / (len(fleet) - 1)


def _room(eng: Engine, a: Round, b: Round, per: list[int]) -> int:
    """Whole rounds after `b` whose iterations are like those from `a` on, for every owner."""
    from planner.steady import alike_until

    m: int | None = None
    for k, d in enumerate(per):
        if d:
            room = (alike_until(eng, k, a.it_next[k]) - 1 - b.it_next[k]) // d
            m = room if m is None else min(m, room)
    return 0 if m is None else m


def _error(series: np.ndarray, m: int, mean_s: float) -> float:
    """The error bound of moving every running owner m rounds of `mean_s` on (`series`:
    `_class_starts` over the window): per owner class, m x how far its mean round is from
    `mean_s`, plus (2m/n + 1) x its jitter (how far a round's start is from its own mean
    rate), the most over the classes; plus twice the jitter of the round's own start (owner
    0's), at which the state is moved on: once where it is read, once where it lands."""
    n = len(series) - 1
    means = (series[-1] - series[0]) / n
    jitter = _jitter(series)
    classes = m * np.abs(means[1:] - mean_s) + (2 * m / n + 1) * jitter[1:]
    return float(classes.max() + 2 * jitter[0])


def settling(starts: list[float]) -> bool:
    """Whether rounds starting at `starts` (three or more) are still settling: their halves'
    mean rounds differ by more than `DRIFT` of the mean round plus `NOISE` x the larger
    half's jitter / the rounds."""
    n = len(starts) - 1
    half = n // 2
    mean = (starts[-1] - starts[0]) / n
    first = (starts[half] - starts[0]) / half
    second = (starts[-1] - starts[half]) / (n - half)
    t = np.asarray(starts)
    noise = max(float(_jitter(t[:half + 1])), float(_jitter(t[half:])))
    return abs(first - second) > DRIFT * mean + NOISE * noise / n


def _jitter(series: np.ndarray) -> np.ndarray:
    """How far a series of starts (rows; columns: series side by side) strays from the line
    through its first and last rows, per column."""
    n = len(series) - 1
    line = series[0] + np.multiply.outer(np.arange(n + 1), (series[-1] - series[0]) / n)
    out: np.ndarray = np.abs(series - line).max(axis=0)
    return out


def _owned(eng: Engine, b: Round) -> set[str]:
    """The processors and links of a single owner (an owner's node, a link to or from it)."""
    names = set(eng.onames)
    return {r for r in b.busy if r in names or any(end in names for end in r.split("->"))}


def _steps(a: Round, b: Round) -> list[int]:
    return [y - x for x, y in zip(a.it_next, b.it_next)]

