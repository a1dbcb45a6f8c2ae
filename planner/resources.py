"""What the cost model and the ILP share: node profiles, links, message sizes, sample counts."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from mpsl import training
from mpsl.names import AGGREGATOR, link_name
from mpsl.topology import OwnerSpec, Topology
from mpsl.training import input_shape, smallest_micro_batch
from planner.profile import Profile

__all__ = ["AGGREGATOR", "AVERAGE_BYTES_PER_S", "BYTES_PER_MB", "HEADER_BYTES", "HOST",
           "LABEL_BYTES", "Hop", "Links", "PlanningError", "copies_on_compute",
           "emulated_nodes", "host_profile", "input_shape", "iterations_per_epoch",
           "max_micro_batches", "memory_caps", "message_bytes", "node_profiles",
           "optimizer_copies", "owner_samples", "state_factor"]

HEADER_BYTES = 300  # msgpack header of one message; a message without tensors is this size
LABEL_BYTES = 8  # int64 label per sample, riding with every ACT when labels are shared
BYTES_PER_MB = 1 << 20  # `memory_mb` in a topology counts MiB
# Parameter bytes per second of averaging model copies and loading the average back (the
# runtime's weighted average and load_state_dict, one thread): the cost of an AVG is
# copies x parameter bytes / this rate.
AVERAGE_BYTES_PER_S = 1.5e9
HOST = "*"  # key of a profiles mapping: this host's profile, scaled by each node's compute_scale
owner_samples = training.owner_samples  # the planner's modules use it from here


class PlanningError(ValueError):
    """The planner cannot do what was asked: one line saying why."""


@dataclass(frozen=True)
class Hop:
    """One directed link: its name `src->dst`, rate (None: infinitely fast) and latency."""

    name: str
    rate_mbps: float | None
    latency_s: float

    def tx_s(self, nbytes: float) -> float:
        return 0.0 if self.rate_mbps is None else nbytes * 8.0 / (self.rate_mbps * 1e6)


class Links:
    """Every directed link of a topology, made on first use: owner links take the owner's
    uplink (to any node) or downlink (from any node), compute-to-compute ones the chain's; a
    compute node's link to the aggregator is unshaped."""

    def __init__(self, topo: Topology, owners: Mapping[str, OwnerSpec] | None = None) -> None:
        self.topo = topo
        self.owners = dict(owners) if owners is not None else {o.name: o for o in topo.owners}
        self._hops: dict[tuple[str, str], Hop] = {}

    def __call__(self, src: str, dst: str) -> Hop:
        key = (src, dst)
        h = self._hops.get(key)
        if h is None:
            h = self._hops[key] = self._make(src, dst)
        return h

    def _make(self, src: str, dst: str) -> Hop:
        name = link_name(src, dst)
        if src in self.owners:
            o = self.owners[src]
            return Hop(name, o.uplink_mbps, o.latency_ms / 1e3)
        if dst in self.owners:
            o = self.owners[dst]
            return Hop(name, o.downlink_mbps, o.latency_ms / 1e3)
        if dst == AGGREGATOR:  # a compute node's link to the aggregator is not shaped
            return Hop(name, None, 0.0)
        lk = self.topo.links
        return Hop(name, lk.compute_mbps, lk.compute_latency_ms / 1e3)


def message_bytes(out_bytes: int, b: int, labels: bool = False) -> int:
    """Bytes of an ACT (with labels when shared) or GRAD of `b` samples at a cut."""
    return out_bytes * b + (LABEL_BYTES * b if labels else 0) + HEADER_BYTES


def optimizer_copies(topo: Topology) -> int:
    """Copies of the parameters an optimizer keeps: 0 (plain SGD), 1 (momentum), 2 (Adam)."""
    t = topo.training
    if t.optimizer == "adam":
        return 2
    return 1 if t.momentum > 0 else 0


def state_factor(topo: Topology) -> int:
    """Parameter-sized tensors per parameter: itself, its gradient, the optimizer state."""
    return 2 + optimizer_copies(topo)


def emulated_nodes(topo: Topology) -> set[str]:
    """Owners and compute nodes with compute_scale > 1: they sleep after every pass."""
    nodes = [(o.name, o.compute_scale) for o in topo.owners]
    nodes += [(c.name, c.compute_scale) for c in topo.compute_nodes]
    return {name for name, scale in nodes if scale > 1}


