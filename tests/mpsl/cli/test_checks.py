"""Warnings and errors before any node starts: memory estimates over memory_mb (folded when
many owners exceed it), the host's load, data, addresses, keys and devices."""

from __future__ import annotations

import pytest

from mpsl.cli.checks import (
    MIB,
    check_bindable,
    check_devices,
    check_last_batches,
    check_node,
    data_warnings,
    host_load_line,
    memory_caps,
    over_caps,
    security_line,
)
from mpsl.topology import parse
from nodes.keys import KeyFileError, write_keys
from tests.mpsl.cli.conftest import TOPOLOGY


def topo(**changes):
    return parse({**TOPOLOGY, **changes}, "t.yaml")


def test_over_caps_names_node_estimate_and_cap():
    t = topo(data_owners={"count": 2, "memory_mb": 1},
             compute_nodes=[{"name": "server", "address": "tcp://127.0.0.1:5590",
                             "memory_mb": 4}])
    assert memory_caps(t) == {"owner0": 1, "owner1": 1, "server": 4}
    got = over_caps(t, {"owner0": int(1.5 * MIB), "owner1": MIB, "server": 5 * MIB,
                        "aggregator": 10 * MIB}, "plan #2 (ilp#2)")
    assert got == [
        "owner0: plan #2 (ilp#2) needs about 1.5 MB (parameters, optimizer state, activations "
        "in flight, message buffers), more than its memory_mb 1",
        "server: plan #2 (ilp#2) needs about 5 MB (parameters, optimizer state, activations "
        "in flight, message buffers), more than its memory_mb 4"]


def test_over_caps_folds_many_owners():
    t = topo(data_owners={"count": 5, "memory_mb": 1})
    got = over_caps(t, {f"owner{k}": (2 + k) * MIB for k in range(5)})
    assert got == ["5 owners (owner4 the most): the plan needs about 6 MB (parameters, "
                   "optimizer state, activations in flight, message buffers), more than its "
                   "memory_mb 1"]


def test_no_data_warning_when_the_data_suffices():
    assert data_warnings(topo(), [128, 128]) == []
    assert data_warnings(topo(), [128, 15]) == [
        "training.batch_size (16) is larger than the data of owner1 (15 samples): every epoch "
        "there is one partial batch"]


def test_an_epoch_ending_below_the_smallest_batch_is_one_line():
    """vgg19 with BatchNorm on 8x8 inputs trains on 2 samples or more: an owner of 33
    samples at B = 16 ends its epoch on one, refused before any node starts."""
    bn = topo(model={"name": "vgg19", "norm": "batch"},
              dataset={"name": "synthetic", "options": {"shape": [3, 8, 8], "size": 256}})
    check_last_batches(bn, [32, 34])  # batches of 16, 16 and 2: each trains
    with pytest.raises(ValueError, match=r"^t.yaml: owner1's epoch ends in a batch of 1 "
                       r"sample\(s\) \(33 samples, training.batch_size 16\), and vgg19 with "
                       r"norm batch on 8x8 inputs trains on 2 or more: change"):
        check_last_batches(bn, [32, 33])
    check_last_batches(topo(), [32, 33])  # the mlp has no norm: a batch of one trains
    capped = parse({**TOPOLOGY, "model": {"name": "vgg19", "norm": "batch"},
                    "dataset": {"name": "synthetic", "options": {"shape": [3, 8, 8]}},
                    "training": {"batch_size": 16, "max_iterations": 2}}, "t.yaml")
    check_last_batches(capped, [32, 33])  # its last batch is never reached


def test_security_line_says_security_is_off_on_loopback():
    assert security_line(topo(), insecure=False).startswith("security off: links are neither")


@pytest.mark.parametrize("host", ["10.0.0.7", "example.org"])
def test_addresses_off_this_machine_need_curve_or_insecure(host):
    t = topo(compute_nodes=[{"name": "server", "address": f"tcp://{host}:5590"}])
    with pytest.raises(ValueError, match=rf"^t.yaml: server listens at tcp://{host}:5590, off "
                                         r"this machine, and security is off: .*--insecure$"):
        security_line(t, insecure=False)
    assert security_line(t, insecure=True).startswith("security off")


