"""Tests of bench.harness's pure parts: topology documents, tables, steal, result headers."""

from __future__ import annotations

from typing import Any

import pytest

from bench import harness


def doc(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"owners": 2, "compute": 1, "mode": "pipar",
                            "dataset": {"name": "synthetic"}, "training": {"epochs": 1},
                            "up": 10.0, "down": 25.0, "ports": [7001, 7002, 7003, 7004]}
    args.update(kw)
    return harness.topology(**args)


def test_topology_places_nodes_on_the_given_ports() -> None:
    d = doc()
    assert d["compute_nodes"] == [{"name": "node1", "address": "tcp://127.0.0.1:7001"}]
    assert d["aggregator"] == {"address": "tcp://127.0.0.1:7002"}
    assert d["data_owners"]["base_port"] == 7003
    assert d["data_owners"]["count"] == 2
    assert d["plan"] == {"cuts": [2], "micro_batches": 1}
    assert "schedule" not in d
    assert doc(schedule="1f1b")["schedule"] == "1f1b"


def test_topology_documents_load() -> None:
    topo = harness.parse_doc(doc(dataset={"name": "synthetic", "options": {"size": 64}},
                                 training={"epochs": 1, "batch_size": 8}))
    assert [o.name for o in topo.owners] == ["owner0", "owner1"]
    assert list(topo.chain) == ["node1"]
    assert topo.schedule.name == "gpipe"
    assert harness.parse_doc(doc(schedule="1f1b")).schedule.name == "1f1b"


def test_markdown_formats_floats() -> None:
    rows: list[dict[str, Any]] = [{"a": 1.23456, "b": "x"}, {"a": 2, "b": True}]
    assert harness.markdown(rows, 2) == "| a | b |\n|---|---|\n| 1.23 | x |\n| 2 | True |"


def test_steal_pct() -> None:
    assert harness.steal_pct((10, 1000), (30, 1200)) == pytest.approx(10.0)
    assert harness.steal_pct((0, 0), (0, 0)) == 0.0


def test_header_names_command_commit_machine_and_steal() -> None:
    meta = {"date": "2026-12-05T10:00:00+00:00", "commit": "abc1234", "machine": "CPU, 2 cores",
            "load_1min": {"start": 0.5, "max": 2.25}, "steal_pct": {"median": 0.0, "max": 0.3},
            "wall_s": 61.4}
    assert harness.header(meta, "python -m bench.x") == (
        "`python -m bench.x`: 2026-12-05T10:00:00+00:00, commit abc1234, CPU, 2 cores.\n"
        "1-min load 0.50 at the start, max 2.25; CPU steal per run median 0.0%, max 0.3%; "
        "whole run 61 s.\n\n")
    short = {k: meta[k] for k in ("date", "commit", "machine")}
    assert harness.header(short, "c") == f"`c`: {meta['date']}, commit abc1234, CPU, 2 cores.\n\n"


def test_synthetic_leaves_the_default_shape_out() -> None:
    assert harness.synthetic(640) == {"name": "synthetic",
                                      "options": {"num_classes": 10, "size": 640}}
    assert harness.synthetic(64, (1, 8, 8), 5, test_samples=16) == {
        "name": "synthetic", "options": {"num_classes": 5, "size": 64, "shape": [1, 8, 8]},
        "test_samples": 16}
