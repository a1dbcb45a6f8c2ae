"""A topology's links as the kernel shapes them under `mpsl run --netns`: the `tc` command lines.

Every directed link of the topology (the same ones the nodes' Outboxes emulate in the process,
nodes.link) is shaped on the egress of its sender's interface, inside the sender's namespace:
an HTB root classifies by destination address (one class per destination, a u32 filter on
the destination's /32; traffic to anyone else is not classified and leaves unshaped), and the
class's leaf is a TBF at the link's rate, with a netem for its latency where the kernel has
netem (else latency stays in the process). So each link has its own token bucket, as each
in-process Outbox has, and both directions of a pair are shaped, each at its sender.

Pure TCP ACKs (IPv4, no options in the IP header, under 128 bytes, flags ACK alone) skip the
shaped classes: the in-process links carry no ACKs, and an ACK queued behind the reverse
direction's data (up to `limit` of it) stalls the sender. Measured with 20 messages of
128 KiB each way at once (10 Mbps one way, 25 the other): 9.31 and 24.70 Mbps with the ACKs
shaped, 9.91 and 24.99 with them apart (9.95 and 25.05 on a second try).

Sizing (measured on this machine's veths, 2 x 4 MiB over TCP at 10 Mbps):
- TBF counts every frame with its Ethernet, IP and TCP headers (1514 bytes for 1448 of
  payload at MTU 1500), the in-process link counts message bytes: the kernel rate is the
  topology's rate times `WIRE_FACTOR`, so that the payload goes at the topology's rate
  (9.56 Mbps without it, 10.00 with it).
- `burst` is at least two full frames: with one frame the timer's lateness is lost to the
  bucket (9.35 Mbps instead of 9.56); at least 2 ms at the rate, for fast links. A small burst
  keeps the kernel close to the in-process link, which has none (one message at a time at
  its rate). TBF splits TCP's GSO packets (up to 64 KiB) into frames that fit the burst.
- `limit` (bytes queued) is at least 1 MiB or 250 ms at the rate: TCP fills whatever queue
  there is; a 64 KiB queue lost 0.35% of the rate to its drops.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from mpsl.names import AGGREGATOR
from mpsl.topology import Topology

MTU = 1500
FRAME = MTU + 14  # bytes TBF counts per full frame: the MTU and the Ethernet header
PAYLOAD = MTU - 20 - 20 - 12  # TCP payload per full frame: IP, TCP and its timestamps option
WIRE_FACTOR = FRAME / PAYLOAD  # kernel rate / payload rate
MIN_LIMIT = 1 << 20
LIMIT_S = 0.25
BURST_S = 0.002
DEVICE = "eth0"  # the veth end inside each namespace
ACK_CLASS = "1:ffff"
# u32: IPv4 header of 5 words, total length < 128, TCP, flags (byte 33) exactly ACK
PURE_ACK = ["match", "ip", "protocol", "6", "0xff", "match", "u8", "0x05", "0x0f", "at", "0",
            "match", "u16", "0x0000", "0xff80", "at", "2", "match", "u8", "0x10", "0xff", "at",
            "33"]
UNSHAPED = ["htb", "rate", "100gbit", "burst", str(64 * FRAME), "cburst", str(64 * FRAME),
            "quantum", str(64 * FRAME)]  # a class that only sorts: its leaf shapes


@dataclass(frozen=True)
class Link:
    """One directed link of a topology: `src` sends to `dst` at `rate_mbps` (None: unshaped)
    after `latency_ms`."""

    src: str
    dst: str
    rate_mbps: float | None
    latency_ms: float

    @property
    def shaped(self) -> bool:
        return self.rate_mbps is not None or self.latency_ms > 0


def directed_links(topo: Topology) -> list[Link]:
    """Every directed link of `topo` with its rate and latency, as the nodes connect them:
    an owner's uplink to each compute node and the aggregator, its downlink from each compute
    node and the aggregator, compute-to-compute links; compute to aggregator is unshaped."""
    links: list[Link] = []
    chain = list(topo.chain)
    for o in topo.owners:
        for dst in [*chain, AGGREGATOR]:
            links.append(Link(o.name, dst, o.uplink_mbps, o.latency_ms))
    for c in chain:
        for o in topo.owners:
            links.append(Link(c, o.name, o.downlink_mbps, o.latency_ms))
        for c2 in chain:
            if c2 != c:
                links.append(Link(c, c2, topo.links.compute_mbps,
                                  topo.links.compute_latency_ms))
        links.append(Link(c, AGGREGATOR, None, 0.0))
    for o in topo.owners:
        links.append(Link(AGGREGATOR, o.name, o.downlink_mbps, o.latency_ms))
    for c in chain:
        links.append(Link(AGGREGATOR, c, None, 0.0))
    return links


def tbf_sizes(rate_mbps: float) -> tuple[int, int, int]:
    """`(rate_bit, burst_bytes, limit_bytes)` of the TBF that gives a TCP payload rate of
    `rate_mbps` (see the module's docstring)."""
    wire_bps = rate_mbps * 1e6 * WIRE_FACTOR
    burst = max(2 * FRAME, math.ceil(wire_bps / 8 * BURST_S))
    limit = max(MIN_LIMIT, math.ceil(wire_bps / 8 * LIMIT_S))
    return round(wire_bps), burst, limit


def tc_commands(namespace: str, links: list[Link], addresses: Mapping[str, str],
                netem: bool) -> list[list[str]]:
    """The `tc` command lines that shape `links` (all from one sender) on `DEVICE` in
    `namespace`; `addresses` maps each node to its IP. Latency is shaped only with `netem`.
    No command when no link needs the kernel."""
    kernel = [lk for lk in links if lk.rate_mbps is not None or (netem and lk.latency_ms > 0)]
    if not kernel:
        return []
    tc = ["tc", "-n", namespace]
    dev = ["dev", DEVICE, "parent", "1:"]
    cmds = [[*tc, "qdisc", "add", "dev", DEVICE, "root", "handle", "1:", "htb"],
            [*tc, "class", "add", *dev, "classid", ACK_CLASS, *UNSHAPED],
            [*tc, "filter", "add", *dev, "protocol", "ip", "prio", "1", "u32", *PURE_ACK,
             "flowid", ACK_CLASS]]
    for k, lk in enumerate(kernel, start=1):
        minor = f"{k:x}"
        cmds.append([*tc, "class", "add", *dev, "classid", f"1:{minor}", *UNSHAPED])
        cmds.append([*tc, "filter", "add", *dev, "protocol", "ip", "prio", "2", "u32",
                     "match", "ip", "dst", f"{addresses[lk.dst]}/32", "flowid", f"1:{minor}"])
        parent = f"1:{minor}"
        if lk.rate_mbps is not None:
            rate, burst, limit = tbf_sizes(lk.rate_mbps)
            handle = f"{k + 1:x}:"
            cmds.append([*tc, "qdisc", "add", "dev", DEVICE, "parent", parent, "handle",
                         handle, "tbf", "rate", f"{rate}bit", "burst", str(burst),
                         "limit", str(limit)])
            parent = f"{k + 1:x}:1"
        if netem and lk.latency_ms > 0:
            cmds.append([*tc, "qdisc", "add", "dev", DEVICE, "parent", parent, "netem",
                         "delay", f"{lk.latency_ms:g}ms", "limit", "100000"])
    return cmds


def links_from(links: list[Link], src: str) -> list[Link]:
    """The shaped links that `src` sends on."""
    return [lk for lk in links if lk.src == src and lk.shaped]
