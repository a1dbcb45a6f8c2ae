"""`mpsl run --netns` without root or namespaces: one line before any node starts; and how the
launcher starts a node in its namespace (no namespace is made here)."""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import nodes.launch
import nodes.netns
from mpsl.plan import make_plan
from mpsl.topology import load
from mpsl.training import num_layers
from nodes.launch import LocalCluster
from nodes.netns import Capabilities
from tests.mpsl.cli.conftest import write


@pytest.fixture
def no_cluster(monkeypatch):
    started = []
    monkeypatch.setattr(nodes.launch, "LocalCluster", lambda *a, **k: started.append(a))
    return started


def test_refused_in_one_line_before_any_node_starts(cli, tmp_path, monkeypatch, no_cluster):
    reason = "--netns needs root (network namespaces and tc); run as root, or without --netns"
    monkeypatch.setattr(nodes.netns, "probe", lambda: Capabilities(reason))
    line = cli.error("run", write(tmp_path), "--netns", "--quiet")
    assert line == f"error: {reason}"
    assert no_cluster == []


def cluster_of(tmp_path: Path, method: str) -> LocalCluster:
    path = write(tmp_path)
    topo = load(path)
    return LocalCluster(path, [], topo, make_plan(topo, num_layers(topo)), tmp_path / "run",
                        method=method, netns={"server": "mpsl-abcdef-1"},
                        monitor_host="10.213.0.1")


def test_a_node_command_runs_under_ip_netns_exec(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = cluster_of(tmp_path, "subprocess")
    cluster.monitor = "tcp://10.213.0.1:4000"
    seen = []

    def popen(cmd, **kw):
        seen.append(cmd)
        return SimpleNamespace(pid=1)

    monkeypatch.setattr(nodes.launch.subprocess, "Popen", popen)
    (tmp_path / "run").mkdir()
    cluster._spawn("compute", "server", tmp_path / "run" / "server.log")
    cluster._spawn("aggregator", "aggregator", tmp_path / "run" / "aggregator.log")
    assert seen[0][:5] == ["ip", "netns", "exec", "mpsl-abcdef-1", sys.executable]
    assert seen[1][0] == sys.executable  # no namespace given: started as it is
    assert "tcp://10.213.0.1:4000" in seen[0]


def test_a_forked_node_enters_its_namespace(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = cluster_of(tmp_path, "forkserver")
    made = []

    class Process:
        def __init__(self, target, name, daemon, args):
            made.append((target, args))

        def start(self):
            pass

    monkeypatch.setattr(nodes.launch, "_forkserver", lambda: SimpleNamespace(Process=Process))
    cluster._spawn("compute", "server", tmp_path / "server.log")
    cluster._spawn("aggregator", "aggregator", tmp_path / "aggregator.log")
    assert made[0][0] is nodes.launch._node_main
    netns = [inspect.signature(target).bind(*args).arguments.get("netns")
             for target, args in made]
    assert netns == ["mpsl-abcdef-1", None]


def test_enter_names_a_missing_namespace() -> None:
    if os.path.isdir("/run/netns") and os.path.exists("/run/netns/mpsl-nosuch-0"):
        pytest.skip("a namespace mpsl-nosuch-0 exists")
    with pytest.raises(FileNotFoundError, match="mpsl-nosuch-0"):
        nodes.netns.enter("mpsl-nosuch-0")
