"""Topologies on free loopback ports, and a local run that always stops its processes."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from mpsl.data import load_dataset
from mpsl.plan import make_plan
from mpsl.topology import Topology, load
from mpsl.training import num_layers, owner_indices
from nodes.launch import LocalCluster
from nodes.ports import free_ports
from nodes.wire import Message

MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"


def owner_data(topo: Topology, owner: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training samples and labels of one owner, as its node holds them."""
    ds = topo.dataset
    x, y = load_dataset(ds.name, ds.root, "train", **ds.options)
    idx = owner_indices(topo)[owner]
    return x[idx], y[idx]


def _merge(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def topology_doc(owners: int = 1, compute: int = 1, **extra: Any) -> dict:
    """A small valid document: mlp on digits, unshaped links, every port free."""
    ports = free_ports(compute + 1 + owners, consecutive=True)
    doc = {
        "name": "test",
        "model": {"name": "mlp", "norm": "none"},
        "dataset": {"name": "digits", "partition": "iid", "seed": 0},
        "training": {"epochs": 1, "batch_size": 30, "lr": 0.1, "optimizer": "sgd",
                     "momentum": 0.9, "seed": 0},
        "mode": "pipar",
        "labels": "shared",
        "plan": {"cuts": [2], "micro_batches": 4},
        "data_owners": {"count": owners, "base_port": ports[compute + 1]},
        "compute_nodes": [{"name": f"node{i + 1}", "address": f"tcp://127.0.0.1:{ports[i]}"}
                          for i in range(compute)],
        "aggregator": {"address": f"tcp://127.0.0.1:{ports[compute]}"},
        "runtime": {"timeout_s": 60},
    }
    return _merge(doc, extra)


@pytest.fixture
def run_topology(tmp_path: Path) -> Callable[..., tuple[dict, Path]]:
    """Write a topology, run it locally, return (results, run folder); `on_message` sees
    every monitor message."""

    def run(doc: dict, method: str = "forkserver", overrides: tuple[str, ...] = (),
            on_message: Callable[[Message], None] | None = None):
        path = tmp_path / f"{doc['name']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        topo = load(path, overrides)
        plan = make_plan(topo, num_layers(topo))
        out = tmp_path / "run"
        cluster = LocalCluster(str(path), overrides, topo, plan, out, method=method)
        results = cluster.run(on_message)  # stops every process, even on failure
        return results, out

    return run


def run_killing(tmp_path: Path, doc: dict, victim: str | None, after_losses: int,
                of_victim: bool = False) -> dict:
    """Run `doc` locally; SIGKILL `victim` (None: no kill) once the monitor has seen
    `after_losses` iteration losses (with `of_victim`, of that owner's only)."""
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    topo = load(path)
    cluster = LocalCluster(str(path), (), topo, make_plan(topo, num_layers(topo)),
                           tmp_path / "run")
    owner = topo.owner(victim).index if of_victim and victim is not None else None
    seen = {"losses": 0, "killed": victim is None}

    def on_message(msg: Message) -> None:
        if msg.meta.get("type") == "loss" and owner in (None, msg.meta.get("owner")):
            seen["losses"] += 1
        if seen["losses"] >= after_losses and not seen["killed"]:
            proc = next(p for p in cluster.procs if p.name == victim)
            os.kill(proc.handle.pid, signal.SIGKILL)
            seen["killed"] = True

    results = cluster.run(on_message)
    assert seen["killed"], f"{victim} was never killed"
    return results
