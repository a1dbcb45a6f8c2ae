"""An emulated link's clock: one message at a time at the link's rate, delivered a latency later."""

from __future__ import annotations

MAX_CATCHUP_S = 0.25  # how far the virtual clock may start a transmission in the past


class LinkClock:
    """When each message occupies an emulated link: a token bucket with serialization time.

    Pure bookkeeping on caller-given times (monotonic seconds), so that tests can pin it down.
    A message enqueued at ``enq`` starts when the bucket holds tokens again (``free_at``), or
    at ``enq`` if later (at once on an unshaped link); a start more than ``max_catchup_s`` in
    the past (the sender thread woke late) is moved to ``now - max_catchup_s``. It ends when
    its bytes have been paid for at ``rate_mbps`` beyond the ``burst_bytes`` the bucket held,
    and is due at the receiver ``latency_s`` later.
    """

    def __init__(self, rate_mbps: float | None, burst_bytes: int = 0, latency_s: float = 0.0,
                 max_catchup_s: float = MAX_CATCHUP_S) -> None:
        self.burst_bytes = burst_bytes
        self.set_rate(rate_mbps)
        self.latency_s = latency_s
        self.max_catchup_s = max_catchup_s
        self.free_at = float("-inf")  # the bucket is back to >= 0 tokens at this time

    def set_rate(self, rate_mbps: float | None) -> None:
        """Messages scheduled from now on go at `rate_mbps` (None: unshaped)."""
        self.bps = None if rate_mbps is None else rate_mbps * 1e6 / 8  # bytes per second
        self.burst_s = 0.0 if self.bps is None else self.burst_bytes / self.bps

    def ready(self, now: float) -> bool:
        """Whether a message may start at ``now``."""
        return self.bps is None or self.free_at <= now

    def schedule(self, nbytes: int, enq: float, now: float) -> tuple[float, float, float]:
        """``(t0, t1, due)``: transmission start, end, and delivery time of the message."""
        if self.bps is None:
            start = max(enq, now - self.max_catchup_s)
            return start, start, start + self.latency_s
        start = max(enq, self.free_at, now - self.max_catchup_s)
        self.free_at = max(self.free_at, start - self.burst_s) + nbytes / self.bps
        t1 = max(start, self.free_at)
        return start, t1, t1 + self.latency_s


