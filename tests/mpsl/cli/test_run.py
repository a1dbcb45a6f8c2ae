"""`mpsl run` without processes (a stand-in cluster): warnings before any node starts, the
JSON summary, one-line errors of a failed run."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

import nodes.launch
from nodes.launch import LaunchError
from tests.mpsl.cli.conftest import profile_csv, write

NODE = {"busy_s": 1.0, "idle_s": 0.5, "peak_rss_bytes": 2e8, "peak_tensor_bytes": 1e6,
        "state_bytes": 1e5, "activation_peak_bytes": 1e5, "rejected_messages": 0}
RESULTS = {
    "topology": "cli", "mode": "pipar", "plan": {"cuts": [2]},
    "epochs": [{"epoch": 1, "wall_s": 1.5, "train_loss": 2.0, "test_accuracy": 0.3,
                "test_loss": 2.1}],
    "nodes": {"owner0": NODE, "owner1": NODE, "server": NODE,
              "aggregator": {**NODE, "rejected_messages": 2}},
    "links": {"owner0->server": {"bytes": 1000, "busy_s": 0.1}},
    "summary": {"train_s": 1.5, "bottleneck": "owner0", "bottleneck_busy_s": 1.0,
                "time_over_bound": 1.5, "final_test_accuracy": 0.3,
                "samples_per_owner": [128, 128], "rejected_messages": 2},
}


@pytest.fixture
def cluster(monkeypatch, capsys):
    """A LocalCluster that runs nothing: it keeps what stderr said before it started."""
    seen = SimpleNamespace(before=None, args=None, error=None)

    class Cluster:
        def __init__(self, *args, **kw):
            seen.args = args

        def run(self, on_message=None):
            seen.before = capsys.readouterr()
            if seen.error is not None:
                raise seen.error
            on_message(SimpleNamespace(meta={"type": "start", "t": 0.0, "epochs": 1,
                                             "iterations": [8, 8]}))
            return RESULTS

    monkeypatch.setattr(nodes.launch, "LocalCluster", Cluster)
    return seen


def test_run_json_is_the_summary(cli, cluster, tmp_path):
    out = tmp_path / "run"
    js = cli.json("run", write(tmp_path), "--out", out, "--quiet", "--set", "training.epochs=1")
    assert set(js) == {"run_dir", "plan", "warnings", "epochs", "nodes", "links", "summary"}
    assert js["run_dir"] == str(out) and js["summary"]["rejected_messages"] == 2
    assert "aggregator" in js["nodes"] and js["warnings"] == []
    # what a person watches went to stderr, before the nodes started
    assert "plan: owner[0:2) -> server[2:4), N=2" in cluster.before.err
    assert cluster.before.out == ""
    assert cluster.args[1] == ["training.epochs=1"] and cluster.args[4] == out


def test_run_table(cli, cluster, tmp_path):
    rc, out, err = cli("run", write(tmp_path), "--out", tmp_path / "run", "--quiet")
    assert rc == 0 and err == ""
    assert "plan: owner[0:2) -> server[2:4), N=2" in cluster.before.out
    assert "time / bottleneck bound" in out and "aggregator" in out
    assert re.search(r"rejected messages +│ 2 ", out) and "…" not in out


def test_run_warns_before_any_node_starts(cli, cluster, tmp_path):
    path = write(tmp_path, dataset={"name": "digits", "samples_per_owner": 1000},
                 training={"batch_size": 700, "epochs": 1},
                 data_owners={"count": 3, "memory_mb": 0.01})
    rc, out, err = cli("run", path, "--out", tmp_path / "run", "--quiet", "--format", "json")
    assert rc == 0
    said = cluster.before.err.splitlines()
    warned = [ln for ln in said if ln.startswith("warning: ")]
    assert said[:5] == warned  # first, then the run's header
    assert warned[:2] == [
        "warning: training.batch_size (700) is larger than the data of owner0 (480 samples), "
        "owner1 (479 samples), owner2 (479 samples): every epoch there is one partial batch",
        "warning: dataset.samples_per_owner (1000) is more than the owners get: digits has "
        "1438 training samples for 3 owner(s), 479 to 480 each"]
    memory = warned[2:5]
    assert [w.split(": ")[1] for w in memory] == ["owner0", "owner1", "owner2"]
    for w in memory:
        estimate = float(re.search(r"needs about ([0-9.]+) MB \(parameters", w).group(1))
        assert estimate > 0.01 and w.endswith("more than its memory_mb 0.01")
    assert len(warned) == 5 and len(json.loads(out)["warnings"]) == 5


def test_a_failed_run_is_one_line_and_exit_1(cli, cluster, tmp_path):
    cluster.error = LaunchError("node owner1 failed (exit 1); its log /x/owner1.log:\n"
                                "Traceback (most recent call last):\n  File ...\n"
                                "ValueError: boom")
    line = cli.error("run", write(tmp_path), "--quiet", "--out", tmp_path / "r", code=1)
    assert line == ("error: node owner1 failed (exit 1); its log /x/owner1.log: ... "
                    "ValueError: boom")


def test_run_with_a_profile_says_what_the_fleet_asks_of_this_hosts_cores(cli, cluster, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr("planner.hostload.host_cores", lambda: 64)
    prof = profile_csv(tmp_path)
    rc, out, err = cli("run", write(tmp_path), "--out", tmp_path / "run", "--quiet",
                       "--profile", prof)
    assert rc == 0 and err == ""
    said = cluster.before.out.splitlines()
    line = said[said.index("plan: owner[0:2) -> server[2:4), N=2") + 1]
    assert re.fullmatch(r"this host: the nodes' passes take \S+ CPU s per epoch at this host's "
                        r"speed: on its 64 core\(s\) an epoch lasts at least \S+ s \(\d+% of "
                        r"the \S+ s estimated\)", line), line


def test_run_warns_where_this_host_cannot_run_the_fleet_at_its_speed(cli, cluster, tmp_path,
                                                                    monkeypatch):
    """One core and instant links: the epoch's passes cannot fit in the estimated epoch."""
    monkeypatch.setattr("planner.hostload.host_cores", lambda: 1)
    doc = write(tmp_path, data_owners={"count": 2})
    js = cli.json("run", doc, "--out", tmp_path / "run", "--quiet", "--profile",
                  profile_csv(tmp_path))
    assert len(js["warnings"]) == 1
    assert js["warnings"][0].startswith("this host cannot run the fleet at its devices' speed: "
                                        "the nodes' passes take ")
    assert js["warnings"][0].endswith("the run will time this host, not the fleet")


