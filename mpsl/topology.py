"""Topology files: the YAML schema and its validation into a typed `Topology` (mpsl.spec).

`load` reads a file, applies `--set` overrides (mpsl.overrides) and validates the result;
every fault is one TopologyError line naming the file, the field, what was given and what
was expected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from mpsl.bandwidth import check_replan, parse_replan
from mpsl.fleet import check_owner_plans, parse_compute, parse_owners
from mpsl.names import AGGREGATOR, OWNER
from mpsl.overrides import apply_overrides
from mpsl.schema import MISSING, FieldReader, TopologyError, int_list, relative_to
from mpsl.spec import (
    LABELS,
    MODES,
    NORMS,
    OPTIMIZERS,
    PARTITIONS,
    SCHEDULE_NAMES,
    SECURITY_MODES,
    ComputeSpec,
    DatasetSpec,
    FailureSpec,
    LinkSpec,
    ModelSpec,
    OwnerSpec,
    PlanSpec,
    PrivacySpec,
    RuntimeSpec,
    ScheduleSpec,
    SecuritySpec,
    Topology,
    TrainingSpec,
    expected_cut_count,
)
from mpsl.training import input_shape, smallest_micro_batch

__all__ = [
    "LABELS", "MODES", "NORMS", "OPTIMIZERS", "OWNER", "PARTITIONS", "SCHEDULE_NAMES",
    "ComputeSpec", "DatasetSpec", "LinkSpec", "ModelSpec", "OwnerSpec", "PlanSpec",
    "RuntimeSpec", "ScheduleSpec", "SecuritySpec", "FailureSpec", "Topology", "TopologyError",
    "PrivacySpec", "TrainingSpec",
    "apply_overrides", "expected_cut_count", "load", "parse",
]
MAX_FILE_BYTES = 1 << 20  # a topology file is read with this limit


def parse(data: Any, source: str = "<topology>") -> Topology:
    """Validate a parsed YAML document into a Topology; raise TopologyError on the first fault."""
    top = FieldReader(source, data, "")
    name = top.text("name", Path(source).stem or "topology")
    model = _parse_model(top)
    dataset = _parse_dataset(top, source)
    training = _parse_training(top)
    mode = top.text("mode", "pipar", MODES)
    labels = top.text("labels", "local" if mode == "mpsl" else "shared", LABELS)
    plan = _parse_plan(top, training)
    schedule = _parse_schedule(top)
    owners, per_process = parse_owners(top.sub("data_owners", required=True), training)
    compute_nodes = parse_compute(top, mode)
    links = _parse_links(top)
    ag = top.sub("aggregator")
    aggregator = ag.address("address", "tcp://127.0.0.1:5550")
    ag.finish()
    runtime = _parse_runtime(top)
    security = _parse_security(top)
    failure = _parse_failure(top, runtime)
    privacy = _parse_privacy(top)
    replan = parse_replan(top)
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
        schedule=schedule,
        security=security,
        failure=failure,
        privacy=privacy,
        owners_per_process=per_process,
        replan=replan,
    )
    _check_consistency(topo)
    check_replan(topo)
    return topo


def _parse_model(top: FieldReader) -> ModelSpec:
    m = top.sub("model", required=True)
    model = ModelSpec(name=m.text("name"), norm=m.text("norm", "batch", NORMS))
    m.finish()
    return model


def _parse_dataset(top: FieldReader, source: str) -> DatasetSpec:
    """The `dataset` section; its `root` relative to the topology file's folder."""
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
    return replace(dataset, root=relative_to(source, dataset.root))


def _parse_training(top: FieldReader) -> TrainingSpec:
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
    return training


def _parse_links(top: FieldReader) -> LinkSpec:
    lk = top.sub("links")
    links = LinkSpec(
        compute_mbps=lk.number("compute_mbps", None, positive=True),
        compute_latency_ms=lk.number("compute_latency_ms", 0.0),
    )
    lk.finish()
    return links


