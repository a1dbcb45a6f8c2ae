"""`--netns` without root: the nodes' topology, the probe's one-line refusals, the commands of
a run's network and their removal on any exit; with root: leftovers of a dead run go."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from mpsl.topology import load
from nodes import netns
from nodes.kernel_links import directed_links
from nodes.netns import KernelNetwork, NetnsError, processes
from nodes.netns_topology import netns_overrides, raw_document

TWO_HOP = Path(__file__).resolve().parents[2] / "topologies" / "two_hop.yaml"
IPS = {"aggregator": "10.213.4.2", "server": "10.213.4.3",
       **{f"owner{i}": f"10.213.4.{i + 4}" for i in range(4)}}


def nodes_topology(user: list[str], kernel_latency: bool = False):  # type: ignore[no-untyped-def]
    topo = load(TWO_HOP, user)
    sets = netns_overrides(raw_document(TWO_HOP, user), topo, IPS, kernel_latency)
    return topo, load(TWO_HOP, [*user, *sets])


def test_nodes_move_to_their_namespaces_and_the_kernel_takes_the_rates() -> None:
    topo, moved = nodes_topology(["data_owners.latency_ms=20"])
    assert moved.aggregator == "tcp://10.213.4.2:5550"
    assert moved.compute("server").address == "tcp://10.213.4.3:5590"
    assert [o.address for o in moved.owners] == [f"tcp://10.213.4.{i + 4}:{5600 + i}"
                                                 for i in range(4)]
    assert moved.owners_per_process == 1
    assert all(o.uplink_mbps is None and o.downlink_mbps is None for o in moved.owners)
    assert moved.links.compute_mbps is None
    assert all(o.latency_ms == 20.0 for o in moved.owners)  # no netem: kept in the process
    assert moved.training == topo.training and moved.plan == topo.plan


def test_netem_takes_latency_and_per_owner_fields_stay() -> None:
    user = ["data_owners.overrides=[{index: 2, uplink_mbps: 3, latency_ms: 9, "
            "compute_scale: 2.5, micro_batches: 2}]", "data_owners.per_process=4"]
    _, moved = nodes_topology(user, kernel_latency=True)
    o2 = moved.owner(2)
    assert (o2.uplink_mbps, o2.latency_ms, o2.compute_scale, o2.micro_batches) == \
        (None, 0.0, 2.5, 2)
    assert o2.address == "tcp://10.213.4.6:5602"
    assert moved.owners_per_process == 1
    assert moved.links.compute_latency_ms == 0.0


def test_probe_refuses_in_one_line_without_root_or_iproute2(
        monkeypatch: pytest.MonkeyPatch) -> None:
    netns.probe.cache_clear()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    caps = netns.probe()
    assert not caps.allowed and caps.reason is not None and "needs root" in caps.reason
    netns.probe.cache_clear()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda t: None if t == "tc" else f"/bin/{t}")
    assert netns.probe().reason == "--netns needs `tc` (install iproute2)"
    netns.probe.cache_clear()


class FakeShell:
    """Records the commands; fails the one containing `fail_on`."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.cmds: list[str] = []
        self.fail_on = fail_on

    def __call__(self, cmd: Sequence[str], check: bool = True) -> str:
        line = " ".join(cmd)
        self.cmds.append(line)
        if self.fail_on and self.fail_on in line and check:
            raise NetnsError(f"`{line}` failed: Operation not permitted")
        if line.startswith("ip -o -4 addr show"):
            return "3: br0    inet 10.213.0.1/24 brd ...\n4: eth0    inet 10.0.0.5/8\n"
        return ""


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeShell:
    shell = FakeShell()
    monkeypatch.setattr(netns, "sh", shell)
    monkeypatch.setattr(netns, "STATE", tmp_path / "state")
    monkeypatch.setattr(netns, "NETNS_DIR", tmp_path / "netns")
    return shell


