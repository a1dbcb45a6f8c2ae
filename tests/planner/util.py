"""Shared helpers of the planner tests: topologies from dicts and round-number profiles."""

from __future__ import annotations

import copy
from typing import Any

from mpsl.topology import Topology, parse
from planner.profile import LayerProfile, Profile
from planner.resources import HEADER_BYTES, LABEL_BYTES

BASE: dict[str, Any] = {
    "model": {"name": "mlp"},
    "dataset": {"name": "synthetic", "options": {"size": 64}},
    "training": {"batch_size": 4, "optimizer": "sgd"},
    "mode": "pipar",
    "labels": "shared",
    "plan": {"cuts": [1], "micro_batches": 2},
    "data_owners": {"count": 1},
    "compute_nodes": [{"name": "server", "address": "tcp://127.0.0.1:5590"}],
}


def topo(**changes: Any) -> Topology:
    """BASE with top-level sections replaced (merged into training, data_owners, dataset)."""
    d = copy.deepcopy(BASE)
    for key, value in changes.items():
        if key in ("training", "data_owners", "dataset"):
            d[key].update(value)
        else:
            d[key] = value
    return parse(d, "test.yaml")


def layer(fwd: float, bwd: float, *, opt: float = 0.0, out: int = 1000, params: int = 0,
          act: int = 0, fwd_a: float = 0.0, bwd_a: float = 0.0) -> LayerProfile:
    """A layer taking `fwd`/`bwd` seconds per sample (plus fixed `fwd_a`/`bwd_a`)."""
    return LayerProfile("l", fwd_a, fwd, bwd_a, bwd, opt, out, params, act)


def profile(*layers: LayerProfile) -> Profile:
    return Profile(tuple(layers), "test")


def rate_for(seconds: float, nbytes: int) -> float:
    """The Mbps at which `nbytes` take `seconds`."""
    return nbytes * 8 / (seconds * 1e6)


def act_bytes(out: int, b: int, labels: bool = True) -> int:
    return out * b + (LABEL_BYTES * b if labels else 0) + HEADER_BYTES


def grad_bytes(out: int, b: int) -> int:
    return out * b + HEADER_BYTES


ROUND_LEVEL = ("AVG", "CONTROL", "PARAMS", "GLOBAL")  # once per round, not per iteration


def per_iteration_busy(est: Any) -> dict[str, float]:
    """A simulated estimate's busy seconds per processor and link without the round-level work
    (averaging, the sync CONTROL, PARAMS and GLOBAL): what one iteration of every owner costs
    when `est` simulates one iteration each."""
    busy = dict(est.busy_s)
    for e in est.events:
        if any(word in e.action for word in ROUND_LEVEL):
            busy[e.resource_name] -= e.seconds
    return busy
