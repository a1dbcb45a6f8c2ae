"""Online re-planning over real sockets: a bandwidth change during the run triggers exactly one
re-plan and the switch to its plan; training goes on, and the model is the one a run without
the change trains (bitwise when the re-plan keeps the plan; to float rounding when the cut
moves, since splitting does not change the function). Per-owner plans: a change on one owner's
link moves that owner's cut only."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from mpsl.plan import Plan, make_plan
from mpsl.topology import load
from mpsl.training import num_layers
from nodes.launch import LocalCluster
from planner.replan import replanner_for
from tests.e2e.conftest import topology_doc

pytestmark = pytest.mark.timeout(240)
SLOW = os.environ.get("MPSL_SLOW") == "1"
CHANGE = [{"at_s": 0.1, "uplink_mbps": 5}]  # from 50 Mbps: a drift of 90%, early in the run
# owner0's uplink alone: with every owner's changed, an owner that has sent nothing since the
# change when the first round ends still reads its old rate there and re-plans a round later
# (about 1 run in 10 on a loaded host), so "one re-plan" would hang on the owners' timing
OWNER0 = {"owner": 0, "steps": CHANGE}


def run(folder: Path, replan: dict[str, Any] | None, schedule: list[dict[str, Any]] | None,
        owners: int = 2, owner_cuts: dict[int, tuple[int, ...]] | None = None,
        compute: int = 1, **extra: Any) -> tuple[dict[str, Any], Path]:
    """A small run (mlp on digits, 2 owners, 3 epochs of rounds of 4 iterations) at 50 Mbps;
    `schedule`: every owner's, or (`{"owner": k, "steps": [...]}`) owner k's alone;
    `owner_cuts`: the first plan's per-owner cuts."""
    link: dict[str, Any] = {"uplink_mbps": 50, "downlink_mbps": 50}
    if isinstance(schedule, dict):
        link["overrides"] = [{"index": schedule["owner"], "bandwidth_schedule": schedule["steps"]}]
    elif schedule is not None:
        link["bandwidth_schedule"] = schedule
    doc = topology_doc(owners, compute, training={"epochs": 3, "aggregate_every": 4},
                       data_owners=link, **extra)
    if replan is not None:
        doc["replan"] = {"window_s": 0.5, **replan}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    topo = load(path)
    plan: Plan = make_plan(topo, num_layers(topo), owner_cuts=owner_cuts)
    cluster = LocalCluster(str(path), (), topo, plan, folder / "run",
                           replanner=replanner_for(topo))
    return cluster.run(), folder / "run"


def weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model.pt", weights_only=True)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The model of the same run without any change of bandwidth."""
    results, out = run(tmp_path_factory.mktemp("base"), None, None)
    assert "replans" not in results
    return weights(out)


def measured_at(why: str, link: str) -> float:
    """The rate a re-plan's `why` gives `link` (`owner1 uplink 5 Mbps, assumed 50`), where the
    rate assumed was 50 Mbps: a measured rate, so within a percent of the emulated one, not
    to the letter (a message that straddles the change reads 5.01)."""
    got = re.search(rf"{re.escape(link)} ([0-9.]+) Mbps, assumed 50\b", why)
    assert got is not None, why
    return float(got.group(1))


def plan_events(out: Path) -> list[dict[str, Any]]:
    lines = (out / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["action"] == "PLAN"]


def test_a_change_triggers_one_replan_that_moves_the_cut(
        tmp_path: Path, baseline: dict[str, torch.Tensor]) -> None:
    results, out = run(tmp_path, {"planner": "fixed", "cuts": [1]}, OWNER0)
    (replan,) = results["replans"]
    assert replan["switched"] and replan["old"]["cuts"] == [2] and replan["new"]["cuts"] == [1]
    assert measured_at(replan["why"], "uplink") == pytest.approx(5.0, rel=0.01)
    assert replan["planning_s"] >= 0 and replan["switch_s"] > 0 and replan["t_s"] >= 0.1
    assert 0 <= replan["round"] < 17 and len(results["epochs"]) == 3  # training went on
    assert results["plan"]["cuts"] == [1]
    assert results["bandwidth"]["owner0"] == [{"at_s": 0.1, "uplink_mbps": 5.0,
                                               "downlink_mbps": 50.0}]
    nodes = {e["node"] for e in plan_events(out)}  # the switch is on the timeline
    assert nodes == {"aggregator", "node1", "owner0", "owner1"}
    got = weights(out)
    for k, want in baseline.items():  # the same function, split elsewhere for a while
        torch.testing.assert_close(got[k], want, rtol=1e-4, atol=1e-5, msg=k)


