"""The simulated machines: a node's processor and task queue, its memory log, and the links."""

from __future__ import annotations

import math
from array import array
from typing import Any

import numpy as np

from mpsl.taskqueue import TaskQueue
from mpsl.topology import Topology
from mpsl.trace import Event
from planner.profile import Profile
from planner.resources import Hop, Links

DONE, MSG, SYNC, PARAMS, GLOBAL = range(5)  # the engine's event kinds


class SimNode:
    """One owner or compute node: its processor's state, its task queue and memory log.

    A compute node counts, per aggregation round, the syncs that have come in; one that
    averages its copies (`avg_s` seconds) has a gated queue: the next round waits for it.
    """

    __slots__ = ("name", "prof", "sleeps", "queue", "busy", "free_at", "last_owner", "mem",
                 "passes", "act", "steps", "owner", "gated", "next", "synced", "round",
                 "avg_s", "avg_label", "param_bytes", "programs", "owner_hops", "to_aggregator")

    def __init__(self, name: str, prof: Profile, sleeps: bool, owner: int | None,
                 gated: bool = False) -> None:
        self.name, self.prof, self.owner = name, prof, owner
        self.sleeps = sleeps  # an emulated slower device: it sleeps after every action
        self.queue = TaskQueue(gated=gated)
        self.gated = gated
        self.busy = False
        self.free_at = -math.inf  # when its processor last finished a task
        self.last_owner = -1  # whose task (model copy) it ran last
        self.mem = MemoryLog()
        self.passes: dict[tuple[tuple[int, int], int], tuple[float, float]] = {}  # (span, b)
        self.act: dict[int, int] = {}  # part: activation bytes kept per sample
        self.steps: dict[int | None, float] = {}  # part (None: the owner's parts): STEP s
        self.next: str | None = None  # the compute node a sync is forwarded to
        self.synced: list[int] | None = None  # compute nodes: syncs come in, per round
        self.round = 0  # compute nodes: the next round to close
        self.avg_s = 0.0
        self.avg_label = "AVG"
        self.param_bytes = 0  # of the parts it runs (one copy)
        # the engine's timed steps of a task for one iteration's micro-batch sizes, by
        # (id(task), id(sizes)) (planner.engine.Engine.program)
        self.programs: dict[tuple[int, int], tuple[tuple[Any, ...], ...]] = {}
        self.owner_hops: dict[int, Hop] = {}  # the link to owner k
        self.to_aggregator: tuple[Hop, float] | None = None  # a loss report's link, its tx

    def pass_s(self, part: int, span: tuple[int, int], b: int) -> tuple[float, float]:
        """(forward, backward) seconds of `part` (layers `span`) for a micro-batch of `b`."""
        d = self.passes.get((span, b))  # per-owner plans: a part's span differs per owner
        if d is None:
            d = self.passes[(span, b)] = (self.prof.fwd(span, b), self.prof.bwd(span, b))
        return d

    def __repr__(self) -> str:
        return f"SimNode({self.name})"


class Wires:
    """Every link's queue: one message at a time at the link's rate, delivered `latency`
    after its last byte left; busy seconds and (with `record`) the trace's link events."""

    def __init__(self, topo: Topology, busy: dict[str, float], events: list[Event] | None) -> None:
        self.links = Links(topo)
        self.free: dict[str, float] = {}
        self.busy = busy
        self.events = events

    def send(self, src: str, dst: str, nbytes: int, t: float, action: str, owner: int | None,
             it: int | None, mb: int | None, mem: MemoryLog | None) -> float:
        """Queue a message at `t`; its arrival time. The sender's buffer (`mem`) holds it
        until it is sent."""
        return self.send_on(self.links(src, dst), src, nbytes, t, action, owner, it, mb, mem)

    def send_on(self, h: Hop, src: str, nbytes: int, t: float, action: str, owner: int | None,
                it: int | None, mb: int | None, mem: MemoryLog | None) -> float:
        """`send` on the link `h` (from `src`)."""
        return self.put(h, h.tx_s(nbytes), src, nbytes, t, action, owner, it, mb, mem)

    def put(self, h: Hop, tx_s: float, src: str, nbytes: int, t: float, action: str,
            owner: int | None, it: int | None, mb: int | None, mem: MemoryLog | None
            ) -> float:
        """`send_on` with the message's transmission time `tx_s` (`h.tx_s(nbytes)`) known."""
        start = self.free.get(h.name, 0.0)
        if start < t:
            start = t
        end = start + tx_s
        self.free[h.name] = end
        self.busy[h.name] = self.busy.get(h.name, 0.0) + (end - start)
        if self.events is not None:
            self.events.append(Event(src, h.name, action, owner, it, mb, start, end, nbytes))
        if mem is not None:  # held from `t` until sent
            bt, bd = mem.buf_t, mem.buf_d
            bt.append(t)
            bt.append(end)
            bd.append(nbytes)
            bd.append(-nbytes)
        return end + h.latency_s


class MemoryLog:
    """The bytes a node adds (+) and frees (-) over time: activations (`act_t`, `act_d`) and
    message buffers (`buf_t`, `buf_d`); the simulator's hot paths append to them directly."""

    __slots__ = ("act_t", "act_d", "buf_t", "buf_d")

    def __init__(self) -> None:
        self.act_t, self.act_d = array("d"), array("q")
        self.buf_t, self.buf_d = array("d"), array("q")

    def act(self, t: float, nbytes: int) -> None:
        """Activation bytes kept (+) or freed (-) at `t`."""
        self.act_t.append(t)
        self.act_d.append(nbytes)

    def buf(self, t: float, nbytes: int) -> None:
        """Message buffer bytes held (+) or let go (-) at `t`."""
        self.buf_t.append(t)
        self.buf_d.append(nbytes)

    def peaks(self) -> tuple[int, int, int]:
        """Peak of activations + buffers together, and of each alone (frees first at a tie).
        One sort serves all three: in the order of (time, change) of them all, each kind's
        changes are in their own such order."""
        at, ad = np.frombuffer(self.act_t), np.frombuffer(self.act_d, dtype=np.int64)
        bt, bd = np.frombuffer(self.buf_t), np.frombuffer(self.buf_d, dtype=np.int64)
        if not len(ad) + len(bd):
            return 0, 0, 0
        d = np.concatenate((ad, bd))
        order = np.lexsort((d, np.concatenate((at, bt))))
        d = d[order]
        is_act = order < len(ad)
        return _top(d), _top(np.where(is_act, d, 0)), _top(np.where(is_act, 0, d))


def _top(d: np.ndarray) -> int:
    """The highest running sum (from 0) of the changes `d`, in their order."""
    return max(0, int(np.cumsum(d).max()))
