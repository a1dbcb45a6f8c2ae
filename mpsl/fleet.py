"""The nodes of a topology file: the data owners (shared fields, per-owner overrides, how many
share a process) and the compute nodes (device, batching of owners)."""

from __future__ import annotations

import re
from typing import Any

from mpsl.bandwidth import parse_schedule
from mpsl.schema import FieldReader, TopologyError, int_list, relative_to
from mpsl.spec import ComputeSpec, OwnerSpec, TrainingSpec


def parse_owners(r: FieldReader,
                  training: TrainingSpec) -> tuple[tuple[OwnerSpec, ...], int | None]:
    """The owners, and how many share a process (`per_process`; None: chosen at start)."""
    count = r.integer("count", minimum=1)
    per_process = r.integer("per_process", None, minimum=1)
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
        bandwidth_schedule=parse_schedule(r, "bandwidth_schedule"),
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
        if "bandwidth_schedule" in item:
            values["bandwidth_schedule"] = parse_schedule(o, "bandwidth_schedule")
        cuts = _owner_cuts(o, item)
        if cuts is not None:
            values["cuts"] = cuts
        o.finish()
        per_owner[index] = values
    owners = []
    for i in range(count):
        fields = dict(shared, address=f"tcp://{host}:{base_port + i}")
        fields.update(per_owner.get(i, {}))
        owners.append(OwnerSpec(index=i, name=f"owner{i}", **fields))
    return tuple(owners), per_process


def _owner_cuts(o: FieldReader, item: dict[str, Any]) -> tuple[int, ...] | None:
    """An override's plan: `cuts` (its own cuts) or `mode: fl` (every layer on the owner;
    the empty tuple), not both; None when it takes the plan's."""
    mode = o.text("mode", None, ("fl", "split"))
    if "cuts" not in item:
        return () if mode == "fl" else None
    if mode == "fl":
        raise o.fail("cuts", item["cuts"], "no cuts with mode: fl")
    cuts = int_list(o, "cuts", o.raw("cuts"))
    if not cuts:
        raise o.fail("cuts", [], "at least one cut (mode: fl for an owner that runs every layer)")
    return cuts


def check_owner_plans(source: str, mode: str, count: int,
                      owners: tuple[OwnerSpec, ...]) -> None:
    """Per-owner cuts: only in split modes (pipar, sfl, mpsl), and `count` of them each."""
    for o in owners:
        if o.cuts is None:
            continue
        field = f"data_owners.overrides (index {o.index})." + ("cuts" if o.cuts else "mode")
        if mode in ("fl", "sl"):
            raise TopologyError(source, field, list(o.cuts) if o.cuts else "fl",
                                "no per-owner plan in mode " + mode)
        if o.cuts and len(o.cuts) != count:
            raise TopologyError(source, field, list(o.cuts), f"{count} cut(s), as plan.cuts")


def parse_compute(top: FieldReader, mode: str) -> tuple[ComputeSpec, ...]:
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
                device=_device(c),
                batch_owners=_batch_owners(c),
            )
        )
        c.finish()
    if mode != "fl" and not nodes:
        raise top.fail("compute_nodes", raw, f"at least one compute node for mode {mode}")
    return tuple(nodes)


def _device(c: FieldReader) -> str:
    """A compute node's `device`: cpu (default), cuda or cuda:N."""
    device = str(c.text("device", "cpu"))
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise c.fail("device", device, "cpu, cuda or cuda:N")
    return device


def _batch_owners(c: FieldReader) -> str:
    """A compute node's `batch_owners`: auto or off (the default; YAML reads a bare off as
    false)."""
    value = c.raw("batch_owners", "off")
    if value is False:
        value = "off"
    if value not in ("auto", "off"):
        raise c.fail("batch_owners", value, "auto or off")
    return str(value)
