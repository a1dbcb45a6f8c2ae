"""Tests of mpsl.topology: the shipped files, defaults, `--set` overrides and every error path."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from mpsl.topology import (
    Topology,
    TopologyError,
    apply_overrides,
    expected_cut_count,
    load,
    parse,
)

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"

# A small valid document; every error case below is one mutation of it.
BASE: dict[str, Any] = {
    "name": "base",
    "model": {"name": "vgg5"},
    "dataset": {"name": "digits"},
    "mode": "pipar",
    "plan": {"cuts": [2], "micro_batches": 2},
    "data_owners": {"count": 2},
    "compute_nodes": [{"name": "server", "address": "tcp://127.0.0.1:5590"}],
}

DEL = object()  # a mutation value that removes the key


def mutate(changes: dict[str, Any]) -> dict[str, Any]:
    """BASE with `changes` applied: dotted paths, digits index (or append to) lists."""
    doc = copy.deepcopy(BASE)
    for path, value in changes.items():
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        node: Any = doc
        for k in keys[:-1]:
            if isinstance(node, dict) and not isinstance(node.get(k), (dict, list)):
                node[k] = {}
            node = node[k]
        if value is DEL:
            del node[keys[-1]]
        elif isinstance(node, list) and keys[-1] == len(node):
            node.append(value)
        else:
            node[keys[-1]] = value
    return doc


def write(tmp_path: Path, doc: Any, name: str = "topo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def check_error(err: TopologyError, source: str, field: str, fragment: str) -> None:
    """The error's field, and its message: one line naming the file, the field, the fragment."""
    msg = str(err)
    assert err.field == field, msg
    assert err.source == source
    assert "\n" not in msg and "\r" not in msg
    assert msg.startswith(f"{source}: field '{field}': "), msg
    assert fragment in msg, msg


def test_base_document_is_valid(tmp_path: Path) -> None:
    topo = load(write(tmp_path, BASE))
    assert topo.name == "base" and topo.mode == "pipar" and topo.plan.cuts == (2,)


# ----------------------------------------------------------------------------------------------
# Every error path of parse(), one mutation of BASE each: (changes, field, fragment of message)

ADDR = "an address like tcp://127.0.0.1:5555"
POS = "a positive number"
NONNEG = "a number >= 0"
STR = "a non-empty string"
INT1 = "an integer >= 1"
UNKNOWN = "no such field (known: "
S1 = "tcp://127.0.0.1:5591"