def test_run_with_a_fixed_plan_and_no_profile_measures_nothing(cli, cluster, tmp_path,
                                                               monkeypatch):
    def measured(*args, **kw):
        raise AssertionError("profiled this host")

    monkeypatch.setattr("planner.resources.host_profile", measured)
    rc, out, err = cli("run", write(tmp_path), "--out", tmp_path / "run", "--quiet")
    assert rc == 0 and "this host" not in cluster.before.out + cluster.before.err


def test_run_that_plans_measures_this_host_once_and_says_its_load(cli, cluster, tmp_path,
                                                                  monkeypatch):
    from planner.profile import Profile

    calls = []

    def measured(topo, repeats=3, device="cpu"):
        calls.append(device)
        return Profile.synthetic(4)

    monkeypatch.setattr("planner.resources.host_profile", measured)
    monkeypatch.setattr("planner.hostload.host_cores", lambda: 64)
    rc, out, err = cli("run", write(tmp_path, plan={"auto": True, "micro_batches": 2}),
                       "--out", tmp_path / "run", "--quiet")
    assert rc == 0 and calls == ["cpu"]
    said = cluster.before.out + cluster.before.err
    assert "profiling mlp on this host to plan (plan: auto)..." in said
    assert "this host: the nodes' passes take " in said
