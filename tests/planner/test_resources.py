"""Node profiles from files and scales, links, sample counts."""

from __future__ import annotations

import pytest
import yaml

from mpsl.topology import load
from mpsl.training import dataset_train_size
from planner import Profile, ProfileError, node_profiles
from planner.resources import Links, iterations_per_epoch, owner_samples

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
    # a compute node's link to the aggregator is unshaped, an owner's is its uplink
    assert (links("server", "aggregator").rate_mbps, links("server", "aggregator").latency_s) \
        == (None, 0.0)
    assert links("server", "aggregator").name == "server->aggregator"
    assert links("owner1", "aggregator").rate_mbps == 5
    assert owner_samples(t) == [22, 21, 21]  # synthetic size 64, iid


def test_samples_are_the_data_sets_real_size():
    """scikit-learn's digits (a training split of 1438, from no table of sizes): split iid
    over 7 owners, capped by samples_per_owner; iterations per epoch from the batch size."""
    digits = topo(dataset={"name": "digits", "options": {}}, data_owners={"count": 7})
    counts = owner_samples(digits)
    assert sum(counts) == dataset_train_size(digits.dataset) == 1438
    assert max(counts) - min(counts) <= 1
    capped = topo(dataset={"name": "digits", "options": {}, "samples_per_owner": 100},
                  data_owners={"count": 7})
    assert owner_samples(capped) == [100] * 7
    assert iterations_per_epoch(digits, 257) == 65  # ceil(257 / 4), the last batch partial
    short = topo(dataset={"name": "digits", "options": {}}, training={"max_iterations": 3})
    assert iterations_per_epoch(short, 257) == 3


def test_missing_plan_profile_is_named_once(tmp_path):
    """`plan.profile: prof.csv` of topologies/x.yaml is topologies/prof.csv (resolved by the
    loader, not joined again)."""
    folder = tmp_path / "topologies"
    folder.mkdir()
    doc = {**BASE, "plan": {**BASE["plan"], "profile": "prof.csv"}}
    (folder / "x.yaml").write_text(yaml.safe_dump(doc))
    t = load(folder / "x.yaml")
    with pytest.raises(ProfileError) as err:
        node_profiles(t, measure=False)
    assert str(err.value).startswith(f"{folder / 'prof.csv'}: cannot read the profile")
    assert "topologies/topologies" not in str(err.value)


def test_a_gpu_compute_node_is_measured_on_its_device(monkeypatch):
    """A compute node on cuda:N without a profile of its own is measured on that device, once
    per device, then scaled by its compute_scale; the other nodes take this host's."""
    import planner.resources as resources

    measured: list[str] = []

    def host_profile(t, device="cpu"):
        measured.append(device)
        return Profile.synthetic(3, fwd=(0, 2.0 if device != "cpu" else 9.0))

    monkeypatch.setattr(resources, "host_profile", host_profile)
    gpu = {"device": "cuda:1"}
    t = topo(compute_nodes=[{"name": "a", "address": "tcp://127.0.0.1:5590", **gpu},
                            {"name": "b", "address": "tcp://127.0.0.1:5591", **gpu,
                             "compute_scale": 2.0}],
             mode="mpsl", labels="local", plan={"cuts": [1, 2, 3], "micro_batches": 1})
    profs = node_profiles(t, Profile.synthetic(3, fwd=(0, 1.0)))
    assert measured == ["cuda:1"]
    assert [profs[n].fwd(0, 1) for n in ("a", "b", "owner0")] == [2.0, 4.0, 1.0]
    cpu_only = topo()  # no GPU node: nothing measured
    assert node_profiles(cpu_only, Profile.synthetic(3))["server"] and measured == ["cuda:1"]