def copies_on_compute(topo: Topology, owners: int) -> int:
    """Model copies a compute node keeps: one per owner, a single shared one in SL."""
    return 1 if topo.mode == "sl" else owners


def memory_caps(topo: Topology) -> dict[str, float | None]:
    """Cap in bytes of every owner and compute node (None: uncapped)."""
    caps: dict[str, float | None] = {}
    for o in topo.owners:
        caps[o.name] = None if o.memory_mb is None else o.memory_mb * BYTES_PER_MB
    for c in topo.compute_nodes:
        caps[c.name] = None if c.memory_mb is None else c.memory_mb * BYTES_PER_MB
    return caps


def node_profiles(topo: Topology, profiles: Profile | Mapping[str, Profile] | None = None,
                  measure: bool = True) -> dict[str, Profile]:
    """The profile of every owner and compute node, unscaled where a node has its own.

    `profiles` is this host's profile (scaled by each node's compute_scale) or a mapping of
    node name to profile used as is, with `"*"` for this host. Missing ones come from the
    topology's files (a node's `profile:`, then `plan.profile` as this host's), then from a
    measurement on this host when `measure`. A compute node on a CUDA device without a
    profile of its own is measured on that device (once per device) when `measure`.
    """
    given: dict[str, Profile] = {}
    host: Profile | None = None
    if isinstance(profiles, Profile):
        host = profiles
    elif profiles is not None:
        given = dict(profiles)
        host = given.pop(HOST, None)
    files: dict[str, Profile] = {}

    def from_file(path: str) -> Profile:  # resolved by the topology loader: used as it is
        if path not in files:
            files[path] = Profile.from_csv(path)
        return files[path]

    scaled: dict[float, Profile] = {}
    on_device: dict[str, Profile] = {}  # measured on a compute node's GPU, by device
    out: dict[str, Profile] = {}
    nodes = [(o.name, o.compute_scale, o.profile) for o in topo.owners]
    nodes += [(c.name, c.compute_scale, c.profile) for c in topo.compute_nodes]
    devices = {c.name: c.device for c in topo.compute_nodes}
    for name, scale, path in nodes:
        if name in given:
            out[name] = given[name]
            continue
        if path is not None:
            out[name] = from_file(path)
            continue
        device = devices.get(name, "cpu")
        if device != "cpu" and measure:
            if device not in on_device:
                on_device[device] = host_profile(topo, device=device)
            out[name] = on_device[device].scaled(scale)
            continue
        if host is None:
            if topo.plan.profile is not None:
                host = from_file(topo.plan.profile)
            elif measure:
                host = host_profile(topo)
            else:
                raise PlanningError(f"{topo.source}: no profile for {name}: give one, or a "
                                    f"plan.profile file")
        if scale not in scaled:
            scaled[scale] = host.scaled(scale)
        out[name] = scaled[scale]
    sizes = {p.num_layers for p in out.values()}
    if len(sizes) > 1:
        raise PlanningError(f"{topo.source}: node profiles disagree on the number of layers "
                            f"({sorted(sizes)})")
    return out


def host_profile(topo: Topology, repeats: int = 3, device: str = "cpu") -> Profile:
    """Measure the topology's model on this host (on `device`) at micro-batch sizes 1, 2,
    4, ... and B; with a compute node of `batch_owners: auto`, its batched profile too
    (planner.batchprofile, on the CPU only)."""
    from planner.batchprofile import measure_topology
    from planner.measure import measure_profile, profile_sizes

    shape, classes = input_shape(topo)
    sizes = profile_sizes(topo.training.batch_size)
    prof = measure_profile(topo.model.name, shape, classes, topo.model.norm, sizes, repeats,
                           topo.training.optimizer, topo.training.momentum, device=device)
    # a compute node with batch_owners: auto: its part batched at 1..16 owners (on the CPU)
    batched = measure_topology(topo) if device == "cpu" else None
    return prof if batched is None else dataclasses.replace(prof, batched=batched)


def max_micro_batches(topo: Topology) -> int:
    """The largest N whose micro-batches (floor(B/N) samples) the model can train on."""
    B = topo.training.batch_size
    if topo.model.norm != "batch":
        return B
    return max(1, B // smallest_micro_batch(topo))


def iterations_per_epoch(topo: Topology, samples: int) -> int:
    """`mpsl.training.iterations_per_epoch` of the topology's training (for the planner)."""
    return training.iterations_per_epoch(topo.training, samples)
