"""Nodes started by hand with different settings refuse to train, naming the field; a run's
messages carry its id, and the results name it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.e2e.conftest import topology_doc


def _node(role: str, name: str, topo: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "mpsl.cli", "node", "--role", role,
                                 "--topology", str(topo), "--name", name], stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def test_a_node_with_other_settings_stops_the_run_naming_the_field(tmp_path: Path) -> None:
    doc = topology_doc(owners=2, runtime={"timeout_s": 20})
    same, other = tmp_path / "same.yaml", tmp_path / "other.yaml"
    same.write_text(yaml.safe_dump(doc))
    doc["training"]["epochs"] = 2
    other.write_text(yaml.safe_dump(doc))
    nodes = [("aggregator", "aggregator", same), ("compute", "node1", same),
             ("data-owner", "owner0", same), ("data-owner", "owner1", other)]
    procs = {name: _node(role, name, path, tmp_path / f"{name}.log")
             for role, name, path in nodes}
    try:
        codes = {"aggregator": procs["aggregator"].wait(timeout=60)}
        # the others stop once aborted, not after draining to a gone aggregator (timeout 20 s)
        codes.update({name: p.wait(timeout=15) for name, p in procs.items()})
    finally:
        for p in procs.values():
            p.kill()
    reason = "owner1's settings differ from the aggregator's: training.epochs is 2 there, 1 here"
    assert codes == dict.fromkeys(procs, 1)  # every node stops, none trains
    assert f"error: {reason}" in (tmp_path / "aggregator.log").read_text()
    for name in ("node1", "owner0", "owner1"):
        assert f"aborted by aggregator: {reason}" in (tmp_path / f"{name}.log").read_text()


def test_the_run_id_is_in_the_results(run_topology) -> None:
    results, _ = run_topology(topology_doc(owners=1, training={"max_iterations": 2}))
    assert len(results["run_id"]) == 16 and int(results["run_id"], 16) >= 0
