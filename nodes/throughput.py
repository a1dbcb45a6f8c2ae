"""Achieved throughput per link, measured from the run's own send events, and the drift test
against the rate the current plan assumed.

A link's event spans one message's transmission (`t0` to `t1`, `bytes` of header and frames),
so each message gives the rate the link achieved: bytes * 8 / (t1 - t0). A link's measured rate
is the lower median of those of its messages that ended within `window_s` of its latest one:
a median, so that a window straddling a change reads one rate or the other, never a blend
(a blend would move the plan twice). Unshaped links send in no time and give no rate.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Mapping, Sequence

from mpsl.trace import Event

SCAN_LIMIT = 20_000  # events looked at, newest first, per measurement


def message_mbps(e: Event) -> float | None:
    """The rate one message achieved on its link, in Mbps; None if it took no time."""
    dt = e.t1 - e.t0
    return e.bytes * 8 / dt / 1e6 if dt > 0 and e.bytes > 0 else None


def link_rate(events: Sequence[Event], links: Collection[str], window_s: float) -> float | None:
    """The measured rate (Mbps) of the links named `links` (taken together): the lower median
    over their messages that ended within `window_s` of the latest; None without any."""
    rates: list[float] = []
    latest: float | None = None
    for e in _newest_first(events):
        if e.resource not in links:
            continue
        if latest is not None and e.t1 < latest - window_s - 1.0:
            break  # events are appended about in order of t1: a second of slack
        rate = message_mbps(e)
        if rate is None:
            continue
        latest = e.t1 if latest is None else max(latest, e.t1)
        if e.t1 >= latest - window_s:
            rates.append(rate)
    return statistics.median_low(rates) if rates else None


def _newest_first(events: Sequence[Event]) -> Sequence[Event]:
    start = max(0, len(events) - SCAN_LIMIT)
    return [events[i] for i in range(len(events) - 1, start - 1, -1)]


def drifted(measured: float | None, assumed: float | None, threshold: float) -> bool:
    """Whether a measured rate is more than `threshold` (a fraction) away from the assumed one;
    nothing measured never drifts, a link assumed unshaped drifts once it measures a rate."""
    if measured is None:
        return False
    if assumed is None:
        return True
    return abs(measured - assumed) > threshold * assumed


def drifts(measured: Mapping[str, float | None], assumed: Mapping[str, float | None],
           threshold: float) -> list[str]:
    """The names whose measured rate drifted from the assumed one (`drifted`), in order."""
    return [k for k in sorted(measured) if drifted(measured[k], assumed.get(k), threshold)]
