"""`mpsl run` then `mpsl report` on a small real run (mlp on digits): the figures, actions.csv
covering every measured action kind with its simulated counterpart, the JSON of both."""

from __future__ import annotations

import csv
import json

import yaml

from mpsl.actions import Action
from mpsl.trace import read_events
from tests.e2e.conftest import topology_doc

RUN_KEYS = {"run_dir", "plan", "warnings", "epochs", "nodes", "links", "summary"}
REPORT_KEYS = {"run_dir", "profile", "files", "actions", "busy", "epochs", "nodes", "links",
               "summary"}


def test_report_of_a_real_run(cli, tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(topology_doc(owners=2, training={"max_iterations": 3})))
    run_dir = tmp_path / "run"
    ran = cli.json("run", path, "--out", run_dir, "--quiet")
    assert set(ran) == RUN_KEYS and ran["run_dir"] == str(run_dir)
    assert set(ran["nodes"]) == {"owner0", "owner1", "node1", "aggregator"}

    rc, out, err = cli("report", run_dir)  # measures this host once, keeps the profile
    assert rc == 0 and err.startswith("profiling mlp on this host")
    assert "Actions: mean ms, measured against simulated" in out and "…" not in out
    for name in ("timeline.png", "curves.png", "busy.png", "actions.csv", "profile.csv"):
        assert (run_dir / name).stat().st_size > 0, name

    js = cli.json("report", run_dir)  # the saved profile: nothing measured again
    assert set(js) == REPORT_KEYS and js["profile"] == str(run_dir / "profile.csv")
    assert js["files"] == [str(run_dir / f) for f in ("timeline.png", "curves.png", "busy.png",
                                                       "actions.csv")]
    assert set(js["busy"]) == {"measured", "simulated"}
    with open(run_dir / "actions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["resource"], r["kind"]) for r in rows] == [
        (a["resource"], a["kind"]) for a in js["actions"]]
    measured = {(e.resource_name, e.kind) for e in read_events(run_dir / "events.jsonl")}
    for e in read_events(run_dir / "events.jsonl"):
        assert str(Action.from_str(e.action)) == e.action
    by_key = {(r["resource"], r["kind"]): r for r in rows}
    assert measured <= set(by_key)  # every measured action kind has its row
    missing = sorted(k for k in measured if int(by_key[k]["simulated_n"]) == 0)
    assert not missing, f"measured, never simulated: {missing}"
    assert json.loads((run_dir / "results.json").read_text())["summary"]["train_s"] > 0
