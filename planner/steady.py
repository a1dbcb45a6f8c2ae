"""Steady state: find the period of an epoch's schedule and skip whole periods of it.

Once the pipeline is full, the schedule repeats iteration after iteration. At each checkpoint
(an instant at which owner 0, in SL the owner in turn, starts an iteration, every event of
that instant handled) the engine's state is read relative to that instant: each owner's round
and the start of the iteration it runs, each node's processor, round and task queue (iterations
counted from the owner's current one), each busy link's free time and every pending event.
When it equals the state at an earlier checkpoint (the discrete part exactly, the times within
`tolerance`), the engine is a deterministic machine in the same state, so it repeats the
stretch between the two as long as the iterations it starts are alike (the same batch size,
the same aggregation round). Whole periods are then added arithmetically: times shifted,
iteration numbers advanced, busy time and iteration times repeated; the simulation goes on
exactly from there (the last partial batch, the aggregation rounds, the drain). With no
repeat found within `give_up` checkpoints the engine simply runs on: the full simulation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from planner.rate import RateSkip
from planner.simstate import DONE, MSG, SYNC

if TYPE_CHECKING:
    from planner.engine import Engine

HISTORY = 64  # checkpoints kept to compare with: the longest period looked for
# checkpoints without a repeat before rounds may be extrapolated (planner.rate): an exact
# period, where there is one, is usually found sooner; or owner-iterations, where a round
# holds many (in a large fleet of owners alike a period is a round or none)
RATE_AFTER = 8
RATE_AFTER_ITERATIONS = 2_000
GIVE_UP = 100_000  # checkpoints without a repeat after which the engine stops looking


def tolerance(t: float) -> float:
    """Seconds within which two relative times count as equal at time `t`."""
    return 1e-9 + 1e-11 * abs(t)


@dataclass
class _Checkpoint:
    t: float
    times: list[float]  # the summary's times
    it_next: list[int]
    busy: dict[str, float]
    n_its: int
    full: tuple[Any, ...] | None = None  # the full state, once read: its discrete part
    full_times: list[float] | None = None  # and its times


class SteadyState:
    """The checkpoints of one simulation and the periods skipped.

    A checkpoint first reads a summary (each node's processor and queue lengths, the events
    pending): O(nodes). Only when it matches an earlier summary is the full state read, O(the
    work in flight), and compared with the earlier full states; a period is thus found one
    period after the summaries first repeat, and an epoch that never repeats costs little.
    """

    def __init__(self, history: int = HISTORY, give_up: int = GIVE_UP,
                 rate: RateSkip | None = None) -> None:
        self.history, self.give_up = history, give_up
        self.rate = rate  # where no period repeats: extrapolate a saturated fleet's rounds
        self.seen: dict[tuple[Any, ...], list[_Checkpoint]] = {}
        self.order: deque[tuple[Any, ...]] = deque()
        self.misses = 0  # checkpoints since the last skip without a repeat
        self.its_from: int | None = None  # owner-iterations begun at the first of them
        self.periods = 0  # whole periods skipped, all skips together
        self.skipped_s = 0.0  # simulated seconds skipped

    @property
    def active(self) -> bool:
        return self.misses < self.give_up

    def checkpoint(self, eng: Engine, t: float) -> float:
        """Read the state at `t`; on a repeat, skip whole periods. The seconds skipped."""
        disc, times = summary(eng, t)
        tol = tolerance(t)
        alike = [old for old in self.seen.get(disc, ()) if _close(old.times, times, tol)]
        cp = _Checkpoint(t, times, list(eng.it_next), dict(eng.busy), len(eng.it_times))
        if alike:
            cp.full, cp.full_times = read_state(eng, t)
            for old in reversed(alike):
                if (old.full == cp.full and old.full_times is not None
                        and _close(old.full_times, cp.full_times, tol)):
                    dt = self._skip(eng, old, cp)
                    if dt > 0.0:
                        self._jumped()
                        return dt
                    break
        if self.rate is not None:
            begun = sum(eng.it_next)
            if self.its_from is None:
                self.its_from = begun
            dt = self.rate.offer(eng, t, self.misses >= RATE_AFTER
                                 or begun - self.its_from >= RATE_AFTER_ITERATIONS)
            if dt > 0.0:
                self.periods += self.rate.rounds_last
                self.skipped_s += dt
                self._jumped()
                return dt
        self.misses += 1
        self.seen.setdefault(disc, []).append(cp)
        self.order.append(disc)
        if len(self.order) > self.history:
            gone = self.seen[self.order.popleft()]
            gone.pop(0)
            if not gone:
                self.seen = {k: v for k, v in self.seen.items() if v}
        return 0.0

    def _jumped(self) -> None:
        """Forget the checkpoints: the engine's iterations moved on."""
        self.seen.clear()
        self.order.clear()
        self.misses = 0
        self.its_from = None
        if self.rate is not None:
            self.rate.reset()

    def _skip(self, eng: Engine, old: _Checkpoint, cp: _Checkpoint) -> float:
        """Add as many whole periods (`old` to `cp`) as every owner's alike iterations allow."""
        steps = [b - a for a, b in zip(old.it_next, cp.it_next)]
        m: int | None = None
        for k, d in enumerate(steps):
            if d:
                room = (alike_until(eng, k, old.it_next[k]) - 1 - cp.it_next[k]) // d
                m = room if m is None else min(m, room)
        if m is None or m < 1:
            return 0.0
        dt = m * (cp.t - old.t)
        shift(eng, dt, [m * d for d in steps])
        for name, v in cp.busy.items():
            eng.busy[name] = v + m * (v - old.busy.get(name, 0.0))
        eng.it_times.extend(eng.it_times[old.n_its:cp.n_its] * m)
        self.periods += m
        self.skipped_s += dt
        return dt


