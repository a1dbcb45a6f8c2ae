"""`mpsl simulate`: JSON keys, owners folded at scale, planning when auto, errors."""

from __future__ import annotations

import time

from tests.mpsl.cli.conftest import profile_csv, write


def test_simulate_json(cli, tmp_path):
    js = cli.json("simulate", write(tmp_path), "--profile", profile_csv(tmp_path))
    assert set(js) == {"topology", "source", "mode", "owners", "plan", "text", "epochs",
                       "total_s", "estimate", "simulated_in_s", "warnings"}
    assert js["plan"]["cuts"] == [2] and js["text"] == "owner[0:2) -> server[2:4), N=2"
    assert js["epochs"] == 2 and js["total_s"] == js["estimate"]["total_s"]
    assert js["owners"] == 2 and "owner1->server" in js["estimate"]["busy_s"]


def test_simulate_1000_owners_100_layers(cli, tmp_path):
    csv = profile_csv(tmp_path, 100, name="p100.csv", fwd=(1e-5, 1e-4), bwd=(2e-5, 2e-4))
    path = write(tmp_path, dataset={"name": "synthetic", "options": {"size": 50000}},
                 plan={"cuts": [50], "micro_batches": 4, "profile": csv},
                 training={"batch_size": 32, "epochs": 1})
    started = time.perf_counter()
    rc, out, err = cli("simulate", path, "--owners", "1000")
    wall = time.perf_counter() - started
    assert rc == 0, err
    assert "1000 owner(s)" in out and "x1000" in out
    assert wall < 10, f"1000 owners x 100 layers took {wall:.1f} s"


def test_simulate_plans_when_auto_and_rejects_zero_owners(cli, tmp_path):
    path = write(tmp_path, plan={"auto": True, "micro_batches": 2})
    rc, out, err = cli("simulate", path, "--profile", profile_csv(tmp_path))
    assert rc == 0 and "\nplan owner[0:" in out
    assert "--owners must be >= 1, got 0" in cli.error("simulate", path, "--owners", "0")