def _parse_runtime(top: FieldReader) -> RuntimeSpec:
    rt = top.sub("runtime")
    runtime = RuntimeSpec(
        torch_threads=rt.integer("torch_threads", 1, minimum=1),
        timeout_s=rt.number("timeout_s", 120.0, positive=True),
        monitor=None if rt.raw("monitor", None) is None else rt.address("monitor"),
    )
    rt.finish()
    return runtime


def _parse_security(top: FieldReader) -> SecuritySpec:
    """The `security` section; `keys` relative to the topology file's folder, and an existing
    folder in mode curve (its key files are checked by `nodes.security.check_key_files`)."""
    s = top.sub("security")
    mode = s.text("mode", "none", SECURITY_MODES)
    keys = relative_to(top.source, s.text("keys", None))
    s.finish()
    if mode == "curve":
        if keys is None:
            raise s.fail("keys", MISSING, "a folder of key files from `mpsl keys` in mode curve")
        if not Path(keys).is_dir():
            raise s.fail("keys", keys, "an existing folder of key files from `mpsl keys`")
    return SecuritySpec(mode=mode, keys=keys)


def _parse_failure(top: FieldReader, runtime: RuntimeSpec) -> FailureSpec:
    """The `failure` section: a peer is lost after `timeout_s` of silence, which must exceed
    the heartbeat period and stay below the nodes' own waits (`runtime.timeout_s`); stragglers
    are left out with `min_owners` and `deadline_s` (at most the owner count: checked with the
    owners)."""
    f = top.sub("failure")
    timeout = f.number("timeout_s", min(20.0, runtime.timeout_s / 2), positive=True)
    failure = FailureSpec(
        heartbeat_s=f.number("heartbeat_s", min(1.0, timeout / 4), positive=True),
        timeout_s=timeout,
        restart=f.flag("restart", False),
        checkpoint=f.flag("checkpoint", False),
        min_owners=f.integer("min_owners", None, minimum=1),
        deadline_s=f.number("deadline_s", None, positive=True),
    )
    f.finish()
    if (failure.min_owners is None) != (failure.deadline_s is None):
        missing = "deadline_s" if failure.deadline_s is None else "min_owners"
        raise f.fail(missing, MISSING, "min_owners and deadline_s together (stragglers)")
    if failure.timeout_s <= 2 * failure.heartbeat_s:
        raise f.fail("timeout_s", failure.timeout_s,
                     f"more than twice heartbeat_s ({failure.heartbeat_s:g})")
    if failure.timeout_s >= runtime.timeout_s:
        raise f.fail("timeout_s", failure.timeout_s,
                     f"less than runtime.timeout_s ({runtime.timeout_s:g}), how long a node "
                     f"waits for a message")
    return failure


def _parse_privacy(top: FieldReader) -> PrivacySpec:
    """The `privacy` section (mpsl.privacy): noise needs clip_norm; finite numbers, delta < 1."""
    p = top.sub("privacy")
    privacy = PrivacySpec(
        clip_norm=p.number("clip_norm", None, positive=True),
        noise_multiplier=p.number("noise_multiplier", 0.0),
        delta=p.number("delta", 1e-5, positive=True),
        pixel_sigma=p.number("pixel_sigma", 0.0),
        cut_sigma=p.number("cut_sigma", 0.0),
        noise_seed=p.integer("noise_seed", None, minimum=0),
    )
    p.finish()
    if privacy.noise_multiplier > 0 and privacy.clip_norm is None:
        raise p.fail("clip_norm", MISSING, "a clip norm with noise_multiplier")
    for key in ("clip_norm", "noise_multiplier", "pixel_sigma", "cut_sigma", "delta"):
        value = getattr(privacy, key)
        if value is not None and not value < (1 if key == "delta" else float("inf")):
            raise p.fail(key, value, "a number in (0, 1)" if key == "delta" else "a finite number")
    return privacy


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
    per_owner = p.flag("per_owner", False)
    p.finish()
    if not auto and cuts is None:
        raise p.fail("cuts", MISSING, "a list of cuts, or auto: true")
    if auto and cuts is not None:
        raise p.fail("cuts", cuts_raw, "no cuts when auto is true (use pinned_cuts)")
    profile = relative_to(top.source, profile)
    return PlanSpec(auto=auto, cuts=cuts, micro_batches=micro, pinned_cuts=pinned, profile=profile,
                    per_owner=per_owner)


