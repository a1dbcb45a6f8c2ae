"""The planner's tables read at 80 columns: nothing cut, every plan's text whole on a line."""

from __future__ import annotations

import io

from rich.console import Console

from mpsl.cli.tables import (
    estimate_data,
    estimate_tables,
    folded_lines,
    plan_report_data,
    plan_tables,
    profile_data,
    profile_tables,
)
from mpsl.models import build_model, layer_labels
from mpsl.plan import make_plan
from mpsl.topology import parse
from planner.aps import choose_plan
from planner.cost import simulate
from planner.profile import LayerProfile, Profile
from tests.mpsl.cli.conftest import TOPOLOGY

MPSL = {**TOPOLOGY, "mode": "mpsl", "plan": {"auto": True, "micro_batches": 2},
        "data_owners": {"count": 3, "uplink_mbps": 10, "downlink_mbps": 20},
        "compute_nodes": [{"name": "edge-server-one", "address": "tcp://127.0.0.1:5590"},
                          {"name": "edge-server-two", "address": "tcp://127.0.0.1:5591"}]}


def render(items) -> str:
    console = Console(file=io.StringIO(), width=80, record=True)
    for item in items:
        console.print(item)
    return console.export_text()


def test_ranked_plans_at_80_columns():
    topo = parse(MPSL, "mpsl.yaml")
    report = choose_plan(topo, Profile.synthetic(4, out_bytes=[256, 256, 128, 40]))
    data = plan_report_data(report)
    text = render(plan_tables(data))
    assert "…" not in text
    lines = text.splitlines()
    for i, c in enumerate(report.candidates, 1):  # the plan's parts whole on a line, then N
        parts, rest = c.plan.describe().split(", N=")
        assert f"#{i} {parts}" in lines
        assert f"N={rest}" in lines[lines.index(f"#{i} {parts}") + 2]
    assert len(parts) > 60  # long enough that a table column would cut it
    assert all(len(ln) <= 80 for ln in lines)


def test_estimate_at_80_columns():
    topo = parse(MPSL, "mpsl.yaml")
    prof = Profile.synthetic(4)
    plan = make_plan(topo, 4, [1, 2, 3])
    text = render(estimate_tables(estimate_data(topo, plan, simulate(topo, plan, prof), 0.5)))
    lines = text.splitlines()
    assert "…" not in text and "plan " + plan.describe().split(", N=")[0] in lines
    assert " N, schedule          N=2" in lines[3]
    assert "edge-server-one->edge-server-two" in text


def test_profile_at_80_columns():
    names = layer_labels(build_model("mobilenetv3_large", 100, 3, 64))
    prof = Profile(tuple(LayerProfile(n, 6.8012e-5, 1.2345e-3, 9.87e-4, 2.5e-2, 3.3e-5,
                                      10_485_760, 102_764_544, 12_582_912) for n in names))
    text = render(profile_tables(profile_data("mobilenetv3_large", prof, None)))
    assert "…" not in text and "6.80e-05" in text and "102,764,544" in text
    assert all(n in text for n in names)


def test_folded_lines():
    values = {"owner0": 1.0, "owner1": 3.0, "server": 2.0, "owner0->server": 0.5}
    assert folded_lines(values, "{:.1f}") == "owner* (x2) 3.0\nserver 2.0\nowner*->server 0.5"
    assert folded_lines(values, "{:.1f}", 1) == "owner* (x2) 3.0\n... 2 more"
    assert folded_lines({}, "{:.1f}") == "-"
