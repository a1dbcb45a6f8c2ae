"""Lost servers: a compute node, and separately the aggregator, killed with SIGKILL mid-epoch and
restarted resumes from its checkpoint of the last committed aggregation; every other node rolls
back with it; the run ends with the final weights of the same run without the kill (norm none,
same seed: exact), having redone at most one aggregation interval. A node killed while it
writes a checkpoint leaves the last one whole. A node that never comes up is named within the
timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mpsl.topology import load
from mpsl.training import iterations_per_epoch, owner_samples
from nodes.recovery import RoundStore
from tests.e2e.conftest import run_killing, topology_doc

pytestmark = pytest.mark.timeout(240)
EVERY = 8  # iterations per aggregation round


def _doc(**extra: object) -> dict:
    return topology_doc(owners=2, compute=2, training={"epochs": 3, "aggregate_every": EVERY},
                        mode="mpsl", labels="local", plan={"cuts": [1, 2, 3], "micro_batches": 3},
                        failure={"heartbeat_s": 0.25, "timeout_s": 2.0, "restart": True,
                                 "checkpoint": True},
                        runtime={"timeout_s": 30}, **extra)


def _run(tmp_path: Path, doc: dict, victim: str | None = None, after_losses: int = 0) -> dict:
    """Run `doc`; SIGKILL `victim` once the monitor has seen `after_losses` losses."""
    return run_killing(tmp_path, doc, victim, after_losses)


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, torch.Tensor]]:
    """The same run without a kill: its results and final weights."""
    tmp = tmp_path_factory.mktemp("quiet")
    results = _run(tmp, _doc())
    assert results["failures"]["rollbacks"] == []
    return results, torch.load(tmp / "run" / "model.pt", weights_only=True)


@pytest.mark.parametrize("victim, after_losses", [("node2", 38), ("aggregator", 52)])
def test_a_killed_server_resumes_from_the_last_commit(tmp_path: Path, quiet, victim: str,
                                                      after_losses: int) -> None:
    want_results, want = quiet
    results = _run(tmp_path, _doc(), victim, after_losses)
    (back,) = results["failures"]["rollbacks"]
    assert back["node"] == victim
    # the losses seen put the kill in round 2 (16 to 24 iterations per owner) or round 3
    assert back["round"] in (2, 3, 4)
    topo = load(tmp_path / "t.yaml")
    per_round = len(topo.owners) * min(EVERY, iterations_per_epoch(
        topo.training, min(owner_samples(topo))))
    assert 0 < back["redone_iterations"] <= per_round  # at most one aggregation interval
    got = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want), "weights differ from the quiet run"
    assert [e["test_accuracy"] for e in results["epochs"]] == \
        [e["test_accuracy"] for e in want_results["epochs"]]
    assert [r["round"] for r in results["rounds"]] == list(range(9))
    logs = tmp_path / "run" / "logs"
    assert f"every node rolled back to the end of round {back['round'] - 1}" in \
        (logs / "aggregator.log").read_text()
    for name in ("owner0", "owner1", "node1", "node2"):
        assert f"rolled back to the end of round {back['round'] - 1}" in \
            (logs / f"{name}.log").read_text()
    assert not list((tmp_path / "run" / "checkpoints").iterdir())  # removed at the end


def test_without_checkpoints_a_lost_compute_node_ends_the_run_naming_it(tmp_path: Path) -> None:
    """mpsl node by hand: a compute node that is frozen (SIGSTOP) is named by the aggregator."""
    doc = topology_doc(owners=1, compute=1, training={"epochs": 50},
                       failure={"heartbeat_s": 0.25, "timeout_s": 2.0},
                       runtime={"timeout_s": 30})
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    procs = {}
    log = tmp_path / "aggregator.log"
    try:
        for role, name in (("aggregator", "aggregator"), ("compute", "node1"),
                           ("data-owner", "owner0")):
            with open(log if name == "aggregator" else os.devnull, "w") as f:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "mpsl.cli", "node", "--role", role, "--topology",
                     str(path), "--name", name, "--out", str(tmp_path / "run")],
                    stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "every node said hello, starting" not in log.read_text():
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.1)
        time.sleep(1)  # some training
        os.kill(procs["node1"].pid, signal.SIGSTOP)
        procs["aggregator"].wait(timeout=30)
    finally:
        for p in procs.values():
            p.kill()
            p.wait(timeout=10)
    out = log.read_text()
    assert procs["aggregator"].returncode != 0
    assert "node1 lost: silent for 2." in out
    assert "without failure.checkpoint the run cannot go on without it" in out


def test_a_node_that_never_comes_up_is_named_within_the_timeout(tmp_path: Path) -> None:
    doc = topology_doc(owners=1, compute=1, runtime={"timeout_s": 3})
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "mpsl.cli", "node", "--role", "aggregator",
                           "--topology", str(path), "--name", "aggregator"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "no hello from ['node1', 'owner0'] within 3 s" in done.stdout + done.stderr
    assert time.monotonic() - t0 < 30


WRITER = """
import sys, torch
from nodes.recovery import RoundStore
store = RoundStore("node1", "d", sys.argv[1])
store.save(0, {"w": torch.zeros(8)}, "run")
print("saved", flush=True)
big = {"w": torch.ones(64 << 20, dtype=torch.uint8)}
r = 1
while True:  # a round's checkpoint after another, until killed
    store.save(r, big, "run")
    r += 1
"""


def test_a_node_killed_while_it_writes_a_checkpoint_leaves_the_last_one_loadable(
        tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"saved\n"
        deadline = time.monotonic() + 30
        while not any(".ckpt.tmp" in p.name for p in tmp_path.iterdir()):
            assert time.monotonic() < deadline, "the writer never started a second write"
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)  # during a write: its temporary file exists
    finally:
        proc.kill()
        proc.wait(timeout=10)
    store = RoundStore("node1", "d", tmp_path)
    rounds = store.on_disk()
    assert rounds and rounds == list(range(rounds[0], rounds[-1] + 1)) and len(rounds) <= 2
    for r in rounds:  # every round file there is whole
        w = store.load(r, "run")["w"]
        assert torch.equal(w, torch.zeros(8)) if r == 0 else int(w.sum()) == 64 << 20