ERROR_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # _Reader(): a section that is not a mapping
    ("model-not-mapping", {"model": 3}, "model", "got 3, expected a mapping"),
    ("dataset-not-mapping", {"dataset": "digits"}, "dataset", "expected a mapping"),
    ("training-not-mapping", {"training": [1]}, "training", "expected a mapping"),
    ("plan-not-mapping", {"plan": [2]}, "plan", "got [2], expected a mapping"),
    ("plan-other-string", {"plan": "manual"}, "plan", "got 'manual', expected a mapping"),
    ("owners-not-mapping", {"data_owners": 4}, "data_owners", "expected a mapping"),
    ("override-not-mapping", {"data_owners.overrides": [3]}, "data_owners.overrides[0]",
     "got 3, expected a mapping"),
    ("compute-item-not-mapping", {"compute_nodes": ["server"]}, "compute_nodes[0]",
     "got 'server', expected a mapping"),
    ("links-not-mapping", {"links": "fast"}, "links", "expected a mapping"),
    ("aggregator-not-mapping", {"aggregator": 5}, "aggregator", "expected a mapping"),
    ("runtime-not-mapping", {"runtime": []}, "runtime", "expected a mapping"),
    # raw(): required fields missing
    ("model-missing", {"model": DEL}, "model", "missing, expected a value"),
    ("dataset-missing", {"dataset": DEL}, "dataset", "missing, expected a value"),
    ("owners-missing", {"data_owners": DEL}, "data_owners", "missing, expected a value"),
    ("model-name-missing", {"model.name": DEL}, "model.name", "missing, expected a value"),
    ("model-null", {"model": None}, "model.name", "missing"),
    ("dataset-name-missing", {"dataset.name": DEL}, "dataset.name", "missing"),
    ("owner-count-missing", {"data_owners.count": DEL}, "data_owners.count", "missing"),
    ("compute-name-missing", {"compute_nodes.0.name": DEL}, "compute_nodes[0].name", "missing"),
    ("compute-address-missing", {"compute_nodes.0.address": DEL}, "compute_nodes[0].address",
     "missing"),
    ("override-index-missing", {"data_owners.overrides": [{"latency_ms": 1}]},
     "data_owners.overrides[0].index", "missing"),
    ("override-null", {"data_owners.overrides": [None]}, "data_owners.overrides[0].index",
     "missing"),
    # text()
    ("name-empty", {"name": ""}, "name", f"got '', expected {STR}"),
    ("name-not-string", {"name": 5}, "name", f"got 5, expected {STR}"),
    ("model-name-empty", {"model.name": ""}, "model.name", STR),
    ("model-name-null", {"model.name": None}, "model.name", f"got None, expected {STR}"),
    ("model-norm-choice", {"model.norm": "layer"}, "model.norm",
     "got 'layer', expected one of batch, group, none"),
    ("dataset-name-list", {"dataset.name": ["digits"]}, "dataset.name", STR),
    ("dataset-root", {"dataset.root": 3}, "dataset.root", STR),
    ("dataset-partition", {"dataset.partition": "shards"}, "dataset.partition",
     "one of iid, dirichlet"),
    ("optimizer", {"training.optimizer": "rmsprop"}, "training.optimizer", "one of sgd, adam"),
    ("mode", {"mode": "ring"}, "mode", "got 'ring', expected one of pipar, sfl, fl, sl, mpsl"),
    ("labels", {"labels": "private"}, "labels", "one of shared, local"),
    ("plan-profile", {"plan.profile": 3}, "plan.profile", STR),
    ("owner-host", {"data_owners.host": ""}, "data_owners.host", STR),
    ("owner-profile", {"data_owners.profile": 1}, "data_owners.profile", STR),
    ("override-profile", {"data_owners.overrides": [{"index": 0, "profile": ""}]},
     "data_owners.overrides[0].profile", STR),
    ("compute-name-empty", {"compute_nodes.0.name": ""}, "compute_nodes[0].name", STR),
    ("compute-profile", {"compute_nodes.0.profile": 7}, "compute_nodes[0].profile", STR),
    # integer()
    ("epochs-zero", {"training.epochs": 0}, "training.epochs", f"got 0, expected {INT1}"),
    ("epochs-float", {"training.epochs": 1.5}, "training.epochs", INT1),
    ("batch-size-bool", {"training.batch_size": True}, "training.batch_size",
     f"got True, expected {INT1}"),
    ("aggregate-every", {"training.aggregate_every": 0}, "training.aggregate_every", INT1),
    ("training-seed", {"training.seed": "x"}, "training.seed", "got 'x', expected an integer"),
    ("max-iterations", {"training.max_iterations": -1}, "training.max_iterations", INT1),
    ("samples-per-owner", {"dataset.samples_per_owner": 0}, "dataset.samples_per_owner", INT1),
    ("test-samples", {"dataset.test_samples": "all"}, "dataset.test_samples", INT1),
    ("dataset-seed", {"dataset.seed": 1.0}, "dataset.seed", "expected an integer"),
    ("micro-batches-zero", {"plan.micro_batches": 0}, "plan.micro_batches", INT1),
    ("owner-count-zero", {"data_owners.count": 0}, "data_owners.count", INT1),
    ("base-port-zero", {"data_owners.base_port": 0}, "data_owners.base_port", INT1),
    ("override-index-negative", {"data_owners.overrides": [{"index": -1}]},
     "data_owners.overrides[0].index", "an integer >= 0"),
    ("override-micro-zero", {"data_owners.overrides": [{"index": 0, "micro_batches": 0}]},
     "data_owners.overrides[0].micro_batches", INT1),
    ("torch-threads", {"runtime.torch_threads": 0}, "runtime.torch_threads", INT1),
    # number()
    ("alpha-zero", {"dataset.alpha": 0}, "dataset.alpha", f"got 0, expected {POS}"),
    ("lr-negative", {"training.lr": -0.1}, "training.lr", POS),
    ("lr-string", {"training.lr": "fast"}, "training.lr", POS),
    ("momentum-negative", {"training.momentum": -1}, "training.momentum", NONNEG),
    ("weight-decay-nan", {"training.weight_decay": math.nan}, "training.weight_decay",
     "got nan, expected a number >= 0"),
    ("owner-scale-zero", {"data_owners.compute_scale": 0}, "data_owners.compute_scale", POS),
    ("uplink-bool", {"data_owners.uplink_mbps": True}, "data_owners.uplink_mbps", POS),
    ("downlink-string", {"data_owners.downlink_mbps": "10"}, "data_owners.downlink_mbps", POS),
    ("owner-latency", {"data_owners.latency_ms": -1}, "data_owners.latency_ms", NONNEG),
    ("owner-memory", {"data_owners.memory_mb": 0}, "data_owners.memory_mb", POS),
    ("override-scale", {"data_owners.overrides": [{"index": 1, "compute_scale": 0}]},
     "data_owners.overrides[0].compute_scale", POS),
    ("override-uplink", {"data_owners.overrides": [{"index": 1, "uplink_mbps": -2}]},
     "data_owners.overrides[0].uplink_mbps", POS),
    ("override-downlink", {"data_owners.overrides": [{"index": 1, "downlink_mbps": "x"}]},
     "data_owners.overrides[0].downlink_mbps", POS),
    ("override-latency", {"data_owners.overrides": [{"index": 1, "latency_ms": -5}]},
     "data_owners.overrides[0].latency_ms", NONNEG),
    ("override-memory", {"data_owners.overrides": [{"index": 1, "memory_mb": 0}]},
     "data_owners.overrides[0].memory_mb", POS),
    ("compute-scale", {"compute_nodes.0.compute_scale": 0}, "compute_nodes[0].compute_scale",
     POS),
    ("compute-memory", {"compute_nodes.0.memory_mb": -1}, "compute_nodes[0].memory_mb", POS),
    ("links-rate", {"links.compute_mbps": 0}, "links.compute_mbps", POS),
    ("links-latency", {"links.compute_latency_ms": -1}, "links.compute_latency_ms", NONNEG),
    ("timeout", {"runtime.timeout_s": 0}, "runtime.timeout_s", POS),
    # flag()
    ("plan-auto-string", {"plan.auto": "yes"}, "plan.auto", "got 'yes', expected true or false"),
    # address()
    ("aggregator-no-scheme", {"aggregator.address": "127.0.0.1:5550"}, "aggregator.address",
     ADDR),
    ("aggregator-port-zero", {"aggregator.address": "tcp://127.0.0.1:0"}, "aggregator.address",
     ADDR),
    ("aggregator-port-high", {"aggregator.address": "tcp://127.0.0.1:70000"},
     "aggregator.address", ADDR),
    ("aggregator-not-string", {"aggregator.address": 5550}, "aggregator.address", ADDR),
    ("compute-address-udp", {"compute_nodes.0.address": "udp://127.0.0.1:5590"},
     "compute_nodes[0].address", ADDR),
    ("override-address", {"data_owners.overrides": [{"index": 0, "address": "tcp://h"}]},
     "data_owners.overrides[0].address", ADDR),
    ("monitor", {"runtime.monitor": "nowhere"}, "runtime.monitor", ADDR),
    # finish(): unknown fields, in every section
    ("top-unknown", {"modle": {"name": "vgg5"}}, "modle", UNKNOWN),
    ("model-unknown", {"model.depth": 5}, "model.depth", UNKNOWN + "name, norm)"),
    ("dataset-unknown", {"dataset.path": "x"}, "dataset.path", UNKNOWN),
    ("training-unknown", {"training.epoch": 2}, "training.epoch", UNKNOWN),
    ("plan-unknown", {"plan.cut": [2]}, "plan.cut", UNKNOWN),
    ("owners-unknown", {"data_owners.hosts": "x"}, "data_owners.hosts", UNKNOWN),
    ("override-unknown", {"data_owners.overrides": [{"index": 0, "name": "a"}]},
     "data_owners.overrides[0].name", UNKNOWN),
    ("compute-unknown", {"compute_nodes.0.port": 1}, "compute_nodes[0].port", UNKNOWN),
    ("links-unknown", {"links.rate": 1}, "links.rate", UNKNOWN),
    ("aggregator-unknown", {"aggregator.host": "x"}, "aggregator.host", UNKNOWN),
    ("runtime-unknown", {"runtime.threads": 2}, "runtime.threads", UNKNOWN),
    # dataset.options
    ("dataset-options", {"dataset.options": [1]}, "dataset.options", "got [1], expected a mapping"),
    # _int_list()
    ("cuts-repeated", {"plan.cuts": [2, 2]}, "plan.cuts",
     "a strictly increasing list of integers >= 1"),
    ("cuts-decreasing", {"plan.cuts": [3, 1]}, "plan.cuts", "strictly increasing"),
    ("cuts-zero", {"plan.cuts": [0]}, "plan.cuts", "integers >= 1"),
    ("cuts-not-list", {"plan.cuts": 2}, "plan.cuts", "got 2, expected a strictly increasing"),
    ("cuts-bool", {"plan.cuts": [True]}, "plan.cuts", "strictly increasing"),
    ("cuts-float", {"plan.cuts": [1.5]}, "plan.cuts", "strictly increasing"),
    ("pinned-cuts", {"plan": {"auto": True, "pinned_cuts": [3, 1]}}, "plan.pinned_cuts",
     "strictly increasing"),
    # _parse_plan()
    ("micro-above-batch", {"plan.micro_batches": 33}, "plan.micro_batches",
     "got 33, expected at most training.batch_size (32)"),
    ("micro-above-small-batch", {"training.batch_size": 4, "plan.micro_batches": 5},
     "plan.micro_batches", "at most training.batch_size (4)"),
    ("no-cuts-not-auto", {"plan.cuts": DEL}, "plan.cuts",
     "missing, expected a list of cuts, or auto: true"),
    ("plan-null", {"plan": None}, "plan.cuts", "a list of cuts, or auto: true"),
    ("auto-with-cuts", {"plan.auto": True}, "plan.cuts",
     "got [2], expected no cuts when auto is true (use pinned_cuts)"),
    # parse_owners() (mpsl.fleet)
    ("base-port-no-room", {"data_owners.base_port": 65535}, "data_owners.base_port",
     "got 65535, expected a port leaving room for 2 owners"),
    ("overrides-not-list", {"data_owners.overrides": {"index": 0}}, "data_owners.overrides",
     "a list of {index: i, ...} mappings"),
    ("override-index-count", {"data_owners.overrides": [{"index": 2}]},
     "data_owners.overrides[0].index", "got 2, expected an owner index below count (2)"),
    ("override-twice", {"data_owners.overrides": [{"index": 1}, {"index": 1}]},
     "data_owners.overrides[1].index", "got 1, expected each owner overridden once"),
    ("override-micro-above-batch",
     {"data_owners.overrides": [{"index": 0, "micro_batches": 64}]},
     "data_owners.overrides[0].micro_batches", "at most training.batch_size (32)"),
    # parse_compute() (mpsl.fleet)
    ("compute-not-list", {"compute_nodes": {"name": "server"}}, "compute_nodes",
     "expected a list of compute nodes"),
    ("compute-empty", {"compute_nodes": []}, "compute_nodes",
     "got [], expected at least one compute node for mode pipar"),
    ("compute-absent-sfl", {"compute_nodes": DEL, "mode": "sfl"}, "compute_nodes",
     "at least one compute node for mode sfl"),
    ("compute-absent-mpsl", {"compute_nodes": DEL, "mode": "mpsl", "plan": "auto"},
     "compute_nodes", "at least one compute node for mode mpsl"),
    # _check_consistency()
    ("compute-name-twice",
     {"compute_nodes.1": {"name": "server", "address": S1}, "plan.cuts": [1, 2]},
     "compute_nodes[1].name", "got 'server', expected a unique name (not ownerN)"),
    ("compute-name-aggregator", {"compute_nodes.0.name": "aggregator"}, "compute_nodes[0].name",
     "a unique name"),
    ("compute-name-owner", {"compute_nodes.0.name": "owner1"}, "compute_nodes[0].name",
     "a unique name (not ownerN)"),
    ("address-compute-owner", {"compute_nodes.0.address": "tcp://127.0.0.1:5601"},
     "server.address", "got 'tcp://127.0.0.1:5601', expected an address not used by owner1"),
    ("address-aggregator-compute", {"aggregator.address": "tcp://127.0.0.1:5590"},
     "aggregator.address", "an address not used by server"),
    ("address-override-owner",
     {"data_owners.overrides": [{"index": 1, "address": "tcp://127.0.0.1:5600"}]},
     "owner1.address", "an address not used by owner0"),
    ("address-two-compute",
     {"compute_nodes.1": {"name": "n2", "address": "tcp://127.0.0.1:5590"},
      "plan.cuts": [1, 2]},
     "n2.address", "an address not used by server"),
    ("cut-count-pipar", {"plan.cuts": [1, 2]}, "plan.cuts",
     "got [1, 2], expected 1 cut(s) for mode pipar with labels shared and 1 compute node(s)"),
    ("cut-count-local", {"labels": "local"}, "plan.cuts",
     "expected 2 cut(s) for mode pipar with labels local and 1 compute node(s)"),
    ("cut-count-mpsl",
     {"mode": "mpsl", "compute_nodes.1": {"name": "n2", "address": S1}, "plan.cuts": [1, 2]},
     "plan.cuts", "3 cut(s) for mode mpsl with labels local and 2 compute node(s)"),
    ("mpsl-shared-labels", {"mode": "mpsl", "labels": "shared", "plan": "auto"}, "labels",
     "got 'shared', expected local in mode mpsl"),
    # _check_micro_batches(): vgg19 with BatchNorm on 8x8 digits sees 1x1 maps (2 or more)
    ("micro-below-smallest", {"model": {"name": "vgg19"}, "plan.micro_batches": 17},
     "plan.micro_batches", "got 17, expected at most 16 (training.batch_size 32): vgg19 with "
     "norm batch on 8x8 inputs trains on micro-batches of 2 samples or more"),
    ("override-micro-below-smallest",
     {"model": {"name": "vgg19"}, "data_owners.overrides": [{"index": 1, "micro_batches": 32}]},
     "owner1.micro_batches", "got 32, expected at most 16 (training.batch_size 32)"),
    ("batch-below-smallest",
     {"model": {"name": "vgg19"}, "training.batch_size": 1, "plan.micro_batches": 1},
     "training.batch_size", "got 1, expected at least 2: vgg19 with norm batch"),
    ("schedule-unknown", {"schedule": "zigzag"}, "schedule",
     "got 'zigzag', expected one of gpipe, 1f1b"),
    ("schedule-name", {"schedule": {"name": "zigzag"}}, "schedule.name",
     "expected one of gpipe, 1f1b"),
    ("schedule-window", {"schedule": {"name": "1f1b", "max_in_flight": 0}},
     "schedule.max_in_flight", "expected an integer >= 1"),
    ("schedule-window-gpipe", {"schedule": {"name": "gpipe", "max_in_flight": 2}},
     "schedule.max_in_flight", "expected no max_in_flight for gpipe"),
    ("schedule-extra", {"schedule": {"name": "1f1b", "window": 2}}, "schedule.window",
     "no such field"),
]


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [pytest.param(c, f, m, id=i) for i, c, f, m in ERROR_CASES],
)
def test_error_paths(tmp_path: Path, changes: dict, field: str, fragment: str) -> None:
    path = write(tmp_path, mutate(changes))
    with pytest.raises(TopologyError) as info:
        load(path)
    check_error(info.value, str(path), field, fragment)


