"""Lost devices: a data owner killed with SIGKILL mid-epoch is declared lost by name, the
aggregation goes on over the owners present (weighted by their samples), the owner is restarted
and rejoins at the next aggregation with the global model, and the run finishes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import run_killing, topology_doc

pytestmark = pytest.mark.timeout(180)


def _run_killing(tmp_path: Path, doc: dict, victim: str, after_losses: int) -> dict:
    """Run `doc`, SIGKILL `victim` once the aggregator has seen `after_losses` of its losses."""
    return run_killing(tmp_path, doc, victim, after_losses, of_victim=True)


def test_an_owner_killed_mid_epoch_is_left_out_then_rejoins(tmp_path: Path) -> None:
    doc = topology_doc(owners=3, training={"epochs": 4},
                       failure={"heartbeat_s": 0.25, "timeout_s": 2.0, "restart": True},
                       runtime={"timeout_s": 30})
    results = _run_killing(tmp_path, doc, "owner1", after_losses=3)
    samples = results["partition"]["samples"]
    lost = results["failures"]["lost"]
    assert [(e["node"], e["round"]) for e in lost] == [("owner1", 0)]
    # restarted at once, it says hello before its silence reaches the timeout
    assert lost[0]["why"] == "restarted" or lost[0]["silent_s"] > 2.0
    rejoined = results["failures"]["rejoined"]
    assert [(e["node"], e["round"]) for e in rejoined] == [("owner1", 1)]
    rounds = results["rounds"]
    assert [r["owners"] for r in rounds] == [[0, 2], [0, 1, 2], [0, 1, 2], [0, 1, 2]]
    assert rounds[0]["weights"] == pytest.approx(
        [samples[0] / (samples[0] + samples[2]), samples[2] / (samples[0] + samples[2])])
    assert rounds[1]["weights"] == pytest.approx([s / sum(samples) for s in samples])
    assert results["summary"]["final_test_accuracy"] > 0.6  # 0.74 without the kill
    log = (tmp_path / "run" / "logs" / "aggregator.log").read_text()
    assert "owner1 lost: " in log and "owner1 rejoins at round 1" in log


def test_an_owner_that_dies_for_good_is_left_out_to_the_end(tmp_path: Path) -> None:
    doc = topology_doc(owners=2, training={"epochs": 2},
                       failure={"heartbeat_s": 0.25, "timeout_s": 2.0},
                       runtime={"timeout_s": 30})
    results = _run_killing(tmp_path, doc, "owner0", after_losses=2)
    lost = results["failures"]["lost"]
    assert [(e["node"], e["round"]) for e in lost] == [("owner0", 0)]
    assert lost[0]["why"].startswith("silent for") and 2.0 < lost[0]["silent_s"] < 4.0
    assert results["failures"]["rejoined"] == []
    assert [r["owners"] for r in results["rounds"]] == [[1], [1]]
    assert [r["weights"] for r in results["rounds"]] == [[1.0], [1.0]]


def test_a_run_that_loses_its_last_owner_names_the_owner_that_failed(tmp_path: Path) -> None:
    """The aggregator fails once no owner is left; the launcher's error names the owner that
    had failed before it, with its log and the log's last line, not the aggregator alone."""
    from nodes.launch import LaunchError

    doc = topology_doc(owners=1, training={"epochs": 2},
                       failure={"heartbeat_s": 0.25, "timeout_s": 2.0},
                       runtime={"timeout_s": 30})
    with pytest.raises(LaunchError) as err:
        _run_killing(tmp_path, doc, "owner0", after_losses=2)
    text = str(err.value)
    assert text.startswith("node aggregator failed (exit 1)")
    assert f"owner0 had failed before it (exit -9; its log {tmp_path}/run/logs/owner0.log)" \
        in text
    assert "every data owner is lost" in text


def test_a_straggler_is_left_out_of_the_rounds_it_is_late_for(run_topology) -> None:
    """owner2's uplink is slow: with min_owners 2 and a short deadline every round closes
    without it, its late updates (those that come before the end) are dropped as past rounds,
    it goes on from each new global model, and the run ends without waiting for it."""
    doc = topology_doc(owners=3, training={"epochs": 3, "max_iterations": 6},
                       data_owners={"count": 3, "overrides": [{"index": 2,
                                                               "uplink_mbps": 2}]},
                       failure={"heartbeat_s": 0.25, "timeout_s": 10.0, "min_owners": 2,
                                "deadline_s": 0.2},
                       runtime={"timeout_s": 30})
    results, _ = run_topology(doc)
    rounds = results["rounds"]
    assert [r["owners"] for r in rounds] == [[0, 1]] * 3
    assert [r["late"] for r in rounds] == [[2]] * 3
    assert [r["weights"] for r in rounds][0] == pytest.approx(
        [n / sum(results["partition"]["samples"][:2]) for n in results["partition"]["samples"][:2]])
    assert [(e["node"], e["round"]) for e in results["failures"]["late"]] == \
        [("owner2", 0), ("owner2", 1), ("owner2", 2)]
    assert results["failures"]["lost"] == []
    done = len([r for r in results["losses"] if r["owner"] == 2]) // 6  # its rounds done
    assert results["nodes"]["aggregator"]["dropped"].get("past round", 0) <= done
    assert "owner2" in results["nodes"]  # done, or stopped while behind: its summary came
