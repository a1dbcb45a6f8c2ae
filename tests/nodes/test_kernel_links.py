"""The links of a `--netns` run and the `tc` command lines that shape them (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpsl.topology import load
from nodes.kernel_links import (
    FRAME,
    WIRE_FACTOR,
    Link,
    directed_links,
    links_from,
    tbf_sizes,
    tc_commands,
)

TWO_HOP = Path(__file__).resolve().parents[2] / "topologies" / "two_hop.yaml"
THREE_HOP = TWO_HOP.with_name("three_hop.yaml")


def test_wire_factor_is_frames_over_tcp_payload() -> None:
    assert FRAME == 1514
    assert pytest.approx(1514 / 1448) == WIRE_FACTOR


def test_tbf_sizes_at_4g_rates() -> None:
    # 10 Mbps of payload: 10e6 * 1514 / 1448 bit/s on the wire, a burst of two frames, a
    # 1 MiB queue
    assert tbf_sizes(10) == (10455801, 3028, 1 << 20)
    rate, burst, limit = tbf_sizes(1000)  # a fast link: 2 ms of burst, 250 ms of queue
    assert rate == 1045580110
    assert burst == 261396 and limit == 32674379


def test_two_hop_links_carry_the_topologys_numbers() -> None:
    links = directed_links(load(TWO_HOP))
    by = {(lk.src, lk.dst): lk for lk in links}
    assert by["owner0", "server"] == Link("owner0", "server", 10.0, 0.0)
    assert by["owner3", "aggregator"] == Link("owner3", "aggregator", 10.0, 0.0)
    assert by["server", "owner2"] == Link("server", "owner2", 25.0, 0.0)
    assert by["aggregator", "owner1"] == Link("aggregator", "owner1", 25.0, 0.0)
    assert by["server", "aggregator"].rate_mbps is None
    assert by["aggregator", "server"].rate_mbps is None
    assert len(links) == 4 * 2 + 4 + 1 + 4 + 1
    assert [lk.dst for lk in links_from(links, "server")] == [f"owner{i}" for i in range(4)]


def test_per_owner_overrides_and_compute_links() -> None:
    topo = load(THREE_HOP, ["links.compute_mbps=100", "links.compute_latency_ms=5",
                            "data_owners.overrides=[{index: 1, uplink_mbps: 2, "
                            "latency_ms: 30}]"])
    by = {(lk.src, lk.dst): lk for lk in directed_links(topo)}
    a, b = topo.chain
    assert by[a, b] == Link(a, b, 100.0, 5.0) and by[b, a] == Link(b, a, 100.0, 5.0)
    assert by["owner1", a] == Link("owner1", a, 2.0, 30.0)
    assert by[b, "owner1"].latency_ms == 30.0
    assert by["owner0", a].rate_mbps == topo.owner(0).uplink_mbps


IPS = {"server": "10.213.0.3", "owner0": "10.213.0.4", "aggregator": "10.213.0.2"}


def test_tc_commands_one_class_and_tbf_per_destination() -> None:
    links = [Link("owner0", "server", 10.0, 0.0), Link("owner0", "aggregator", 10.0, 0.0)]
    cmds = [" ".join(c) for c in tc_commands("ns0", links, IPS, netem=False)]
    tc = "tc -n ns0"
    cls = "htb rate 100gbit burst 96896 cburst 96896 quantum 96896"
    assert cmds == [
        f"{tc} qdisc add dev eth0 root handle 1: htb",
        f"{tc} class add dev eth0 parent 1: classid 1:ffff {cls}",
        f"{tc} filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip protocol 6 0xff "
        "match u8 0x05 0x0f at 0 match u16 0x0000 0xff80 at 2 match u8 0x10 0xff at 33 "
        "flowid 1:ffff",
        f"{tc} class add dev eth0 parent 1: classid 1:1 {cls}",
        f"{tc} filter add dev eth0 parent 1: protocol ip prio 2 u32 match ip dst "
        "10.213.0.3/32 flowid 1:1",
        f"{tc} qdisc add dev eth0 parent 1:1 handle 2: tbf rate 10455801bit burst 3028 "
        "limit 1048576",
        f"{tc} class add dev eth0 parent 1: classid 1:2 {cls}",
        f"{tc} filter add dev eth0 parent 1: protocol ip prio 2 u32 match ip dst "
        "10.213.0.2/32 flowid 1:2",
        f"{tc} qdisc add dev eth0 parent 1:2 handle 3: tbf rate 10455801bit burst 3028 "
        "limit 1048576",
    ]


def test_latency_goes_to_netem_only_where_the_kernel_has_it() -> None:
    links = [Link("server", "owner0", 25.0, 40.0), Link("server", "aggregator", None, 7.0)]
    without = tc_commands("ns1", links, IPS, netem=False)
    assert not any("netem" in c for c in without)
    assert sum("tbf" in c for c in without) == 1  # the unshaped rate needs no class here
    with_netem = [" ".join(c) for c in tc_commands("ns1", links, IPS, netem=True)]
    assert "tc -n ns1 qdisc add dev eth0 parent 2:1 netem delay 40ms limit 100000" \
        in with_netem
    assert "tc -n ns1 qdisc add dev eth0 parent 1:2 netem delay 7ms limit 100000" \
        in with_netem


def test_no_commands_without_shaped_links() -> None:
    assert tc_commands("ns", [Link("server", "aggregator", None, 0.0)], IPS, True) == []