def test_curve_needs_its_key_files_before_any_start(tmp_path):
    t = topo(security={"mode": "curve", "keys": str(tmp_path)})
    with pytest.raises(KeyFileError, match="owner0.key: CURVE key file missing"):
        security_line(t, insecure=False)
    write_keys(tmp_path, t.node_names())
    assert security_line(t, insecure=False) == f"security: CurveZMQ on every link, keys in " \
                                               f"{tmp_path}"


@pytest.mark.parametrize("role, name, listed", [
    ("data-owner", "owner7", "owner0, owner1"), ("compute", "owner0", "server"),
    ("aggregator", "server", "aggregator")])
def test_a_node_name_the_role_does_not_have_is_one_line(role, name, listed):
    with pytest.raises(ValueError, match=rf"^t.yaml: no {role} node named '{name}' \(its "
                                         rf"{role} nodes: {listed}\)$"):
        check_node(topo(), role, name)
    check_node(topo(), "data-owner", "owner1")


def test_an_address_in_use_or_not_here_is_one_line_before_any_start():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        t = topo(compute_nodes=[{"name": "server", "address": f"tcp://127.0.0.1:{port}"}])
        with pytest.raises(OSError, match=rf"^t.yaml: server cannot listen at "
                                          rf"tcp://127.0.0.1:{port}: Address already in use$"):
            check_bindable(t, t.node_names())
    check_bindable(t, t.node_names())  # free again
    t = topo(compute_nodes=[{"name": "server", "address": "tcp://192.0.2.1:5590"}])
    with pytest.raises(OSError, match=r"^t.yaml: server cannot listen at tcp://192.0.2.1:5590: "
                                      r"Cannot assign requested address$"):
        check_bindable(t, ["server"])


def test_a_cuda_device_this_machine_lacks_is_refused_in_one_line(monkeypatch):
    import torch

    node = {"name": "server", "address": "tcp://127.0.0.1:5590", "device": "cuda:1"}
    t = topo(compute_nodes=[node])
    check_devices(t, ["owner0"])  # not a node of this machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^t.yaml: compute_nodes\[0\].device: cuda:1 for "
                       r"server, but this machine has no CUDA device\(s\)$"):
        check_devices(t, ["server"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="has 1 CUDA device"):
        check_devices(t, ["server"])
    check_devices(topo(compute_nodes=[{**node, "device": "cuda"}]), ["server"])
    check_devices(topo(compute_nodes=[{**node, "device": "cpu"}]), ["server"])


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CUDA", "cuda:"])
def test_a_device_that_is_not_cpu_or_cuda_is_a_topology_error(device):
    from mpsl.topology import TopologyError

    with pytest.raises(TopologyError, match=r"compute_nodes\[0\].device"):
        topo(compute_nodes=[{"name": "server", "address": "tcp://127.0.0.1:5590",
                             "device": device}])


def test_host_load_line_needs_every_gpu_node_profiled(tmp_path):
    import dataclasses

    from mpsl.plan import make_plan
    from planner.profile import Profile

    t = topo()
    plan, host = make_plan(t, 4), Profile.synthetic(4)
    text, warn = host_load_line(t, plan, host)
    assert text.startswith("this host") and isinstance(warn, bool)
    on_gpu = dataclasses.replace(t, compute_nodes=tuple(
        dataclasses.replace(c, device="cuda") for c in t.compute_nodes))
    assert host_load_line(on_gpu, plan, host) is None  # its GPU's profile is not at hand
    host.to_csv(tmp_path / "gpu.csv")
    profiled = dataclasses.replace(on_gpu, compute_nodes=tuple(
        dataclasses.replace(c, profile=str(tmp_path / "gpu.csv")) for c in on_gpu.compute_nodes))
    assert host_load_line(profiled, plan, host) is not None