def test_error_case_ids_are_unique() -> None:
    ids = [c[0] for c in ERROR_CASES]
    assert len(ids) == len(set(ids))


def test_parse_names_source_and_rejects_non_mapping() -> None:
    with pytest.raises(TopologyError) as info:
        parse([1, 2], "list.yaml")
    check_error(info.value, "list.yaml", "<top>", "got [1, 2], expected a mapping")
    with pytest.raises(TopologyError) as info:
        parse(mutate({"mode": "x"}))
    check_error(info.value, "<topology>", "mode", "one of")


def test_error_is_a_value_error_with_its_parts() -> None:
    with pytest.raises(ValueError) as info:
        parse(mutate({"training.epochs": 0}), "t.yaml")
    err = info.value
    assert isinstance(err, TopologyError)
    assert (err.source, err.field, err.given, err.expected) == (
        "t.yaml", "training.epochs", 0, "an integer >= 1")
    assert str(err) == "t.yaml: field 'training.epochs': got 0, expected an integer >= 1"


def test_multiline_value_stays_on_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, mutate({"name": 5, "model.name": "a\nb"}))
    with pytest.raises(TopologyError) as info:
        load(path)
    check_error(info.value, str(path), "name", "got 5")
    with pytest.raises(TopologyError) as info:
        load(write(tmp_path, mutate({"model.norm": "a\nb"})))
    assert "\n" not in str(info.value) and "'a\\nb'" in str(info.value)


