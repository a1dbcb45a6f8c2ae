"""`mpsl plan`: JSON keys, the plan file, the dry run on every plan, warnings, errors."""

from __future__ import annotations

import json

import pytest

import mpsl.cli.common
from mpsl.dryrun import ScheduleError
from tests.mpsl.cli.conftest import profile_csv, write

CANDIDATE_KEYS = {"num_layers", "cuts", "placement", "micro_batches", "schedule",
                  "max_in_flight", "text", "estimate", "source", "plans_by_owner"}


def test_plan_json_and_out(cli, tmp_path):
    csv = profile_csv(tmp_path, out_bytes=[256, 256, 128, 40])
    out = tmp_path / "plan.json"
    js = cli.json("plan", write(tmp_path), "--profile", csv, "--out", out)
    assert set(js) == {"best", "candidates", "solver", "solve_s", "plan_s", "notes", "out",
                       "warnings", "lower_bound_s", "bound_from", "gap", "bound_s"}
    assert set(js["best"]) == CANDIDATE_KEYS and js["best"] == js["candidates"][0]
    assert set(js["best"]["estimate"]) >= {"iteration_s", "epoch_s", "busy_s", "memory_bytes",
                                           "bottleneck"}
    written = json.loads(out.read_text())
    assert written == {k: js["best"][k] for k in ("num_layers", "cuts", "placement",
                                                  "micro_batches", "schedule", "max_in_flight")}
    assert written["placement"] == ["owner", "server"] and js["out"] == str(out)


def test_plan_table(cli, tmp_path):
    rc, out, err = cli("plan", write(tmp_path), "--profile", profile_csv(tmp_path))
    assert rc == 0 and err == ""
    assert out.startswith("Plans ranked by simulated epoch time")
    assert "\n#1 owner[0:" in out and "bottleneck" in out


def test_plan_reports_a_lower_bound_and_the_gap(cli, tmp_path):
    """JSON: the bound on every plan's epoch, what gives it, the best plan's gap to it; the
    table says the same on the line under its title."""
    path, csv = write(tmp_path), profile_csv(tmp_path, out_bytes=[256, 256, 128, 40])
    js = cli.json("plan", path, "--profile", csv)
    best = js["best"]["estimate"]["epoch_s"]
    assert 0 < js["lower_bound_s"] <= min(c["estimate"]["epoch_s"] for c in js["candidates"])
    assert js["gap"] == pytest.approx((best - js["lower_bound_s"]) / js["lower_bound_s"])
    assert "at cuts [" in js["bound_from"] and 0 <= js["bound_s"] <= js["plan_s"]
    rc, out, _ = cli("plan", path, "--profile", csv)
    lines = out.splitlines()
    assert rc == 0 and lines[0].startswith("Plans ranked by simulated epoch time")
    text = " ".join(" ".join(lines[1:3]).split())  # the line as wrapped at the terminal
    assert text.startswith(f"Lower bound {js['lower_bound_s']:.3f} s per epoch over every plan")
    assert js["bound_from"].split(",")[0] in text and "above the optimum" in text


def test_every_printed_plan_is_dry_run(cli, tmp_path, monkeypatch):
    checked = []

    def check(plan):
        checked.append(plan)
        if len(checked) == 2:
            raise ScheduleError("deadlock, never ran: server: <owner0:ACT0 1F0 1B0 >owner0:GRAD0")

    monkeypatch.setattr(mpsl.cli.common, "check_schedule", check)
    line = cli.error("plan", write(tmp_path), "--profile", profile_csv(tmp_path))
    assert line.startswith("error: plan #2 (") and "deadlock, never ran: server:" in line
    assert len(checked) == 2


