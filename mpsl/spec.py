"""The typed topology: what a validated topology file says, and queries over it."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mpsl.bandwidth import BandwidthSchedule, ReplanSpec
from mpsl.names import AGGREGATOR

MODES = ("pipar", "sfl", "fl", "sl", "mpsl")
LABELS = ("shared", "local")
OPTIMIZERS = ("sgd", "adam")
PARTITIONS = ("iid", "dirichlet")
NORMS = ("batch", "group", "none")
SCHEDULE_NAMES = ("gpipe", "1f1b")
SECURITY_MODES = ("none", "curve")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    norm: str = "batch"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    root: str | None = None
    partition: str = "iid"
    alpha: float = 0.5
    samples_per_owner: int | None = None
    test_samples: int | None = None
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)  # e.g. synthetic shape and size


@dataclass(frozen=True)
class TrainingSpec:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    aggregate_every: int | None = None  # iterations; None aggregates at the end of each epoch
    seed: int = 0
    max_iterations: int | None = None  # per owner and epoch, for short runs


@dataclass(frozen=True)
class PlanSpec:
    auto: bool = False
    cuts: tuple[int, ...] | None = None
    micro_batches: int = 1
    pinned_cuts: tuple[int, ...] = ()
    profile: str | None = None
    per_owner: bool = False  # the planner may give owner groups their own cuts (issue 19)


@dataclass(frozen=True)
class ScheduleSpec:
    """The order of an owner's passes: `gpipe` (all forwards, then the backwards) or `1f1b`
    (at most `max_in_flight` micro-batches between forward and backward; None: one per
    part)."""

    name: str = "gpipe"
    max_in_flight: int | None = None


@dataclass(frozen=True)
class OwnerSpec:
    index: int
    name: str
    address: str
    compute_scale: float = 1.0
    uplink_mbps: float | None = None
    downlink_mbps: float | None = None
    latency_ms: float = 0.0
    memory_mb: float | None = None
    profile: str | None = None
    micro_batches: int | None = None  # overrides plan.micro_batches for this owner
    cuts: tuple[int, ...] | None = None  # this owner's own cuts; () = every layer (mode: fl)
    bandwidth_schedule: BandwidthSchedule | None = None  # rates over the run (mpsl.bandwidth)


@dataclass(frozen=True)
class ComputeSpec:
    name: str
    address: str
    compute_scale: float = 1.0
    memory_mb: float | None = None
    profile: str | None = None
    device: str = "cpu"  # where its copies train: cpu, cuda or cuda:N
    batch_owners: str = "off"  # auto: owners' micro-batches ready together run in one call


@dataclass(frozen=True)
class LinkSpec:
    compute_mbps: float | None = None  # compute-to-compute rate; None is unshaped
    compute_latency_ms: float = 0.0


@dataclass(frozen=True)
class RuntimeSpec:
    torch_threads: int = 1
    timeout_s: float = 120.0
    monitor: str | None = None


@dataclass(frozen=True)
class SecuritySpec:
    """`none`: plain links; `curve`: CurveZMQ on every link, key files in `keys` (from
    `mpsl keys`: NAME.key and NAME.key_secret per node)."""

    mode: str = "none"
    keys: str | None = None


@dataclass(frozen=True)
class FailureSpec:
    """Liveness: every node tells the aggregator it is alive every `heartbeat_s`; a data owner
    silent for `timeout_s` is lost (the aggregation goes on over the owners present, and the
    owner may rejoin at a later aggregation); `restart`: `mpsl run` restarts an owner whose
    process died. Stragglers: with `min_owners`, an aggregation closes once that many owners
    sent their update and `deadline_s` passed since the first did; the late owners' updates of
    that round are dropped, and they go on from the new global model. `checkpoint`: each
    aggregation is committed once every compute node and the aggregator saved a checkpoint of
    it, so that a compute node or the aggregator restarted with the same name resumes from the
    last commit, every other node rolling back with it (`restart` then restarts those too)."""

    heartbeat_s: float = 1.0
    timeout_s: float = 20.0
    restart: bool = False
    checkpoint: bool = False
    min_owners: int | None = None
    deadline_s: float | None = None


@dataclass(frozen=True)
class PrivacySpec:
    """Differential privacy (mpsl.privacy); every field off by default. Classic DP: each data
    owner clips its update (its parts' parameter delta since the last global model) to L2 norm
    `clip_norm` and adds Gaussian noise of std `noise_multiplier` * `clip_norm`; the accountant
    reports the (epsilon, `delta`) spent. Noise layer: Gaussian noise of std `pixel_sigma` on
    the input of the first layer and of std `cut_sigma` on the activations a data owner sends
    at a cut, in training. `noise_seed`: None draws each node's noise seed in secret; an
    integer makes the noise reproducible, and known to whoever knows it."""

    clip_norm: float | None = None
    noise_multiplier: float = 0.0
    delta: float = 1e-5
    pixel_sigma: float = 0.0
    cut_sigma: float = 0.0
    noise_seed: int | None = None

    @property
    def updates(self) -> bool:
        """Whether the owners clip (and maybe noise) their updates."""
        return self.clip_norm is not None

    @property
    def layer(self) -> bool:
        """Whether the noise layer is on (at the input or at the cuts)."""
        return self.pixel_sigma > 0 or self.cut_sigma > 0


@dataclass(frozen=True)
class Topology:
    source: str
    name: str
    model: ModelSpec
    dataset: DatasetSpec
    training: TrainingSpec
    mode: str
    labels: str
    plan: PlanSpec
    owners: tuple[OwnerSpec, ...]
    compute_nodes: tuple[ComputeSpec, ...]
    links: LinkSpec
    aggregator: str
    runtime: RuntimeSpec
    schedule: ScheduleSpec = ScheduleSpec()
    security: SecuritySpec = SecuritySpec()
    failure: FailureSpec = FailureSpec()
    privacy: PrivacySpec = PrivacySpec()
    overrides: tuple[str, ...] = ()  # the `--set` assignments it was loaded with
    owners_per_process: int | None = None  # data_owners.per_process; None: nodes.pool decides
    replan: ReplanSpec = ReplanSpec()  # online re-planning (mpsl.bandwidth); off by default

    @property
    def chain(self) -> tuple[str, ...]:
        """Names of the compute nodes in chain order (empty for FL)."""
        return () if self.mode == "fl" else tuple(c.name for c in self.compute_nodes)

    def owner(self, name_or_index: str | int) -> OwnerSpec:
        found = self._owners_by_key.get(name_or_index)
        if found is None:
            raise KeyError(f"{self.source}: no data owner {name_or_index!r}")
        return found

    @functools.cached_property
    def _owners_by_key(self) -> dict[str | int, OwnerSpec]:
        """Each owner by name and by index (a fleet's checks look up every owner)."""
        out: dict[str | int, OwnerSpec] = {}
        for o in self.owners:
            out.setdefault(o.name, o)
            out.setdefault(o.index, o)
        return out

    def compute(self, name: str) -> ComputeSpec:
        for c in self.compute_nodes:
            if c.name == name:
                return c
        raise KeyError(f"{self.source}: no compute node {name!r}")

    def node_names(self) -> list[str]:
        return [o.name for o in self.owners] + list(self.chain) + [AGGREGATOR]

    def address_of(self, name: str) -> str:
        if name == AGGREGATOR:
            return self.aggregator
        if name in self.chain:
            return self.compute(name).address
        return self.owner(name).address



def expected_cut_count(topo: Topology) -> int:
    """Cuts a plan of this topology has: one per compute node, one more when labels are local."""
    if topo.mode == "fl":
        return 0
    return len(topo.chain) + (1 if topo.labels == "local" else 0)
