"""The run's tables: the aggregator among the nodes, rejected messages, readable at 80 columns."""

from __future__ import annotations

import io

from rich.console import Console

from mpsl.report import actions_table, busy_table, results_tables
from mpsl.report.tables import privacy_text


def results():
    node = {"busy_s": 1.5, "idle_s": 0.5, "peak_rss_bytes": 250e6, "peak_tensor_bytes": 12e6,
            "state_bytes": 1e6, "activation_peak_bytes": 2e6, "rejected_messages": 0}
    return {
        "epochs": [{"epoch": 1, "wall_s": 2.0, "train_loss": 0.75, "test_accuracy": 0.5,
                    "test_loss": 0.8}],
        "nodes": {"owner1": node, "owner0": node, "aggregator": {**node, "busy_s": 0.1},
                  "compute-node-number-one": {**node, "rejected_messages": 3}},
        "links": {"owner0->compute-node-number-one": {"bytes": 4e6, "busy_s": 0.4}},
        "summary": {"train_s": 2.0, "bottleneck": "owner0", "bottleneck_busy_s": 1.5,
                    "time_over_bound": 1.3333, "final_test_accuracy": 0.5,
                    "samples_per_owner": [10, 10], "rejected_messages": 3},
    }


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("│").split("│")]


def render(*tables) -> str:
    console = Console(file=io.StringIO(), width=80, record=True)
    for t in tables:
        console.print(t)
    return console.export_text()


def test_results_tables_at_80_columns():
    text = render(*results_tables(results()))
    assert "…" not in text
    lines = text.splitlines()
    rows = [cells(ln)[0] for ln in lines if ln.startswith("│ ")]
    assert rows[1:5] == ["owner0", "owner1", "compute-node-number-one", "aggregator"]
    assert "time / bottleneck bound │ 1.33 (1 is ideal)" in text
    assert "efficiency" not in text
    assert any("rejected messages" in ln and "3" in ln for ln in lines)  # the summary's total
    assert any("compute-node-number-one" in ln and ln.rstrip(" │").endswith("3")
               for ln in lines)  # the node's column


def test_busy_and_action_tables_at_80_columns():
    bd = {"owner0": {"F": 0.5, "B": 0.75, "STEP": 0.125, "idle": 0.625},
          "aggregator": {"AVG": 0.01, "idle": 1.99}}
    rows = [{"resource": "owner0->compute-node-number-one", "kind": ">compute-node-number-one:ACT",
             "measured_s": 0.002, "measured_n": 4, "simulated_s": 0.0021, "simulated_n": 4,
             "error_pct": 5.0},
            {"resource": "owner0", "kind": "0F", "measured_s": 0.001, "measured_n": 4,
             "simulated_s": None, "simulated_n": 0, "error_pct": None}]
    text = render(busy_table([("measured", bd), ("simulated", bd)]), actions_table(rows))
    assert "…" not in text
    assert "+5.0" in text and "owner0->compute-node-number-one" in text
    rows = [cells(ln) for ln in text.splitlines() if ln.startswith("│")]
    assert ["owner0->compute-node-number-one", "ACT", "2.000", "2.100", "+5.0"] in rows
    assert ["owner0", "measured", "0.500", "0.750", "0.125", "0.000", "0.625", "69"] in rows


def test_private_runs_show_epsilon_per_epoch_and_in_the_summary():
    data = results()
    data["epochs"][0]["epsilon"] = 7.0812
    data["privacy"] = {"epsilon": 7.0812, "delta": 1e-5, "noise_multiplier": 1.0,
                       "clip_norm": 1.0, "steps": 3, "pixel_sigma": 0.0, "cut_sigma": 0.1}
    text = render(*results_tables(data))
    assert "…" not in text
    assert "epsilon" in text.splitlines()[2]  # the Epochs table's header
    epoch_rows = [cells(ln) for ln in text.splitlines() if ln.startswith("│ ")][:1]
    assert epoch_rows == [["1", "2.00", "0.7500", "0.8000", "50.00%", "7.08"]]
    assert privacy_text(data["privacy"]) == ("epsilon 7.08 at delta 1e-05 (sigma 1, C 1, "
                                             "3 aggregations); noise layer: pixel sigma 0, "
                                             "cut sigma 0.1")
    assert any(cells(ln)[0] == "privacy" and cells(ln)[1].startswith("epsilon 7.08 at delta")
               for ln in text.splitlines())  # the summary's row (folded at 80 columns)


def test_runs_without_privacy_have_no_epsilon():
    text = render(*results_tables(results()))
    assert "epsilon" not in text and "privacy" not in text
