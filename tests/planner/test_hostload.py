"""The load an emulated fleet puts on one host: its passes' CPU at this host's speed."""

from __future__ import annotations

import dataclasses

import pytest

from mpsl.plan import make_plan
from planner.cost import simulate
from planner.hostload import HostLoad, at_host_speed, host_load

from .test_cost import pipar_one_owner
from .util import layer, profile, topo


def fig2(**owners):
    """PiPar's Fig. 2 (owner 9.5 s, server 6.5 s of passes and STEPs per iteration), with
    `owners` set on data_owners."""
    t, prof = pipar_one_owner()
    t = dataclasses.replace(t, owners=tuple(dataclasses.replace(o, **owners)
                                            for o in t.owners))
    return t, make_plan(t, 2), prof


def load_of(t, plan, prof, cores=1, profiles=None):
    """The estimate (with `profiles`, else `prof`) and the host load (`prof`: this host's)."""
    est = simulate(t, plan, profiles or prof, iterations=1)
    return est, host_load(t, plan, prof, est.epoch_s, iterations=1, cores=cores)


def test_the_passes_of_every_cpu_node_and_the_aggregator_count_and_links_do_not():
    t, plan, prof = fig2()
    est, load = load_of(t, plan, prof)
    assert load.cpu_s == pytest.approx(9.5 + 6.5 + est.busy_s.get("aggregator", 0.0))
    assert est.busy_s["owner0->server"] > 0  # a link, busy and not counted


def test_an_emulated_device_costs_the_host_its_pass_and_not_its_sleep():
    t, plan, prof = fig2()
    _, at_one = load_of(t, plan, prof)
    slow, plan4, _ = fig2(compute_scale=4.0)
    est, load = load_of(slow, plan4, prof)
    assert est.busy_s["owner0"] == pytest.approx(4 * 9.5)  # the device the topology describes
    assert load.cpu_s == pytest.approx(at_one.cpu_s)  # the host runs the pass at its speed
    assert load.estimate_s == est.epoch_s > at_one.estimate_s


def test_a_device_with_its_own_profile_runs_here_at_this_hosts_speed(tmp_path):
    t, plan, prof = fig2()
    _, at_host = load_of(t, plan, prof)
    slower = profile(layer(3, 6, opt=0.5, out=1000, act=10), layer(1, 1, opt=0.5, out=10, act=10))
    path = tmp_path / "device.csv"
    slower.to_csv(path)
    own, plan_own, _ = fig2(profile=str(path))
    est, load = load_of(own, plan_own, prof, profiles={"*": prof, "owner0": slower})
    assert est.busy_s["owner0"] > 9.5
    assert load.cpu_s == pytest.approx(at_host.cpu_s)
    assert at_host_speed(own).owners[0].profile is None


def test_a_compute_node_on_a_gpu_is_not_counted():
    t, plan, prof = fig2()
    gpu = dataclasses.replace(t, compute_nodes=tuple(
        dataclasses.replace(c, device="cuda") for c in t.compute_nodes))
    est, load = load_of(gpu, plan, prof)
    assert load.cpu_s == pytest.approx(9.5 + est.busy_s.get("aggregator", 0.0))


def test_floor_share_and_host_bound():
    load = HostLoad(cpu_s=6.0, cores=2, estimate_s=4.0)
    assert (load.floor_s, load.share, load.host_bound) == (3.0, 0.75, False)
    assert HostLoad(8.0, 2, 4.0).host_bound and HostLoad(8.0, 2, 4.0).share == 1.0
    assert "at least 3 s (75% of the 4 s estimated)" in load.describe()
    assert load.to_json()["floor_s"] == 3.0


def test_on_one_core_unshaped_links_make_any_fleet_host_bound():
    """With instant links some processor is busy at every moment of the epoch, so the epoch
    is at most the sum of the processors' busy time: one core cannot run it faster."""
    t = topo(data_owners={"count": 3}, training={"batch_size": 4})
    prof = profile(layer(0.1, 0.2, out=100), layer(0.3, 0.1, out=100), layer(0.2, 0.2, out=10))
    plan = make_plan(t, 3)
    est = simulate(t, plan, prof)
    assert host_load(t, plan, prof, est.epoch_s, cores=1).host_bound
    many = host_load(t, plan, prof, est.epoch_s, cores=64)
    assert not many.host_bound and many.floor_s == pytest.approx(many.cpu_s / 64)


def test_host_cores_where_the_os_cannot_say_which_are_this_process(monkeypatch):
    import os

    from planner.hostload import host_cores

    assert host_cores() >= 1
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 12)
    assert host_cores() == 12
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert host_cores() == 1