def test_plan_errors_are_one_line(cli, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("layer,name\n")
    line = cli.error("plan", write(tmp_path), "--profile", bad)
    assert "bad.csv: line 1" in line
    assert "training.epochs" in cli.error("plan", write(tmp_path), "--set", "training.epochs=0")


def test_a_missing_plan_profile_is_named_where_it_was_looked_for(cli, tmp_path, monkeypatch):
    """Relative to the topology's folder when the file says it, to the working directory when
    --set says it; joined once."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "topologies", plan={"auto": True, "profile": "prof.csv"})
    line = cli.error("plan", "topologies/topo.yaml")
    assert "topologies/prof.csv" in line and "topologies/topologies" not in line
    line = cli.error("plan", "topologies/topo.yaml", "--set", "plan.profile=here.csv")
    assert str(tmp_path / "here.csv") in line and "topologies" not in line.split(":", 1)[1]


def test_a_data_root_given_on_the_command_line_is_the_working_directory(cli, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "topologies", dataset={"name": "mnist"})
    line = cli.error("plan", path, "--profile", profile_csv(tmp_path), "--set",
                     "dataset.root=data/mnist")
    assert "not found" in line and str(tmp_path / "data" / "mnist") in line
    assert "topologies/data" not in line


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_plan_warns_when_the_batch_exceeds_an_owner_data(cli, tmp_path, fmt):
    path = write(tmp_path, dataset={"name": "synthetic", "options": {"size": 20}})
    rc, out, err = cli("plan", path, "--profile", profile_csv(tmp_path), "--format", fmt)
    assert rc == 0
    assert err.splitlines() == ["warning: training.batch_size (16) is larger than the data of "
                                "owner0 (10 samples), owner1 (10 samples): every epoch there "
                                "is one partial batch"]
    if fmt == "json":
        assert json.loads(out)["warnings"] == [err.splitlines()[0][len("warning: "):]]


def test_plan_full_simulates_every_event_and_ranks_alike(cli, tmp_path):
    """--full: no steady-state skipping; the same plans, epochs within 0.1%."""
    path = write(tmp_path, dataset={"name": "synthetic", "options": {"size": 4096}})
    csv = profile_csv(tmp_path, out_bytes=[256, 256, 128, 40])
    fast = cli.json("plan", path, "--profile", csv)
    full = cli.json("plan", path, "--profile", csv, "--full")
    assert [c["text"] for c in fast["candidates"]] == [c["text"] for c in full["candidates"]]
    for a, b in zip(fast["candidates"], full["candidates"]):
        assert a["estimate"]["epoch_s"] == pytest.approx(b["estimate"]["epoch_s"], rel=1e-3)


def test_plan_solver_and_budget(cli, tmp_path):
    """--solver picks the cuts' solver (the same best plan); --budget 0 simulates the ILP's
    first candidate (and the topology's plan) alone and names the others in the notes."""
    path, csv = write(tmp_path), profile_csv(tmp_path, out_bytes=[256, 256, 128, 40])
    enum = cli.json("plan", path, "--profile", csv)
    cbc = cli.json("plan", path, "--profile", csv, "--solver", "cbc")
    assert (enum["solver"], cbc["solver"]) == ("enum", "cbc")
    assert enum["best"]["estimate"]["epoch_s"] == cbc["best"]["estimate"]["epoch_s"]
    quick = cli.json("plan", path, "--profile", csv, "--budget", "0")
    assert all(c["source"] in ("ilp", "ilp = topology", "topology")
               for c in quick["candidates"])
    assert any(n.endswith("the time budget was spent") for n in quick["notes"])


@pytest.mark.parametrize("model", [{"name": "mlp", "norm": "none"},
                                   {"name": "vgg5", "norm": "batch"}])
def test_plan_from_a_profile_runs_without_torch(tmp_path, model):
    """With a profile CSV nothing needs a model (the smallest micro-batch is the model's
    geometry): `mpsl plan` works where importing torch fails, BatchNorm model included."""
    import subprocess
    import sys

    path = write(tmp_path, model=model, dataset={"name": "digits"},
                 plan={"auto": True, "micro_batches": 2})
    layers = 4 if model["name"] == "mlp" else 5
    args = ["plan", path, "--profile", profile_csv(tmp_path, layers), "--format", "json"]
    code = ("import sys; sys.modules['torch'] = None; from mpsl.cli import main; "
            f"sys.exit(main({args!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["best"]["estimate"]["epoch_s"] > 0
