"""Nodes built in this process on free loopback ports, and shut without waiting at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from mpsl.plan import Plan, make_plan
from mpsl.topology import Topology, parse
from mpsl.training import build_full_model
from nodes.inbox import Inbox
from nodes.node import Node
from nodes.ports import free_ports


def small_topology(owners: int = 2, **extra: Any) -> tuple[Topology, Plan]:
    """mlp on digits, PiPar over one compute node `node1` (cut 2, N = 2), unshaped links."""
    ports = free_ports(2 + owners, consecutive=True)
    doc: dict[str, Any] = {
        "name": "unit",
        "model": {"name": "mlp", "norm": "none"},
        "dataset": {"name": "digits", "partition": "iid", "seed": 0},
        "training": {"epochs": 1, "batch_size": 8, "lr": 0.1, "optimizer": "sgd", "seed": 0},
        "mode": "pipar",
        "labels": "shared",
        "plan": {"cuts": [2], "micro_batches": 2},
        "data_owners": {"count": owners, "base_port": ports[2]},
        "compute_nodes": [{"name": "node1", "address": f"tcp://127.0.0.1:{ports[0]}"}],
        "aggregator": {"address": f"tcp://127.0.0.1:{ports[1]}"},
        "runtime": {"timeout_s": 5},
    }
    doc.update(extra)
    topo = parse(doc, "unit.yaml")
    return topo, make_plan(topo, len(build_full_model(topo)))


@pytest.fixture
def shut() -> Iterator[Callable[[Any], Any]]:
    """Register a node or inbox to close when the test ends, dropping unsent messages."""
    made: list[Any] = []
    ctx = zmq.Context()

    def register(thing: Any) -> Any:
        made.append(thing)
        return thing

    register.ctx = ctx  # type: ignore[attr-defined]  # for test inboxes
    try:
        yield register
    finally:
        for thing in reversed(made):
            if isinstance(thing, Node):
                for box in thing.outboxes.values():
                    box.close(drain=False, timeout=1)
                thing.inbox.close()
                thing.security.stop()
                thing.ctx.term()
            elif isinstance(thing, Inbox):
                thing.close()
        ctx.destroy(linger=0)
