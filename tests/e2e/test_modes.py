"""Every mode trains on digits; `mpsl node` processes train together; results are complete."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from mpsl.plan import make_plan
from mpsl.topology import load
from mpsl.training import num_layers
from nodes.launch import LocalCluster
from tests.e2e.conftest import topology_doc

MODES = {
    "fl": dict(mode="fl"),
    "sfl": dict(mode="sfl", plan={"cuts": [2], "micro_batches": 1}),
    "pipar": dict(mode="pipar", plan={"cuts": [2], "micro_batches": 4}),
    "sl": dict(mode="sl", plan={"cuts": [2], "micro_batches": 1}),
    "mpsl": dict(mode="mpsl", labels="local", plan={"cuts": [1, 2, 3], "micro_batches": 2}),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_learns_digits(run_topology, mode):
    doc = topology_doc(owners=3, compute=2 if mode == "mpsl" else 1,
                       training={"epochs": 3, "lr": 0.1}, **MODES[mode])
    results, out = run_topology(doc)
    accuracy = [e["test_accuracy"] for e in results["epochs"]]
    assert accuracy[-1] > 0.5, f"{mode}: test accuracy {accuracy} (chance is 0.1)"
    assert results["epochs"][-1]["train_loss"] < results["epochs"][0]["train_loss"]
    # the record is complete: every node, busy <= wall, links carry bytes, model loads safely
    names = {f"owner{k}" for k in range(3)} | set(load_chain(doc)) | {"aggregator"}
    assert set(results["nodes"]) == names
    wall = results["summary"]["train_s"]
    for name, node in results["nodes"].items():
        # SL hands the owner part on without averaging: its aggregator does nothing timed
        idle_allowed = name == "aggregator" and mode == "sl"
        assert node["busy_s"] >= 0 if idle_allowed else node["busy_s"] > 0, name
        assert node["busy_s"] <= wall + 1e-6, name
        assert node["peak_rss_bytes"] > node["peak_tensor_bytes"] > 0
        assert node["rejected_messages"] == 0, name
    assert results["summary"]["rejected_messages"] == 0
    assert results["summary"]["time_over_bound"] >= 1
    if mode != "fl":
        assert results["links"]["owner0->node1"]["bytes"] > 0
    state = torch.load(out / "model.pt", weights_only=True)
    assert len(state) > 0
    assert (out / "events.jsonl").stat().st_size > 0
    assert (out / "results.csv").read_text().startswith("section,name,key,value")


def load_chain(doc: dict) -> list[str]:
    return [] if doc["mode"] == "fl" else [c["name"] for c in doc["compute_nodes"]]


def test_mpsl_node_processes_train_to_the_end(tmp_path):
    """Every node started as its own `mpsl node` command, as on separate machines."""
    doc = topology_doc(owners=2, compute=2, mode="mpsl", labels="local",
                       plan={"cuts": [1, 2, 3], "micro_batches": 2},
                       training={"max_iterations": 3})
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    topo = load(path)
    cluster = LocalCluster(str(path), (), topo, make_plan(topo, num_layers(topo)),
                           tmp_path / "run", method="subprocess")
    results = cluster.run()
    assert len(results["epochs"]) == 1
    assert set(results["nodes"]) == {"owner0", "owner1", "node1", "node2", "aggregator"}


def test_mpsl_run_command_end_to_end(tmp_path):
    """The CLI as a user runs it: `mpsl run TOPOLOGY --set ... --out DIR`, then `mpsl report`."""
    doc = topology_doc(owners=2, training={"max_iterations": 2})
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mpsl.cli", "run", str(path), "--out", str(out), "--quiet",
           "--set", "training.epochs=2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "plan: owner[0:2) -> node1[2:4), N=4" in done.stdout
    assert "epoch 2/2" in done.stdout
    results = json.loads((out / "results.json").read_text())
    assert [e["epoch"] for e in results["epochs"]] == [1, 2]
    report = subprocess.run([sys.executable, "-m", "mpsl.cli", "report", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stdout + report.stderr
    assert (out / "timeline.png").stat().st_size > 0
    assert (out / "curves.png").stat().st_size > 0


def test_run_rejects_a_bad_topology_in_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(topology_doc(training={"batch_size": 0})))
    done = subprocess.run([sys.executable, "-m", "mpsl.cli", "run", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    line = f"{path}: field 'training.batch_size': got 0, expected an integer >= 1"
    assert any(line in text for text in done.stderr.splitlines()), done.stderr  # one line


def test_plan_auto_plans_before_running(tmp_path):
    """`plan: auto`: `mpsl run` profiles, plans, prints the ranked candidates, runs the best."""
    doc = topology_doc(owners=2, training={"max_iterations": 2}, plan="auto")
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mpsl.cli", "run", str(path), "--out", str(out), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((out / "results.json").read_text())
    plan = json.loads((out / "plan.json").read_text())
    assert results["plan"]["cuts"] == plan["cuts"] and len(plan["cuts"]) == 1
    assert 1 <= plan["micro_batches"][0] <= 30
    assert "bottleneck" in done.stdout.lower()