def test_a_run_makes_its_network_and_removes_it(fake: FakeShell) -> None:
    topo = load(TWO_HOP)
    with KernelNetwork(processes(topo), directed_links(topo)) as net:
        tag = net.tag
        assert len(tag) == 6 and (netns.STATE / f"{tag}.lock").exists()
        assert net.host_ip == "10.213.1.1"  # 10.213.0.0/24 is in use on this host
        assert net.ips["aggregator"] == "10.213.1.2" and net.ips["owner3"] == "10.213.1.7"
        assert net.namespaces["server"] == f"mpsl-{tag}-1"
        made = list(fake.cmds)
        assert net.describe() == (
            f"netns: 6 namespaces mpsl-{tag}-0..5 on bridge mpsl{tag} (10.213.1.0/24, this "
            "host .1); rates by the kernel (htb + tbf on each sender's veth); latency in the "
            "process (this kernel has no netem)")
    assert f"ip link add mpsl{tag} type bridge" in made
    assert (f"ip link add mpsl{tag}h2 mtu 1500 type veth peer name eth0 mtu 1500 netns "
            f"mpsl-{tag}-2") in made
    assert f"ip -n mpsl-{tag}-2 addr add 10.213.1.4/24 dev eth0" in made
    assert sum(c.startswith(f"tc -n mpsl-{tag}-1 qdisc add") for c in made) == 1 + 4
    assert sum(c.startswith(f"tc -n mpsl-{tag}-0 qdisc add") for c in made) == 1 + 4
    assert sum(c.startswith(f"tc -n mpsl-{tag}-3 qdisc add") for c in made) == 1 + 2
    removed = fake.cmds[len(made):]
    assert removed == [c for i in range(6) for c in (
        f"ip link del mpsl{tag}h{i}", f"ip netns del mpsl-{tag}-{i}")] + [f"ip link del mpsl{tag}"]
    assert not (netns.STATE / f"{tag}.lock").exists()


def test_a_failed_command_removes_what_was_made(fake: FakeShell) -> None:
    fake.fail_on = "netns add mpsl-"
    topo = load(TWO_HOP)
    with (pytest.raises(NetnsError, match="Operation not permitted"),
          KernelNetwork(processes(topo), directed_links(topo))):
        pass
    assert fake.cmds[-1].startswith("ip link del mpsl")  # the bridge, made before the failure
    assert list(netns.STATE.glob("*.lock")) == []


def test_leftovers_of_dead_runs_go_and_live_runs_stay(fake: FakeShell) -> None:
    netns.STATE.mkdir(parents=True)
    netns.NETNS_DIR.mkdir()
    for name in ("mpsl-aaaaaa-0", "mpsl-aaaaaa-1", "mpsl-bbbbbb-0", "other", "mpsl-probe-1"):
        (netns.NETNS_DIR / name).touch()
    (netns.STATE / "aaaaaa.lock").touch()  # a run that died: nobody holds its lock
    with open(netns.STATE / "bbbbbb.lock", "w") as held:
        netns.fcntl.flock(held, netns.fcntl.LOCK_EX)
        removed = netns.clean_leftovers()
    assert removed == ["mpsl-aaaaaa-0", "mpsl-aaaaaa-1"]  # pid 1 lives: its probe stays
    assert not (netns.STATE / "aaaaaa.lock").exists()


@pytest.mark.skipif(not netns.probe().allowed, reason=str(netns.probe().reason))
def test_real_leftovers_are_removed() -> None:
    tag = "fe" + os.urandom(2).hex()
    netns.sh(["ip", "netns", "add", f"mpsl-{tag}-0"])
    netns.sh(["ip", "link", "add", f"mpsl{tag}", "type", "bridge"])
    try:
        removed = netns.clean_leftovers()
        assert f"mpsl-{tag}-0" in removed and f"mpsl{tag}" in removed
        assert not (netns.NETNS_DIR / f"mpsl-{tag}-0").exists()
        assert f"mpsl{tag}" not in netns.sh(["ip", "-o", "link", "show"])
    finally:
        netns.sh(["ip", "netns", "del", f"mpsl-{tag}-0"], check=False)
        netns.sh(["ip", "link", "del", f"mpsl{tag}"], check=False)


def test_replanning_is_refused_in_one_line_before_anything_starts(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from mpsl.cli import main

    def no_probe() -> None:
        raise AssertionError("probed the host")

    monkeypatch.setattr(netns, "probe", no_probe)
    code = main(["run", str(TWO_HOP), "--netns", "--quiet", "--out", str(tmp_path / "run"),
                 "--set", "replan={}"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1, err
    assert "field 'replan': no re-planning with --netns: the kernel shapes the links" in err
    assert not (tmp_path / "run").exists()  # no node, no namespace, no run folder
    topo = load(TWO_HOP, ["replan={}"])
    with pytest.raises(NetnsError, match="no re-planning with --netns"), \
            netns.netns_run(str(TWO_HOP), ["replan={}"], topo, netns.Capabilities(None, False)):
        pass