def test_a_replan_that_keeps_the_plan_keeps_the_weights(
        tmp_path: Path, baseline: dict[str, torch.Tensor]) -> None:
    results, out = run(tmp_path, {"planner": "fixed"}, OWNER0)
    (replan,) = results["replans"]
    assert replan["switched"] and replan["old"] == replan["new"]
    got = weights(out)
    assert got.keys() == baseline.keys()
    for k, want in baseline.items():  # the full switch, and not a bit changed
        assert torch.equal(got[k], want), k


@pytest.mark.skipif(not SLOW, reason="the planner measures this host: MPSL_SLOW=1")
def test_the_planner_replans_once_at_the_measured_rates(tmp_path: Path) -> None:
    results, _ = run(tmp_path, {}, OWNER0)
    (replan,) = results["replans"]
    assert replan["measured_mbps"]["owner0 uplink"] == pytest.approx(5.0, rel=1e-3)
    assert len(results["epochs"]) == 3


@pytest.mark.skipif(not SLOW, reason="a longer run: MPSL_SLOW=1")
def test_u_shape_switch_moves_layers_both_ways(tmp_path: Path) -> None:
    results, out = run(tmp_path, {"planner": "fixed", "cuts": [1, 2]}, OWNER0,
                       mode="mpsl", labels="local", plan={"cuts": [2, 3],
                                                           "micro_batches": 2})
    (replan,) = results["replans"]
    assert replan["new"]["cuts"] == [1, 2] and len(results["epochs"]) == 3
    assert {e["node"] for e in plan_events(out)} == {"aggregator", "node1", "owner0", "owner1"}


ONE_OWNER = {"owner": 1, "steps": CHANGE}  # owner1's uplink alone: 50 -> 5 Mbps
OWNER1 = [{"owner": 1, "cuts": [1]}]


def moved(results: dict[str, Any]) -> dict[str, Any]:
    """The run's one re-plan, checked to come from owner1's link alone."""
    (replan,) = results["replans"]
    assert measured_at(replan["why"], "owner1 uplink") == pytest.approx(5.0, rel=0.01)
    assert "owner0" not in replan["why"]
    assert replan["switched"] and len(results["epochs"]) == 3  # training went on
    return dict(replan)


def test_a_change_on_one_owners_link_moves_that_owners_cut_only(
        tmp_path: Path, baseline: dict[str, torch.Tensor]) -> None:
    results, out = run(tmp_path, {"planner": "fixed", "owner_cuts": OWNER1}, ONE_OWNER)
    replan = moved(results)
    assert replan["old"]["cuts"] == [2] and "owner_cuts" not in replan["old"]
    assert replan["new"]["cuts"] == [2] and replan["new"]["owner_cuts"] == OWNER1
    assert results["plan"] == replan["new"]
    assert {e["node"] for e in plan_events(out)} == {"aggregator", "node1", "owner0", "owner1"}
    got = weights(out)  # one cut tuple for all, then owner1's own: the same function
    for k, want in baseline.items():
        torch.testing.assert_close(got[k], want, rtol=1e-4, atol=1e-5, msg=k)


@pytest.fixture(scope="module")
def owner_baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The model of a run with owner1's own cut (1, the others 2), without any change."""
    _, out = run(tmp_path_factory.mktemp("owners"), None, None, owner_cuts={1: (1,)})
    return weights(out)


