"""The memory an Outbox's ZeroMQ holds: counted per memory, released by weakref notes."""

from __future__ import annotations

import gc

import numpy as np
import zmq

from nodes.flight import Flight, held_by_zeromq, memory_of
from nodes.staging import Staging

MiB = 1 << 20


def frame(array: np.ndarray) -> memoryview:
    return memoryview(array)


def test_only_frames_zeromq_holds_without_a_copy_count():
    big = np.zeros(MiB, dtype=np.uint8)
    small = np.zeros(zmq.COPY_THRESHOLD - 1, dtype=np.uint8)
    frames = [b"header", frame(big), frame(small), b"bytes"]
    assert held_by_zeromq(frames) == [frames[1]]  # the header frame never counts
    assert memory_of(frames[1]) == (big.ctypes.data, MiB)


def test_memory_is_where_the_frame_starts_writable_or_not():
    base = np.zeros(3 * MiB, dtype=np.float32)
    view = base[MiB:2 * MiB]
    readonly = view.view()
    readonly.flags.writeable = False
    assert memory_of(frame(view)) == (view.ctypes.data, 4 * MiB)
    assert memory_of(frame(readonly)) == (view.ctypes.data, 4 * MiB)
    assert memory_of(memoryview(view).cast("B")) == (view.ctypes.data, 4 * MiB)
    assert memory_of(frame(view.reshape(1024, 256, 4))) == (view.ctypes.data, 4 * MiB)


def test_the_same_memory_counts_once_and_leaves_with_its_last_holder():
    flight = Flight(Staging())
    x, y = np.zeros(MiB, dtype=np.uint8), np.zeros(MiB, dtype=np.uint8)
    views = [frame(x[:]) for _ in range(3)] + [frame(y[:])]
    for v in views:
        flight.hold(v, memory_of(v), pooled=False)
    del v
    assert flight.bytes == 2 * MiB
    assert not flight.over([memory_of(views[0])], 2 * MiB)  # held already: adds nothing
    assert flight.over([(123, MiB)], 2 * MiB) and not flight.over([(123, MiB)], 3 * MiB)
    del views[3], y
    gc.collect()
    assert flight.released and flight.bytes == 2 * MiB  # noted, not yet counted
    flight.reap()
    assert flight.bytes == MiB and not flight.released
    del views[:2]
    gc.collect()
    flight.reap()
    assert flight.bytes == MiB  # one view of x is still held
    del views[0]
    gc.collect()
    flight.reap()
    assert flight.bytes == 0


def test_with_nothing_held_any_message_may_go():
    flight = Flight(Staging())
    assert not flight.over([(1, 10 * MiB)], MiB)


def test_a_staging_array_goes_back_to_the_pool_once_released():
    staging = Staging()
    flight = Flight(staging)
    view = staging.take(MiB)
    f = frame(view)
    flight.hold(f, memory_of(f), pooled=True)
    del f, view
    gc.collect()
    assert staging.held == 0  # not before the Outbox reaps
    flight.reap()
    assert staging.held == MiB and staging.take(MiB).nbytes == MiB
