"""`mpsl plan` with per-owner plans: grouped in the table, `plans_by_owner` in JSON, the
joint choice (`plan.per_owner`) ranked beside the common plans under a bound valid for both."""

from __future__ import annotations

import json

from tests.mpsl.cli.conftest import TOPOLOGY, profile_csv, write

OWNERS = {"count": 4, "uplink_mbps": 10, "downlink_mbps": 20,
          "overrides": [{"index": 1, "cuts": [1], "micro_batches": 1},
                        {"index": 2, "mode": "fl"}]}


def test_overrides_are_grouped_per_plan(cli, tmp_path):
    path, csv = write(tmp_path, data_owners=OWNERS), profile_csv(tmp_path)
    js = cli.json("plan", path, "--profile", csv, "--out", tmp_path / "plan.json")
    mine = next(c for c in js["candidates"] if "topology" in c["source"])
    assert mine["plans_by_owner"] == [
        {"owners": [0, 3], "cuts": [2], "placement": ["owner", "server"],
         "parts": [[0, 2], [2, 4]], "micro_batches": [2, 2]},
        {"owners": [1], "cuts": [1], "placement": ["owner", "server"],
         "parts": [[0, 1], [1, 4]], "micro_batches": [1]},
        {"owners": [2], "cuts": [], "placement": ["owner"], "parts": [[0, 4]],
         "micro_batches": [2]}]
    for c in js["candidates"]:  # every plan keeps the owners' own cuts
        of = {k: g["cuts"] for g in c["plans_by_owner"] for k in g["owners"]}
        assert of[1] == [1] and of[2] == []
    written = json.loads((tmp_path / "plan.json").read_text())
    assert written["owner_cuts"] == js["best"]["owner_cuts"]
    rc, out, _ = cli("plan", path, "--profile", csv)
    assert rc == 0
    assert "owner0,3: owner[0:2) -> server[2:4)\n   owner1: owner[0:1) -> server[1:4)\n" \
           "   owner2: owner[0:4)" in out


def test_joint_choice_is_ranked_under_a_bound_for_both(cli, tmp_path):
    slow = {"count": 4, "uplink_mbps": 50, "downlink_mbps": 50,
            "overrides": [{"index": k, "compute_scale": 2.0, "uplink_mbps": 5}
                          for k in (1, 3)]}
    plan = {"auto": True, "micro_batches": 2, "per_owner": True}
    path = write(tmp_path, data_owners=slow, plan=plan)
    js = cli.json("plan", path, "--profile", profile_csv(tmp_path, layers=5))
    joint = [c for c in js["candidates"] if c["source"] == "owner-ilp"]
    assert len(joint) == 1
    assert 0 < js["lower_bound_s"] <= min(c["estimate"]["epoch_s"] for c in js["candidates"])
    assert TOPOLOGY["plan"]["cuts"] == [2]  # untouched
