"""Memory an Outbox has handed to ZeroMQ without a copy, counted until ZeroMQ lets go of it.

pyzmq's zero-copy frames keep their buffers alive until libzmq has sent them; a weakref to
each buffer says when. Its callback runs in whichever thread let go of the buffer, often
ZeroMQ's I/O thread while it moves bytes, so it only notes the death (a deque's append is
atomic: no lock, so that thread never waits for a sender); the Outbox counts the notes with
`Flight.reap`, under its own lock, as it does every other call here. Memory sent again while
ZeroMQ still holds it counts once: it is held once.
"""

from __future__ import annotations

import collections
import ctypes
import weakref
from typing import Any

import numpy as np
import zmq

from nodes.staging import Staging

Memory = tuple[int, int]  # a sent buffer's memory: its address and bytes


def held_by_zeromq(frames: list[bytes | memoryview]) -> list[memoryview]:
    """The frames ZeroMQ will hold without copying them (pyzmq copies smaller ones at once)."""
    return [f for f in frames[1:]
            if isinstance(f, memoryview) and f.nbytes >= zmq.COPY_THRESHOLD]


def memory_of(frame: memoryview) -> Memory:
    """The memory a frame over a numpy array (as `nodes.wire.encode` makes them) spans."""
    if frame.readonly:  # ctypes maps writable buffers only; numpy's interface is 4x slower
        return frame.obj.__array_interface__["data"][0], frame.nbytes  # type: ignore[attr-defined]
    return ctypes.addressof(ctypes.c_char.from_buffer(frame)), frame.nbytes


class Flight:
    """The bytes of memory ZeroMQ holds for an Outbox, and each staging array to give back to
    `staging` once ZeroMQ lets go of it."""

    def __init__(self, staging: Staging) -> None:
        self.bytes = 0
        self._staging = staging
        # id(weakref) -> (the weakref to a sent buffer, its memory, its staging array or None)
        self._held: dict[int, tuple[weakref.ref[Any], Memory, np.ndarray | None]] = {}
        self._holders: dict[Memory, int] = {}  # memory -> sent buffers holding it
        # the weakrefs of dead buffers: their callback is this deque's append, a C call that
        # makes no Python frame in the thread that let go of the buffer
        self._freed: collections.deque[weakref.ref[Any]] = collections.deque()

    @property
    def released(self) -> bool:
        """Whether buffers died since the last `reap` (read without a lock: a hint)."""
        return bool(self._freed)

    def over(self, memory: list[Memory], limit: int) -> bool:
        """Whether also holding `memory` would pass `limit` bytes (with nothing held, any
        message may go; memory already held adds nothing)."""
        if not self.bytes or self.bytes + sum(n for _, n in memory) <= limit:
            return False
        new = sum(mem[1] for mem in set(memory) if mem not in self._holders)
        return self.bytes + new > limit

    def hold(self, frame: memoryview, memory: Memory, pooled: bool) -> None:
        """Count `frame` held from now on; `pooled`: its array is a staging array of ours."""
        holders = self._holders.get(memory, 0)
        if not holders:
            self.bytes += memory[1]
        self._holders[memory] = holders + 1
        array = frame.obj
        ref = weakref.ref(array, self._freed.append)
        self._held[id(ref)] = (ref, memory, array.base if pooled else None)  # type: ignore[attr-defined]

    def reap(self) -> None:
        """Take the buffers ZeroMQ let go of out of the count; their staging arrays go back."""
        while self._freed:
            _, memory, array = self._held.pop(id(self._freed.popleft()))
            holders = self._holders.pop(memory) - 1
            if holders:
                self._holders[memory] = holders
            else:
                self.bytes -= memory[1]
            if array is not None:  # once its memory is out of `_holders`: it may be sent again
                self._staging.give(array)
