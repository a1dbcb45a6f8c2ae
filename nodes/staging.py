"""Snapshot buffers of an Outbox, kept once ZeroMQ lets go of them, for the next message."""

from __future__ import annotations

import collections
import threading

import numpy as np

STAGING_BYTES = 256 << 20  # idle snapshot buffers an Outbox keeps for reuse
STAGING_MIN_BYTES = 64 << 10  # smaller buffers are cheap to allocate (and copied by pyzmq)


class Staging:
    """Snapshot buffers that ZeroMQ has let go of, kept for the next tensor of the same size.

    Reuse avoids faulting in fresh pages for every message: glibc serves large allocations
    with a new mmap each time, which costs more than the copy itself. ``take`` hands out a
    view of a pooled array; the Outbox gives the array (the view's ``base``) back once ZeroMQ
    has released the view. Sizes least recently used are evicted past ``max_bytes``.
    """

    def __init__(self, max_bytes: int = STAGING_BYTES) -> None:
        self.max_bytes = max_bytes
        self.held = 0
        self._free: collections.OrderedDict[int, list[np.ndarray]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        with self._lock:
            bufs = self._free.get(nbytes)
            if bufs:
                self._free.move_to_end(nbytes)
                self.held -= nbytes
                return bufs.pop()[:]
        return np.empty(nbytes, dtype=np.uint8)[:]

    def give(self, buf: np.ndarray) -> None:
        n = buf.nbytes
        if n < STAGING_MIN_BYTES or n > self.max_bytes:
            return
        with self._lock:
            while self.held + n > self.max_bytes:  # evict the least recently used sizes
                size, bufs = next(iter(self._free.items()))
                bufs.pop()
                self.held -= size
                if not bufs:
                    del self._free[size]
            self._free.setdefault(n, []).append(buf)
            self._free.move_to_end(n)
            self.held += n
