"""`mpsl simulate`: JSON keys, owners folded at scale, planning when auto, errors, samples per
owner without a data set, steady state against --full, no profiling with --profile, and no
torch either then."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.mpsl.cli.conftest import profile_csv, write


def test_simulate_json(cli, tmp_path):
    js = cli.json("simulate", write(tmp_path), "--profile", profile_csv(tmp_path))
    assert set(js) == {"topology", "source", "mode", "owners", "plan", "text", "epochs",
                       "total_s", "estimate", "simulated_in_s", "steady_periods", "warnings"}
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


def test_samples_per_owner_sets_every_owners_iterations(cli, tmp_path, monkeypatch):
    """K owners of N samples each: no data set is read (a data set of 256 samples could not
    give 1000 owners 320 samples each), iterations are ceil(N / B)."""
    import mpsl.training

    def no_data(*_args, **_kw):
        raise AssertionError("the data set was read")

    monkeypatch.setattr(mpsl.training, "owner_indices", no_data)
    path = write(tmp_path)
    js = cli.json("simulate", path, "--profile", profile_csv(tmp_path), "--owners", "1000",
                  "--samples-per-owner", "320")
    assert js["owners"] == 1000 and js["steady_periods"] > 0
    full = cli.json("simulate", path, "--profile", profile_csv(tmp_path), "--owners", "3",
                    "--samples-per-owner", "40", "--full")
    assert full["steady_periods"] == 0
    est = full["estimate"]
    assert est["epoch_s"] > 0 and est["busy_s"]["owner2->server"] > 0


def test_samples_per_owner_defaults_to_the_topologys(cli, tmp_path):
    csv = profile_csv(tmp_path)
    js = cli.json("simulate", write(tmp_path, dataset={"name": "synthetic", "options": {
        "size": 64}, "samples_per_owner": 1600}), "--profile", csv)
    flag = cli.json("simulate", write(tmp_path), "--profile", csv, "--samples-per-owner", "1600")
    assert js["estimate"]["epoch_s"] == flag["estimate"]["epoch_s"]
    small = cli.json("simulate", write(tmp_path), "--profile", csv)  # 128 samples per owner
    assert js["estimate"]["epoch_s"] > 5 * small["estimate"]["epoch_s"]
    assert "--samples-per-owner must be >= 1" in cli.error(
        "simulate", write(tmp_path), "--profile", csv, "--samples-per-owner", "0")


def test_steady_state_equals_full_and_is_shown(cli, tmp_path):
    path = write(tmp_path)
    csv = profile_csv(tmp_path)
    args = ("simulate", path, "--profile", csv, "--owners", "4", "--samples-per-owner", "3200")
    fast, full = cli.json(*args), cli.json(*args, "--full")
    assert fast["steady_periods"] > 0 and full["steady_periods"] == 0
    assert abs(fast["total_s"] - full["total_s"]) <= 1e-3 * full["total_s"]
    for name, v in full["estimate"]["busy_s"].items():
        assert abs(fast["estimate"]["busy_s"][name] - v) <= 1e-6 * max(v, 1e-9), name
    rc, out, _ = cli(*args)
    assert rc == 0 and "period(s) skipped" in out
    rc, out, _ = cli(*args, "--full")
    assert rc == 0 and "(every event)" in out


def test_profile_csv_avoids_profiling(cli, tmp_path, monkeypatch):
    import planner.resources

    def no_profiling(*_args, **_kw):
        raise AssertionError("profiled this host")

    monkeypatch.setattr(planner.resources, "host_profile", no_profiling)
    js = cli.json("simulate", write(tmp_path, plan={"auto": True, "micro_batches": 2}),
                  "--profile", profile_csv(tmp_path), "--samples-per-owner", "64")
    assert js["estimate"]["epoch_s"] > 0


def test_simulate_from_a_profile_runs_without_torch(tmp_path):
    """With a profile CSV and samples per owner nothing needs a model: the command works where
    importing torch fails (it would add about a second to every `mpsl simulate`)."""
    path = write(tmp_path, plan={"auto": True, "micro_batches": 2})
    args = ["simulate", path, "--profile", profile_csv(tmp_path), "--samples-per-owner", "64",
            "--format", "json"]
    code = ("import sys; sys.modules['torch'] = None; from mpsl.cli import main; "
            f"sys.exit(main({args!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["estimate"]["epoch_s"] > 0

