"""`mpsl plan`, `mpsl profile` and `mpsl simulate` handlers, scale included."""

from __future__ import annotations

import argparse
import json
import time

import yaml

from planner.commands import cmd_plan, cmd_profile, cmd_simulate
from planner.profile import Profile

TOPOLOGY = {
    "name": "cli",
    "model": {"name": "mlp", "norm": "none"},
    "dataset": {"name": "synthetic", "options": {"shape": [1, 8, 8], "size": 256}},
    "training": {"batch_size": 16, "epochs": 2},
    "mode": "pipar",
    "plan": {"cuts": [2], "micro_batches": 2},
    "data_owners": {"count": 2, "uplink_mbps": 10, "downlink_mbps": 20},
    "compute_nodes": [{"name": "server", "address": "tcp://127.0.0.1:5590"}],
}


def write(tmp_path, **changes):
    d = {**TOPOLOGY, **changes}
    path = tmp_path / "topo.yaml"
    path.write_text(yaml.safe_dump(d))
    return str(path)


def plan_args(path, **kw):
    return argparse.Namespace(**{"topology": path, "profile": None, "format": "table",
                                 "out": None, "set": [], **kw})


def test_plan_json_and_out(tmp_path, capsys):
    csv = tmp_path / "p.csv"
    Profile.synthetic(4, out_bytes=[256, 256, 128, 40]).to_csv(csv)
    out = tmp_path / "plan.json"
    rc = cmd_plan(plan_args(write(tmp_path), profile=str(csv), format="json", out=str(out)))
    assert rc == 0
    js = json.loads(capsys.readouterr().out)
    assert set(js) == {"best", "candidates", "solver", "solve_s"}
    assert json.loads(out.read_text()) == {
        "cuts": js["best"]["cuts"], "placement": ["owner", "server"],
        "micro_batches": js["best"]["micro_batches"], "num_layers": 4}


def test_plan_table(tmp_path, capsys):
    csv = tmp_path / "p.csv"
    Profile.synthetic(4).to_csv(csv)
    assert cmd_plan(plan_args(write(tmp_path), profile=str(csv))) == 0
    text = capsys.readouterr().out
    assert "plans ranked by simulated epoch time" in text and "epoch s" in text


def test_plan_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("layer,name\n")
    assert cmd_plan(plan_args(write(tmp_path), profile=str(bad))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "bad.csv: line 1" in err and "\n" not in err
    assert cmd_plan(plan_args(write(tmp_path), set=["training.epochs=0"])) == 2
    assert "training.epochs" in capsys.readouterr().err


def test_profile_writes_csv(tmp_path, capsys):
    out = tmp_path / "host.csv"
    args = argparse.Namespace(topology=write(tmp_path), out=str(out), set=[])
    assert cmd_profile(args) == 0
    p = Profile.from_csv(out)
    assert p.names == ["fc-64", "fc-64", "fc-32", "fc-10"]
    assert {b for b, _, _ in p.layers[0].points} == {1, 2, 4, 8, 16}  # profile_sizes(16)
    printed = " ".join(capsys.readouterr().out.split())  # as one line, however it wrapped
    assert "fc-32" in printed
    assert f"STEP {1e3 * p.step_s:.3f} ms per part beyond opt" in printed


def test_simulate_1000_owners_100_layers(tmp_path, capsys):
    csv = tmp_path / "p100.csv"
    Profile.synthetic(100, fwd=(1e-5, 1e-4), bwd=(2e-5, 2e-4)).to_csv(csv)
    path = write(tmp_path, dataset={"name": "cifar10"},
                 plan={"cuts": [50], "micro_batches": 4, "profile": str(csv)},
                 training={"batch_size": 32, "epochs": 1})
    args = argparse.Namespace(topology=path, owners=1000, set=[])
    started = time.perf_counter()
    assert cmd_simulate(args) == 0
    wall = time.perf_counter() - started
    text = capsys.readouterr().out
    assert "1000 owner(s)" in text and "x1000" in text
    assert wall < 10, f"1000 owners x 100 layers took {wall:.1f} s"


def test_simulate_plans_when_auto(tmp_path, capsys):
    csv = tmp_path / "p.csv"
    Profile.synthetic(4).to_csv(csv)
    path = write(tmp_path, plan={"auto": True, "micro_batches": 2, "profile": str(csv)})
    assert cmd_simulate(argparse.Namespace(topology=path, owners=None, set=[])) == 0
    assert "owner[0:" in capsys.readouterr().out
    assert cmd_simulate(argparse.Namespace(topology=path, owners=0, set=[])) == 2