def alike_until(eng: Engine, k: int, j0: int) -> int:
    """The first iteration of owner k from `j0` on that is not like `j0`: another batch size,
    or past the end of its aggregation round."""
    batches = eng.work.batches[k]
    end = min(len(batches), eng.work.ends[eng.round_now[k]])
    if j0 >= end:
        return j0
    # an owner's batches are full ones, then at most one partial one: from j0 on they are
    # alike to `end`, or to the partial one before it
    return end if batches[end - 1] == batches[j0] else end - 1


def _close(a: list[float], b: list[float], tol: float) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def summary(eng: Engine, t: float) -> tuple[tuple[Any, ...], list[float]]:
    """A cheap part of the state at `t`: each node's processor, round and queue lengths, the
    number of events pending; the times: each busy node's free time, the next event's."""
    disc: list[Any] = [len(eng.heap)]
    times: list[float] = [eng.heap[0][0] - t] if eng.heap else []
    for node in eng.nodes.values():
        idle = node.free_at < t
        disc.append((node.busy, idle, node.last_owner, node.round, node.queue.sizes()))
        if not idle:
            times.append(node.free_at - t)
    return tuple(disc), times


def read_state(eng: Engine, t: float) -> tuple[tuple[Any, ...], list[float]]:
    """What decides the engine's future at `t`: (the discrete part, the times after `t`)."""
    base = eng.it_next
    ends, batches = eng.work.ends, eng.work.batches
    disc: list[Any] = [tuple(eng.round_now), tuple(eng.params_in)]
    times: list[float] = []
    running = []
    for k in range(eng.K):  # an owner's iteration start counts while it iterates
        if base[k] < min(len(batches[k]), ends[eng.round_now[k]]):
            running.append(k)
            times.append(eng.it_start[k] - t)
            if eng.sl:  # the owner in turn: those after it have not started
                break
    disc.append(tuple(running))
    for node in eng.nodes.values():
        idle = node.free_at < t
        disc.append((node.busy, idle, node.last_owner, node.round,
                     None if node.synced is None else tuple(node.synced)))
        if not idle:
            times.append(node.free_at - t)
        qd, qt = node.queue.state(t, base)
        disc.append(qd)
        times.extend(qt)
    for name, free in eng.wires.free.items():  # a link free by `t` is as good as free now
        if free > t:
            disc.append(name)
            times.append(free - t)
    for te, _, kind, a, b in sorted(eng.heap, key=lambda e: (e[0], e[1])):
        disc.append(_event(kind, a, b, base))
        times.append(te - t)
    return tuple(disc), times


def _event(kind: int, a: Any, b: Any, base: list[int]) -> tuple[Any, ...]:
    if kind == DONE:
        return (kind, a.name, None if b is None else (b.owner, b.iteration - base[b.owner],
                                                       b.index))
    if kind == MSG:
        k, j, key, nbytes = b
        return (kind, a.name, k, j - base[k], key, nbytes)
    if kind == SYNC:
        return (kind, a.name, *b)
    return (kind, a, b)


def shift(eng: Engine, dt: float, steps: list[int]) -> None:
    """Move the engine `dt` seconds and owner k `steps[k]` iterations on (whole periods)."""
    heap = eng.heap
    for i, (te, seq, kind, a, b) in enumerate(heap):  # the heap's order is kept
        if kind == MSG:
            b = (b[0], b[1] + steps[b[0]], b[2], b[3])
        heap[i] = (te + dt, seq, kind, a, b)
    for k, d in enumerate(steps):
        eng.it_next[k] += d
        eng.it_start[k] += dt
    for node in eng.nodes.values():
        node.free_at += dt
        node.queue.shift(dt, steps)
    free = eng.wires.free
    for name in free:
        free[name] += dt
    eng.last += dt