# ----------------------------------------------------------------------------------------------
# load(): the file itself


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(TopologyError) as info:
        load(path)
    check_error(info.value, str(path), "<file>", "expected a readable file (No such file")


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as info:
        load(tmp_path)
    check_error(info.value, str(tmp_path), "<file>", "expected a readable file (")


def test_load_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodel: {name: vgg5\ndataset: [\n")
    with pytest.raises(TopologyError) as info:
        load(path)
    err = info.value
    assert err.field.startswith("line ")
    check_error(err, str(path), err.field, "got 'invalid YAML', expected a valid YAML mapping")


def test_load_invalid_yaml_without_a_mark(tmp_path: Path) -> None:
    path = tmp_path / "ctrl.yaml"
    path.write_text("name: \x07\n")  # a reader error: no problem_mark
    with pytest.raises(TopologyError) as info:
        load(path)
    check_error(info.value, str(path), "<yaml>", "expected a valid YAML mapping")


@pytest.mark.parametrize(("text", "given"), [("- a\n- b\n", "['a', 'b']"), ("", "None"),
                                             ("just text\n", "'just text'")])
def test_load_top_level_not_a_mapping(tmp_path: Path, text: str, given: str) -> None:
    path = tmp_path / "top.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError) as info:
        load(path)
    check_error(info.value, str(path), "<top>", f"got {given}, expected a mapping at the top level")


def test_load_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00name: x\n")
    with pytest.raises(TopologyError) as info:
        load(path)
    check_error(info.value, str(path), "<file>", "expected a readable file")


def test_load_applies_overrides_before_validating(tmp_path: Path) -> None:
    path = write(tmp_path, mutate({"training.epochs": 0}))
    assert load(path, ["training.epochs=3"]).training.epochs == 3
    with pytest.raises(TopologyError) as info:
        load(write(tmp_path, BASE), ["training.epochs=0"])
    check_error(info.value, str(tmp_path / "topo.yaml"), "training.epochs", "got 0")


# ----------------------------------------------------------------------------------------------
# apply_overrides(): `--set key=value`


@pytest.mark.parametrize("item", ["training.epochs", "=3", ""])
def test_set_without_key_or_equals(item: str) -> None:
    with pytest.raises(TopologyError) as info:
        apply_overrides(BASE, [item], "s.yaml")
    check_error(info.value, "s.yaml", "--set", f"got {item!r}, expected key=value")


@pytest.mark.parametrize(
    ("item", "field"),
    [("training.epochs.x=1", "training.epochs.x"), ("compute_nodes.name=x", "compute_nodes.name"),
     ("plan.cuts.first=1", "plan.cuts.first")],
)
def test_set_through_a_non_mapping(item: str, field: str) -> None:
    doc = mutate({"training.epochs": 3})
    with pytest.raises(TopologyError) as info:
        apply_overrides(doc, [item], "s.yaml")
    check_error(info.value, "s.yaml", field, "expected a path through mappings")


def test_set_invalid_yaml_value() -> None:
    with pytest.raises(TopologyError) as info:
        apply_overrides(BASE, ["plan.cuts=[1"], "s.yaml")
    check_error(info.value, "s.yaml", "plan.cuts", "")


def test_set_values_nesting_and_copy() -> None:
    doc = copy.deepcopy(BASE)
    out = apply_overrides(
        doc,
        ["training.epochs=2", "plan.micro_batches=8", "mode=sfl", "runtime.monitor.x.y=1",
         "dataset.options.size=64", "name=", "labels=local"],
        "s.yaml",
    )
    assert doc == BASE  # the input is not changed
    assert out["training"] == {"epochs": 2}
    assert out["plan"] == {"cuts": [2], "micro_batches": 8}
    assert out["mode"] == "sfl"
    assert out["runtime"] == {"monitor": {"x": {"y": 1}}}
    assert out["dataset"] == {"name": "digits", "options": {"size": 64}}
    assert out["name"] is None and out["labels"] == "local"


def test_set_auto_plan_string_becomes_mapping() -> None:
    doc = mutate({"plan": "auto"})
    out = apply_overrides(doc, ["plan.micro_batches=4"], "s.yaml")
    assert out["plan"] == {"auto": True, "micro_batches": 4}
    topo = parse(out, "s.yaml")
    assert topo.plan.auto and topo.plan.micro_batches == 4 and topo.plan.cuts is None
    other = apply_overrides(mutate({"plan": "manual"}), ["plan.cuts=[2]"], "s.yaml")
    assert other["plan"] == {"cuts": [2]}
    null = apply_overrides(mutate({"plan": None}), ["plan.cuts=[3]"], "s.yaml")
    assert null["plan"] == {"cuts": [3]}


def test_set_whole_plan_to_auto_and_types() -> None:
    out = apply_overrides(BASE, ["plan=auto", "training.lr=0.5", "plan2=[1, 2]", "x=true"], "s")
    assert out["plan"] == "auto"
    assert out["training"]["lr"] == 0.5 and out["plan2"] == [1, 2] and out["x"] is True


def test_set_through_load(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    topo = load(path, ["training.epochs=2", "plan.micro_batches=8", "mode=sfl"])
    assert topo.training.epochs == 2 and topo.plan.micro_batches == 8 and topo.mode == "sfl"
    auto = load(path, ["plan=auto"])
    assert auto.plan.auto and auto.plan.cuts is None


# ----------------------------------------------------------------------------------------------
# The shipped topologies


def test_two_hop_file() -> None:
    path = TOPOLOGIES / "two_hop.yaml"
    topo = load(path)
    assert topo.source == str(path) and topo.name == "two_hop"
    assert topo.model.name == "vgg5" and topo.model.norm == "batch"
    assert topo.dataset.name == "digits" and topo.dataset.root is None
    assert topo.mode == "pipar" and topo.labels == "shared"
    assert topo.plan.cuts == (2,) and topo.plan.micro_batches == 4 and not topo.plan.auto
    assert len(topo.owners) == 4
    for i, o in enumerate(topo.owners):
        assert o.index == i and o.name == f"owner{i}"
        assert o.address == f"tcp://127.0.0.1:{5600 + i}"
        assert o.uplink_mbps == 10.0 and o.downlink_mbps == 25.0 and o.memory_mb == 1024.0
        assert o.micro_batches is None
    assert [c.name for c in topo.compute_nodes] == ["server"]
    assert topo.chain == ("server",)
    assert topo.links.compute_mbps == 1000.0
    assert topo.aggregator == "tcp://127.0.0.1:5550"
    assert topo.training.epochs == 3 and topo.training.momentum == 0.9
    assert topo.training.aggregate_every is None
    assert expected_cut_count(topo) == 1
    assert topo.node_names() == ["owner0", "owner1", "owner2", "owner3", "server", "aggregator"]


def test_three_hop_file() -> None:
    topo = load(TOPOLOGIES / "three_hop.yaml")
    assert topo.mode == "mpsl" and topo.labels == "local"
    assert topo.model.name == "vgg5"
    assert topo.plan.cuts == (1, 2, 4) and topo.plan.micro_batches == 2
    assert len(topo.owners) == 3 and topo.owners[2].address == "tcp://127.0.0.1:5702"
    assert all(o.latency_ms == 5.0 and o.uplink_mbps == 20.0 for o in topo.owners)
    assert len(topo.compute_nodes) == 2 and topo.chain == ("node1", "node2")
    assert topo.compute("node2").address == "tcp://127.0.0.1:5691"
    assert topo.compute("node1").memory_mb == 2048.0
    assert topo.links.compute_mbps == 100.0 and topo.links.compute_latency_ms == 1.0
    assert expected_cut_count(topo) == 3
    assert topo.address_of("aggregator") == "tcp://127.0.0.1:5650"


# ----------------------------------------------------------------------------------------------
# Defaults and derived values


def test_defaults() -> None:
    topo = parse({"model": {"name": "m"}, "dataset": {"name": "d"}, "mode": "fl",
                  "data_owners": {"count": 1}}, "dir/minimal.yaml")
    assert isinstance(topo, Topology)
    assert topo.name == "minimal"  # from the file name
    assert topo.model.norm == "batch"
    assert topo.dataset.partition == "iid" and topo.dataset.alpha == 0.5
    assert topo.dataset.options == {} and topo.dataset.seed == 0
    t = topo.training
    assert (t.epochs, t.batch_size, t.lr, t.optimizer, t.momentum, t.weight_decay) == (
        1, 32, 0.01, "sgd", 0.0, 0.0)
    assert t.aggregate_every is None and t.max_iterations is None
    assert topo.plan.auto and topo.plan.cuts is None and topo.plan.micro_batches == 1
    assert topo.plan.pinned_cuts == () and topo.plan.profile is None
    assert topo.labels == "shared"
    o = topo.owners[0]
    assert o.address == "tcp://127.0.0.1:5600" and o.compute_scale == 1.0
    assert o.uplink_mbps is None and o.latency_ms == 0.0 and o.memory_mb is None
    assert topo.compute_nodes == () and topo.chain == ()
    assert topo.links.compute_mbps is None and topo.links.compute_latency_ms == 0.0
    assert topo.aggregator == "tcp://127.0.0.1:5550"
    assert topo.runtime.torch_threads == 1 and topo.runtime.timeout_s == 120.0
    assert topo.runtime.monitor is None
    assert expected_cut_count(topo) == 0


def test_default_name_without_stem() -> None:
    assert parse(mutate({"name": DEL}), "").name == "topology"
    assert parse(mutate({"name": DEL}), "a/b/c.yaml").name == "c"


@pytest.mark.parametrize(("mode", "labels"), [("pipar", "shared"), ("sfl", "shared"),
                                              ("sl", "shared"), ("fl", "shared"),
                                              ("mpsl", "local")])
def test_labels_default_by_mode(mode: str, labels: str) -> None:
    topo = parse(mutate({"mode": mode, "plan": "auto"}), "t.yaml")
    assert topo.labels == labels


def test_explicit_values_are_kept() -> None:
    topo = parse(mutate({
        "training": {"aggregate_every": 5, "max_iterations": 3, "optimizer": "adam",
                     "batch_size": 16, "lr": 1},
        "dataset.partition": "dirichlet", "dataset.alpha": 0.1, "dataset.options": {"size": 8},
        "model.norm": "group", "runtime": {"monitor": "tcp://127.0.0.1:6000", "torch_threads": 2},
        "plan": {"auto": True, "pinned_cuts": [1, 3], "micro_batches": 16},
        "links": {"compute_mbps": 50, "compute_latency_ms": 2},
    }), "t.yaml")
    assert topo.training.aggregate_every == 5 and topo.training.max_iterations == 3
    assert topo.training.lr == 1.0 and isinstance(topo.training.lr, float)
    assert topo.dataset.partition == "dirichlet" and topo.dataset.options == {"size": 8}
    assert topo.model.norm == "group"
    assert topo.runtime.monitor == "tcp://127.0.0.1:6000" and topo.runtime.torch_threads == 2
    assert topo.plan.pinned_cuts == (1, 3) and topo.plan.micro_batches == 16
    assert topo.links.compute_mbps == 50.0


def test_owner_addresses_from_host_and_base_port() -> None:
    topo = parse(mutate({"data_owners": {"count": 3, "host": "10.0.0.7", "base_port": 7000}}))
    assert [o.address for o in topo.owners] == [
        "tcp://10.0.0.7:7000", "tcp://10.0.0.7:7001", "tcp://10.0.0.7:7002"]
    assert [topo.address_of(f"owner{i}") for i in range(3)] == [o.address for o in topo.owners]


def test_owner_overrides_apply_to_one_owner() -> None:
    topo = parse(mutate({"data_owners": {
        "count": 3, "uplink_mbps": 10, "latency_ms": 1, "memory_mb": 100, "profile": "p.csv",
        "overrides": [
            {"index": 1, "compute_scale": 2.5, "uplink_mbps": 5, "downlink_mbps": 7,
             "latency_ms": 20, "memory_mb": 64, "profile": "slow.csv", "micro_batches": 4,
             "address": "tcp://192.168.0.2:9000"},
            {"index": 2, "latency_ms": 0},
        ]}}))
    o0, o1, o2 = topo.owners
    assert (o0.compute_scale, o0.uplink_mbps, o0.downlink_mbps, o0.latency_ms) == (
        1.0, 10.0, None, 1.0)
    assert (o0.memory_mb, o0.profile, o0.micro_batches) == (100.0, "p.csv", None)
    assert o0.address == "tcp://127.0.0.1:5600"
    assert (o1.compute_scale, o1.uplink_mbps, o1.downlink_mbps, o1.latency_ms) == (
        2.5, 5.0, 7.0, 20.0)
    assert (o1.memory_mb, o1.profile, o1.micro_batches) == (64.0, "slow.csv", 4)
    assert o1.address == "tcp://192.168.0.2:9000"
    assert topo.address_of("owner1") == "tcp://192.168.0.2:9000"
    assert o2.latency_ms == 0.0 and o2.uplink_mbps == 10.0 and o2.address.endswith(":5602")


def test_relative_paths_resolved_against_the_file(tmp_path: Path) -> None:
    sub = tmp_path / "topos"
    sub.mkdir()
    doc = mutate({"dataset.root": "data/mnist", "plan.profile": "prof.csv"})
    topo = load(write(sub, doc))
    assert Path(topo.dataset.root) == sub / "data" / "mnist"
    assert Path(topo.plan.profile) == sub / "prof.csv"
    absolute = load(write(sub, mutate({"dataset.root": "/abs/data", "plan.profile": "/p.csv"})))
    assert topo.dataset.root != absolute.dataset.root
    assert absolute.dataset.root == "/abs/data" and absolute.plan.profile == "/p.csv"


def test_topology_accessors() -> None:
    topo = parse(mutate({"mode": "mpsl", "plan.cuts": [1, 2, 3], "compute_nodes": [
        {"name": "a", "address": "tcp://127.0.0.1:5590"},
        {"name": "b", "address": "tcp://127.0.0.1:5591"}]}), "t.yaml")
    assert topo.chain == ("a", "b")
    assert topo.node_names() == ["owner0", "owner1", "a", "b", "aggregator"]
    assert topo.address_of("b") == "tcp://127.0.0.1:5591"
    assert topo.address_of("aggregator") == "tcp://127.0.0.1:5550"
    assert topo.owner(1) is topo.owners[1] and topo.owner("owner0") is topo.owners[0]
    assert topo.compute("a").name == "a"
    with pytest.raises(KeyError, match="no data owner"):
        topo.owner("owner9")
    with pytest.raises(KeyError, match="no compute node"):
        topo.compute("c")
    with pytest.raises(KeyError):
        topo.address_of("nobody")


def test_fl_has_empty_chain_and_ignores_cuts() -> None:
    topo = parse(mutate({"mode": "fl", "plan.cuts": [1, 2, 3]}), "t.yaml")
    assert topo.chain == () and expected_cut_count(topo) == 0
    assert topo.node_names() == ["owner0", "owner1", "aggregator"]
    assert topo.compute_nodes[0].name == "server"  # listed, but not in the chain
    assert parse(mutate({"mode": "fl", "compute_nodes": DEL}), "t.yaml").compute_nodes == ()


@pytest.mark.parametrize(
    ("changes", "count"),
    [({}, 1), ({"labels": "local", "plan.cuts": [1, 2]}, 2), ({"mode": "sfl"}, 1),
     ({"mode": "sl"}, 1), ({"mode": "fl"}, 0),
     ({"mode": "mpsl", "plan.cuts": [1, 2]}, 2),
     ({"mode": "mpsl", "plan.cuts": [1, 2, 3, 4],
       "compute_nodes.1": {"name": "b", "address": S1},
       "compute_nodes.2": {"name": "c", "address": "tcp://127.0.0.1:5592"}}, 4)],
)
def test_expected_cut_count(changes: dict, count: int) -> None:
    assert expected_cut_count(parse(mutate(changes), "t.yaml")) == count


def test_compute_node_named_owner_is_rejected() -> None:
    with pytest.raises(TopologyError) as info:
        parse(mutate({"compute_nodes.0.name": "owner"}), "t.yaml")
    check_error(info.value, "t.yaml", "compute_nodes[0].name", "a unique name")


def test_owner_ports_up_to_65535() -> None:
    topo = parse(mutate({"data_owners": {"count": 2, "base_port": 65534}}), "t.yaml")
    assert topo.owners[-1].address == "tcp://127.0.0.1:65535"


def test_owner_ports_just_below_the_limit() -> None:
    topo = parse(mutate({"data_owners": {"count": 2, "base_port": 65533}}), "t.yaml")
    assert topo.owners[-1].address == "tcp://127.0.0.1:65534"
    assert parse(mutate({"aggregator.address": "tcp://h-1.x:65535"})).aggregator.endswith("65535")


# ----------------------------------------------------------------------------------------------
# schedule, overrides kept, paths of --set, size limit


def test_schedule_defaults_and_forms() -> None:
    from mpsl.topology import ScheduleSpec

    assert parse(copy.deepcopy(BASE), "s.yaml").schedule == ScheduleSpec("gpipe", None)
    assert parse(mutate({"schedule": "1f1b"}), "s.yaml").schedule == ScheduleSpec("1f1b", None)
    two = parse(mutate({"schedule": {"name": "1f1b", "max_in_flight": 2}}), "s.yaml")
    assert two.schedule == ScheduleSpec("1f1b", 2)


def test_load_keeps_its_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    assert load(path).overrides == ()
    assert load(path, ["training.epochs=2"]).overrides == ("training.epochs=2",)


def test_paths_given_on_the_command_line_resolve_against_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "topologies"
    sub.mkdir()
    path = write(sub, mutate({"dataset.root": "data", "plan": {"auto": True,
                                                               "profile": "prof.csv"}}))
    monkeypatch.chdir(tmp_path)
    t = load(path)
    assert t.dataset.root == str(sub / "data") and t.plan.profile == str(sub / "prof.csv")
    t = load(path, ["dataset.root=../mnist", "plan.profile=p.csv"])
    assert t.dataset.root == str(Path(tmp_path.parent, "mnist"))
    assert t.plan.profile == str(tmp_path / "p.csv")


def test_load_refuses_a_huge_file(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("#" * (2 << 20))
    with pytest.raises(TopologyError) as info:
        load(path)
    check_error(info.value, str(path), "<file>", "expected a topology file of at most 1 MiB")