def _parse_schedule(top: FieldReader) -> ScheduleSpec:
    raw = top.raw("schedule", "gpipe")
    if isinstance(raw, str):
        if raw not in SCHEDULE_NAMES:
            raise top.fail("schedule", raw, "one of " + ", ".join(SCHEDULE_NAMES))
        return ScheduleSpec(raw)
    s = FieldReader(top.source, raw, "schedule")
    spec = ScheduleSpec(s.text("name", "gpipe", SCHEDULE_NAMES),
                        s.integer("max_in_flight", None, minimum=1))
    s.finish()
    if spec.max_in_flight is not None and spec.name != "1f1b":
        raise s.fail("max_in_flight", spec.max_in_flight, "no max_in_flight for gpipe")
    return spec


def _check_micro_batches(topo: Topology) -> None:
    """N keeps every micro-batch at the least the model trains on (a norm refuses a single
    value: `mpsl.geometry.smallest_batch`), and a batch holds that much."""
    try:
        smallest, side = smallest_micro_batch(topo), input_shape(topo)[0][1]
    except (ValueError, TypeError):  # the model or data set is refused where it is built
        return
    if smallest == 1:
        return
    B = topo.training.batch_size
    why = (f"{topo.model.name} with norm {topo.model.norm} on {side}x{side} inputs trains on "
           f"micro-batches of {smallest} samples or more")
    if smallest > B:
        raise TopologyError(topo.source, "training.batch_size", B, f"at least {smallest}: {why}")
    most = B // smallest
    if topo.plan.micro_batches > most:
        raise TopologyError(topo.source, "plan.micro_batches", topo.plan.micro_batches,
                            f"at most {most} (training.batch_size {B}): {why}")
    for o in topo.owners:
        if o.micro_batches is not None and o.micro_batches > most:
            raise TopologyError(topo.source, f"{o.name}.micro_batches", o.micro_batches,
                                f"at most {most} (training.batch_size {B}): {why}")


def _check_consistency(topo: Topology) -> None:
    src = topo.source
    names = [c.name for c in topo.compute_nodes]
    for i, n in enumerate(names):
        if n in names[:i] or n in (AGGREGATOR, OWNER) or re.fullmatch(r"owner\d+", n):
            raise TopologyError(src, f"compute_nodes[{i}].name", n, "a unique name (not ownerN)")
    seen: dict[str, str] = {}
    for node in topo.node_names():
        addr = topo.address_of(node)
        if addr in seen:
            wanted = f"an address not used by {seen[addr]}"
            raise TopologyError(src, f"{node}.address", addr, wanted)
        seen[addr] = node
    need = topo.failure.min_owners
    if need is not None and need > len(topo.owners):
        raise TopologyError(src, "failure.min_owners", need,
                            f"at most the {len(topo.owners)} data owner(s)")
    if topo.mode == "mpsl" and topo.labels != "local":
        raise TopologyError(src, "labels", topo.labels, "local in mode mpsl")
    check_owner_plans(src, topo.mode, expected_cut_count(topo), topo.owners)
    _check_micro_batches(topo)
    cuts = topo.plan.cuts
    if cuts is not None and topo.mode != "fl":  # FL runs the whole model: cuts are ignored
        count = expected_cut_count(topo)
        if len(cuts) != count:
            raise TopologyError(
                src, "plan.cuts", list(cuts),
                f"{count} cut(s) for mode {topo.mode} with labels {topo.labels} "
                f"and {len(topo.chain)} compute node(s)",
            )


def load(path: str | Path, overrides: Iterable[str] = ()) -> Topology:
    """Read and validate a topology file; `overrides` are `key=value` strings applied first
    (paths they give resolve against the working directory, those of the file against its
    folder)."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise TopologyError(source, "<file>", f"over {MAX_FILE_BYTES} bytes",
                                "a topology file of at most 1 MiB")
        text = raw.decode("utf-8")
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
    overrides = tuple(overrides)
    data = apply_overrides(data, overrides, source)
    return replace(parse(data, source), overrides=overrides)
