"""Topology files: the YAML schema, its validation into typed objects, and `--set` overrides."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from mpsl.schema import MISSING, FieldReader, TopologyError, int_list, relative_to

MODES = ("pipar", "sfl", "fl", "sl", "mpsl")
LABELS = ("shared", "local")
OPTIMIZERS = ("sgd", "adam")
PARTITIONS = ("iid", "dirichlet")
NORMS = ("batch", "group", "none")
OWNER = "owner"  # the placement name of a part that every data owner runs


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


@dataclass(frozen=True)
class ComputeSpec:
    name: str
    address: str
    compute_scale: float = 1.0
    memory_mb: float | None = None
    profile: str | None = None


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

    @property
    def chain(self) -> tuple[str, ...]:
        """Names of the compute nodes in chain order (empty for FL)."""
        return () if self.mode == "fl" else tuple(c.name for c in self.compute_nodes)

    def owner(self, name_or_index: str | int) -> OwnerSpec:
        for o in self.owners:
            if name_or_index in (o.name, o.index):
                return o
        raise KeyError(f"{self.source}: no data owner {name_or_index!r}")

    def compute(self, name: str) -> ComputeSpec:
        for c in self.compute_nodes:
            if c.name == name:
                return c
        raise KeyError(f"{self.source}: no compute node {name!r}")

    def node_names(self) -> list[str]:
        return [o.name for o in self.owners] + list(self.chain) + ["aggregator"]

    def address_of(self, name: str) -> str:
        if name == "aggregator":
            return self.aggregator
        if name in self.chain:
            return self.compute(name).address
        return self.owner(name).address


def parse(data: Any, source: str = "<topology>") -> Topology:
    """Validate a parsed YAML document into a Topology; raise TopologyError on the first fault."""
    top = FieldReader(source, data, "")
    name = top.text("name", Path(source).stem or "topology")

    m = top.sub("model", required=True)
    model = ModelSpec(name=m.text("name"), norm=m.text("norm", "batch", NORMS))
    m.finish()

    d = top.sub("dataset", required=True)
    options = d.raw("options", {})
    if not isinstance(options, Mapping):
        raise d.fail("options", options, "a mapping")
    dataset = DatasetSpec(
        name=d.text("name"),
        root=d.text("root", None),
        partition=d.text("partition", "iid", PARTITIONS),
        alpha=d.number("alpha", 0.5, positive=True),
        samples_per_owner=d.integer("samples_per_owner", None, minimum=1),
        test_samples=d.integer("test_samples", None, minimum=1),
        seed=d.integer("seed", 0),
        options=dict(options),
    )
    d.finish()
    dataset = replace(dataset, root=relative_to(source, dataset.root))

    t = top.sub("training")
    training = TrainingSpec(
        epochs=t.integer("epochs", 1, minimum=1),
        batch_size=t.integer("batch_size", 32, minimum=1),
        lr=t.number("lr", 0.01, positive=True),
        optimizer=t.text("optimizer", "sgd", OPTIMIZERS),
        momentum=t.number("momentum", 0.0),
        weight_decay=t.number("weight_decay", 0.0),
        aggregate_every=t.integer("aggregate_every", None, minimum=1),
        seed=t.integer("seed", 0),
        max_iterations=t.integer("max_iterations", None, minimum=1),
    )
    t.finish()

    mode = top.text("mode", "pipar", MODES)
    labels = top.text("labels", "local" if mode == "mpsl" else "shared", LABELS)

    plan = _parse_plan(top, training)

    owners = _parse_owners(top.sub("data_owners", required=True), training)

    compute_nodes = _parse_compute(top, mode)

    lk = top.sub("links")
    links = LinkSpec(
        compute_mbps=lk.number("compute_mbps", None, positive=True),
        compute_latency_ms=lk.number("compute_latency_ms", 0.0),
    )
    lk.finish()

    ag = top.sub("aggregator")
    aggregator = ag.address("address", "tcp://127.0.0.1:5550")
    ag.finish()

    rt = top.sub("runtime")
    runtime = RuntimeSpec(
        torch_threads=rt.integer("torch_threads", 1, minimum=1),
        timeout_s=rt.number("timeout_s", 120.0, positive=True),
        monitor=None if rt.raw("monitor", None) is None else rt.address("monitor"),
    )
    rt.finish()
    top.finish()

    topo = Topology(
        source=source,
        name=name,
        model=model,
        dataset=dataset,
        training=training,
        mode=mode,
        labels=labels,
        plan=plan,
        owners=owners,
        compute_nodes=compute_nodes,
        links=links,
        aggregator=aggregator,
        runtime=runtime,
    )
    _check_consistency(topo)
    return topo


def _parse_plan(top: FieldReader, training: TrainingSpec) -> PlanSpec:
    raw = top.raw("plan", "auto")
    if raw == "auto":
        return PlanSpec(auto=True)
    p = FieldReader(top.source, raw, "plan")
    auto = p.flag("auto", False)
    cuts_raw = p.raw("cuts", None)
    cuts = None if cuts_raw is None else int_list(p, "cuts", cuts_raw)
    pinned = int_list(p, "pinned_cuts", p.raw("pinned_cuts", []))
    micro = p.integer("micro_batches", 1, minimum=1)
    if micro > training.batch_size:
        raise p.fail("micro_batches", micro, f"at most training.batch_size ({training.batch_size})")
    profile = p.text("profile", None)
    p.finish()
    if not auto and cuts is None:
        raise p.fail("cuts", MISSING, "a list of cuts, or auto: true")
    if auto and cuts is not None:
        raise p.fail("cuts", cuts_raw, "no cuts when auto is true (use pinned_cuts)")
    profile = relative_to(top.source, profile)
    return PlanSpec(auto=auto, cuts=cuts, micro_batches=micro, pinned_cuts=pinned, profile=profile)


def _parse_owners(r: FieldReader, training: TrainingSpec) -> tuple[OwnerSpec, ...]:
    count = r.integer("count", minimum=1)
    host = r.text("host", "127.0.0.1")
    base_port = r.integer("base_port", 5600, minimum=1)
    if base_port + count - 1 > 65535:
        raise r.fail("base_port", base_port, f"a port leaving room for {count} owners")
    shared = dict(
        compute_scale=r.number("compute_scale", 1.0, positive=True),
        uplink_mbps=r.number("uplink_mbps", None, positive=True),
        downlink_mbps=r.number("downlink_mbps", None, positive=True),
        latency_ms=r.number("latency_ms", 0.0),
        memory_mb=r.number("memory_mb", None, positive=True),
        profile=relative_to(r.source, r.text("profile", None)),
    )
    overrides_raw = r.raw("overrides", [])
    if not isinstance(overrides_raw, list):
        raise r.fail("overrides", overrides_raw, "a list of {index: i, ...} mappings")
    r.finish()
    per_owner: dict[int, dict[str, Any]] = {}
    for i, item in enumerate(overrides_raw):
        o = FieldReader(r.source, item, f"{r.path}.overrides[{i}]")
        index = o.integer("index", minimum=0)
        if index >= count:
            raise o.fail("index", index, f"an owner index below count ({count})")
        if index in per_owner:
            raise o.fail("index", index, "each owner overridden once")
        values: dict[str, Any] = {}
        for key in ("compute_scale", "uplink_mbps", "downlink_mbps"):
            if key in item:
                values[key] = o.number(key, positive=True)
        for key in ("latency_ms",):
            if key in item:
                values[key] = o.number(key)
        if "memory_mb" in item:
            values["memory_mb"] = o.number("memory_mb", positive=True)
        if "profile" in item:
            values["profile"] = relative_to(r.source, o.text("profile"))
        if "address" in item:
            values["address"] = o.address("address")
        if "micro_batches" in item:
            n = o.integer("micro_batches", minimum=1)
            if n > training.batch_size:
                wanted = f"at most training.batch_size ({training.batch_size})"
                raise o.fail("micro_batches", n, wanted)
            values["micro_batches"] = n
        o.finish()
        per_owner[index] = values
    owners = []
    for i in range(count):
        fields = dict(shared, address=f"tcp://{host}:{base_port + i}")
        fields.update(per_owner.get(i, {}))
        owners.append(OwnerSpec(index=i, name=f"owner{i}", **fields))
    return tuple(owners)


def _parse_compute(top: FieldReader, mode: str) -> tuple[ComputeSpec, ...]:
    raw = top.raw("compute_nodes", [])
    if not isinstance(raw, list):
        raise top.fail("compute_nodes", raw, "a list of compute nodes")
    nodes = []
    for i, item in enumerate(raw):
        c = FieldReader(top.source, item, f"compute_nodes[{i}]")
        nodes.append(
            ComputeSpec(
                name=c.text("name"),
                address=c.address("address"),
                compute_scale=c.number("compute_scale", 1.0, positive=True),
                memory_mb=c.number("memory_mb", None, positive=True),
                profile=relative_to(top.source, c.text("profile", None)),
            )
        )
        c.finish()
    if mode != "fl" and not nodes:
        raise top.fail("compute_nodes", raw, f"at least one compute node for mode {mode}")
    return tuple(nodes)


def _check_consistency(topo: Topology) -> None:
    src = topo.source
    names = [c.name for c in topo.compute_nodes]
    for i, n in enumerate(names):
        if n in names[:i] or n in ("aggregator", OWNER) or re.fullmatch(r"owner\d+", n):
            raise TopologyError(src, f"compute_nodes[{i}].name", n, "a unique name (not ownerN)")
    seen: dict[str, str] = {}
    for node in topo.node_names():
        addr = topo.address_of(node)
        if addr in seen:
            wanted = f"an address not used by {seen[addr]}"
            raise TopologyError(src, f"{node}.address", addr, wanted)
        seen[addr] = node
    if topo.mode == "mpsl" and topo.labels != "local":
        raise TopologyError(src, "labels", topo.labels, "local in mode mpsl")
    cuts = topo.plan.cuts
    if cuts is not None and topo.mode != "fl":  # FL runs the whole model: cuts are ignored
        wanted = expected_cut_count(topo)
        if len(cuts) != wanted:
            raise TopologyError(
                src, "plan.cuts", list(cuts),
                f"{wanted} cut(s) for mode {topo.mode} with labels {topo.labels} "
                f"and {len(topo.chain)} compute node(s)",
            )


def expected_cut_count(topo: Topology) -> int:
    """Cuts a plan of this topology has: one per compute node, one more when labels are local."""
    if topo.mode == "fl":
        return 0
    return len(topo.chain) + (1 if topo.labels == "local" else 0)


def apply_overrides(data: Mapping[str, Any], assignments: Iterable[str], source: str) -> dict:
    """Apply `key.sub=value` assignments (values parsed as YAML) to a copy of a raw document."""
    out = copy.deepcopy(dict(data))
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise TopologyError(source, "--set", item, "key=value, e.g. training.epochs=2")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            raise TopologyError(source, key, text, "a YAML value") from None
        node: Any = out
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None or not isinstance(node.get(part), dict):
                if isinstance(node.get(part), str):  # e.g. plan: auto -> a mapping
                    node[part] = {"auto": True} if node[part] == "auto" else {}
                else:
                    node[part] = {} if node.get(part) is None else node[part]
                if not isinstance(node[part], dict):
                    raise TopologyError(source, key, item, "a path through mappings")
            node = node[part]
        node[parts[-1]] = value
    return out


def load(path: str | Path, overrides: Iterable[str] = ()) -> Topology:
    """Read and validate a topology file; `overrides` are `key=value` strings applied first."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        why = getattr(err, "strerror", None) or str(err)
        raise TopologyError(source, "<file>", source, f"a readable file ({why})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "<yaml>"
        raise TopologyError(source, where, "invalid YAML", "a valid YAML mapping") from err
    if not isinstance(data, Mapping):
        raise TopologyError(source, "<top>", data, "a mapping at the top level")
    data = apply_overrides(data, overrides, source)
    return parse(data, source)