def test_a_per_owner_replan_that_keeps_every_owners_plan_keeps_the_weights(
        tmp_path: Path, owner_baseline: dict[str, torch.Tensor]) -> None:
    results, out = run(tmp_path, {"planner": "fixed"}, ONE_OWNER, owner_cuts={1: (1,)})
    replan = moved(results)
    assert replan["old"] == replan["new"] and replan["new"]["owner_cuts"] == OWNER1
    got = weights(out)
    assert got.keys() == owner_baseline.keys()
    for k, want in owner_baseline.items():  # the per-owner switch, and not a bit changed
        assert torch.equal(got[k], want), k


@pytest.mark.skipif(not SLOW, reason="a longer run: MPSL_SLOW=1")
def test_per_owner_cuts_back_to_one_cut_tuple_for_all(
        tmp_path: Path, baseline: dict[str, torch.Tensor]) -> None:
    results, out = run(tmp_path, {"planner": "fixed", "cuts": [2]}, ONE_OWNER,
                       owner_cuts={1: (1,)})
    replan = moved(results)
    assert replan["old"]["owner_cuts"] == OWNER1 and "owner_cuts" not in replan["new"]
    got = weights(out)
    for k, want in baseline.items():
        torch.testing.assert_close(got[k], want, rtol=1e-4, atol=1e-5, msg=k)


def synthetic_profile(path: Path) -> Path:
    """A profile of the mlp (4 layers) with round numbers, so that the planner needs no
    measurement and chooses the same plan on any host."""
    header = ["layer", "name", "batch", "fwd_s", "bwd_s", "opt_s", "out_bytes", "param_bytes",
              "act_bytes", "wake_fwd_s", "wake_bwd_s", "step_s", "wake_step_s"]
    outs, params = [256, 256, 128, 40], [16640, 16640, 8320, 1320]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for layer in range(4):
            for b in (1, 2, 4, 8, 16, 30):
                w.writerow([layer, f"fc{layer}", b, 2e-4 + 2e-5 * b, 4e-4 + 4e-5 * b, 1e-4,
                            outs[layer], params[layer], 2 * outs[layer], 0, 0, 0, 0])
    return path


@pytest.mark.skipif(not SLOW, reason="the planner plans during the run: MPSL_SLOW=1")
def test_the_per_owner_planner_moves_the_changed_owners_cut_only(tmp_path: Path) -> None:
    profile = synthetic_profile(tmp_path / "profile.csv")
    results, _ = run(tmp_path, {}, ONE_OWNER,
                     plan={"per_owner": True, "profile": str(profile)})
    replan = moved(results)
    assert replan["measured_mbps"]["owner1 uplink"] == pytest.approx(5.0, rel=0.05)
    old, new = replan["old"], replan["new"]
    assert old["cuts"] == [2] and "owner_cuts" not in old
    assert new["cuts"] == [2] and [e["owner"] for e in new["owner_cuts"]] == [1]
    assert new["owner_cuts"][0]["cuts"] != [2]  # owner1 alone has a cut of its own


@pytest.mark.skipif(not SLOW, reason="longer runs: MPSL_SLOW=1")
@pytest.mark.parametrize("setting, new", [
    ({"mode": "mpsl", "labels": "local", "plan": {"cuts": [2, 3], "micro_batches": 2}},
     [1, 2]),  # a U: owner1's layers move both ways, the owners' own last part with them
    ({"compute": 2, "plan": {"cuts": [1, 2], "micro_batches": 2}}, [1, 3]),  # node2 -> node1
], ids=["u-shape", "two-compute-nodes"])
def test_one_owners_layers_move_between_its_own_nodes(
        tmp_path: Path, setting: dict[str, Any], new: list[int]) -> None:
    base, base_out = run(tmp_path / "base", None, None, **setting)
    results, out = run(tmp_path / "moved", {"planner": "fixed", "owner_cuts": [
        {"owner": 1, "cuts": new}]}, ONE_OWNER, **setting)
    replan = moved(results)
    assert replan["new"]["owner_cuts"] == [{"owner": 1, "cuts": new}]
    assert replan["new"]["cuts"] == replan["old"]["cuts"] == setting["plan"]["cuts"]
    got, want = weights(out), weights(base_out)
    for k, w in want.items():
        torch.testing.assert_close(got[k], w, rtol=1e-4, atol=1e-5, msg=k)
