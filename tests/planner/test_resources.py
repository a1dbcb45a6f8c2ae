"""Node profiles from files and scales, links, sample counts."""

from __future__ import annotations

import yaml

from mpsl.topology import load
from planner import Profile, node_profiles
from planner.resources import Links, owner_samples

from .util import BASE, topo


def test_node_profile_files_and_scales(tmp_path):
    host = Profile.synthetic(3, fwd=(0, 1.0))
    Profile.synthetic(3, fwd=(0, 5.0)).to_csv(tmp_path / "pi.csv")
    doc = {**BASE, "data_owners": {"count": 2, "compute_scale": 3.0,
                                   "overrides": [{"index": 1, "profile": "pi.csv"}]},
           "compute_nodes": [{"name": "server", "address": "tcp://127.0.0.1:5590",
                              "compute_scale": 0.5}]}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(doc))
    t = load(tmp_path / "t.yaml")
    profs = node_profiles(t, host)
    assert profs["owner0"].fwd(0, 1) == 3.0  # this host's, scaled
    assert profs["owner1"].fwd(0, 1) == 5.0  # its own file (relative to the topology), as is
    assert profs["server"].fwd(0, 1) == 0.5
    given = node_profiles(t, {"*": host, "server": Profile.synthetic(3, fwd=(0, 7.0))})
    assert given["server"].fwd(0, 1) == 7.0 and given["owner0"].fwd(0, 1) == 3.0


def test_links_and_samples():
    t = topo(data_owners={"count": 3, "uplink_mbps": 5, "downlink_mbps": 50, "latency_ms": 20},
             links={"compute_mbps": 100, "compute_latency_ms": 1})
    links = Links(t)
    assert links("owner2", "server").rate_mbps == 5 and links("server", "owner2").rate_mbps == 50
    assert links("owner0", "aggregator").latency_s == 0.02
    assert links("server", "node9").rate_mbps == 100
    assert links("owner0", "server").tx_s(1250) == 0.002
    assert owner_samples(t) == [22, 21, 21]  # synthetic size 64, iid
    cifar = owner_samples(topo(dataset={"name": "cifar10", "options": {}},
                               data_owners={"count": 7}))
    assert sum(cifar) == 50000 and max(cifar) - min(cifar) <= 1
