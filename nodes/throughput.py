"""Achieved throughput per link, measured from the run's own send events, and the drift test
against the rate the current plan assumed.

A link's event spans one message's transmission (`t0` to `t1`, `bytes` of header and frames),
so each message gives the rate the link achieved: bytes * 8 / (t1 - t0). A link's measured rate
is the lower median of those of its messages that ended within `window_s` of its latest one:
a median, so that a window straddling a change reads one rate or the other, never a blend.
The drift test reads the window; a re-plan takes each link's rate now (its latest message),
so that owners whose windows turn at different rounds are all planned for at the first.
Unshaped links send in no time and give no rate.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mpsl.actions import Msg
from mpsl.names import AGGREGATOR, link_name
from mpsl.topology import Topology
from mpsl.trace import Event

if TYPE_CHECKING:
    from nodes.node import Node

SCAN_LIMIT = 20_000  # events looked at, newest first, per measurement


def message_mbps(e: Event) -> float | None:
    """The rate one message achieved on its link, in Mbps; None if it took no time."""
    dt = e.t1 - e.t0
    return e.bytes * 8 / dt / 1e6 if dt > 0 and e.bytes > 0 else None


def link_rate(events: Sequence[Event], links: Collection[str], window_s: float) -> float | None:
    """The measured rate (Mbps) of the links named `links` (taken together): the lower median
    over their messages that ended within `window_s` of the latest; None without any. (With
    `window_s` 0: the rate of the latest message, the link's rate now.)"""
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


def uplink_meta(topo: Topology, node: str, events: Sequence[Event]) -> dict[str, Any]:
    """What an owner's PARAMS add under re-planning: its uplinks' measured rate."""
    if not topo.replan.enabled:
        return {}
    links = {e.resource for e in events[-SCAN_LIMIT:] if e.node == node and "->" in e.resource}
    rate = link_rate(events, links, topo.replan.window_s)
    if rate is None:
        return {}
    return {"rates": {"uplink_mbps": rate, "uplink_now_mbps": link_rate(events, links, 0.0)}}


def downlink_rates(topo: Topology, node: str, events: Sequence[Event]
                   ) -> dict[str, list[float]]:
    """A compute node's measured rate of each link to an owner, by owner name: over the
    window, and now (its latest message)."""
    out: dict[str, list[float]] = {}
    for o in topo.owners:
        link = {link_name(node, o.name)}
        rate, now = link_rate(events, link, topo.replan.window_s), link_rate(events, link, 0.0)
        if rate is not None and now is not None:
            out[o.name] = [rate, now]
    return out


def valid_rate(x: Any) -> float | None:
    """A rate from a message's meta: a positive finite number, else None."""
    ok = type(x) in (int, float) and math.isfinite(x) and x > 0
    return float(x) if ok else None


def report_rates(node: Node, r: int) -> None:
    """A compute node that sends to owners tells the aggregator, at round r's end, each such
    link's measured rate (re-planning only)."""
    if node.topo.replan.enabled and any(link_rates_to_owners(node)):
        node.send(AGGREGATOR, Msg.CONTROL, iteration=r, type="rates", round=r, trace=False,
                  rates=downlink_rates(node.topo, node.name, node.events))


def link_rates_to_owners(node: Node) -> list[str]:
    """The owners `node` has a link to."""
    return [o.name for o in node.topo.owners if o.name in node.outboxes]
