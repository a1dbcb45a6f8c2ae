"""`mpsl run` leaves no node and no bound port behind, however it ends: SIGTERM, SIGHUP (a
closed terminal), or SIGKILL (the OOM killer), with nodes forked or started as commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
import zmq

from tests.e2e.conftest import topology_doc

NODES = 4  # aggregator, node1, owner0, owner1


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
    return int(fields[1]), fields[0]


def _descendants(root: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _ppid_and_state(int(entry))) is not None:
            parents[int(entry)] = info[0]
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    info = _ppid_and_state(pid)
    return info is not None and info[1] != "Z"  # a zombie has ended


def _ports(doc: dict) -> list[int]:
    addrs = [doc["aggregator"]["address"]] + [c["address"] for c in doc["compute_nodes"]]
    base = doc["data_owners"]["base_port"]
    return [int(a.rsplit(":", 1)[1]) for a in addrs] + [base + i for i in range(2)]


def _start(tmp_path: Path, command: list[str]) -> tuple[subprocess.Popen[bytes], set[int]]:
    """Start a long run, wait until every node process exists; (launcher, its processes)."""
    proc = subprocess.Popen(command, cwd=tmp_path, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    logs = tmp_path / "run" / "logs"
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        kids = _descendants(proc.pid)
        if len(list(logs.glob("*.log"))) == NODES and len(kids) >= NODES:
            time.sleep(2.0)  # the nodes bind their inboxes and say hello
            return proc, _descendants(proc.pid)
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the nodes did not start within 60 s")


def _long_run(tmp_path: Path) -> dict:
    doc = topology_doc(owners=2, training={"epochs": 500})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(doc))
    return doc


def _assert_all_stopped(pids: set[int], doc: dict, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    left = sorted(p for p in pids if _alive(p))
    for p in left:  # never leave them behind, even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"processes still running {within_s} s after the launcher ended: {left}"
    for port in _ports(doc):  # as the next run's node binds it (ZeroMQ reuses TIME_WAIT)
        with zmq.Context() as ctx, ctx.socket(zmq.PULL) as sock:
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(f"tcp://127.0.0.1:{port}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=["SIGTERM", "SIGHUP", "SIGKILL"])
def test_mpsl_run_stops_every_node_on_any_signal(tmp_path: Path, sig: signal.Signals) -> None:
    doc = _long_run(tmp_path)
    proc, pids = _start(tmp_path, [sys.executable, "-m", "mpsl.cli", "run", "t.yaml",
                                   "--out", "run", "--quiet"])
    assert len(pids) > NODES  # the fork server and its nodes
    proc.send_signal(sig)
    code = proc.wait(timeout=20)
    _assert_all_stopped(pids, doc)
    stderr = proc.stderr.read().decode() if proc.stderr else ""  # its writers have all ended
    if sig is signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 128 + sig, stderr
        assert f"stopped by {sig.name}: every node was stopped" in stderr


SUBPROCESS_LAUNCHER = """
import sys
from mpsl.plan import make_plan
from mpsl.topology import load
from mpsl.training import num_layers
from nodes.launch import LocalCluster
topo = load("t.yaml")
LocalCluster("t.yaml", [], topo, make_plan(topo, num_layers(topo)), "run",
             method="subprocess").run()
"""


def test_nodes_started_as_commands_end_with_a_killed_launcher(tmp_path: Path) -> None:
    doc = _long_run(tmp_path)
    proc, pids = _start(tmp_path, [sys.executable, "-c", SUBPROCESS_LAUNCHER])
    proc.kill()
    proc.wait(timeout=20)
    _assert_all_stopped(pids, doc)
