"""The figures: timeline panels on the same rows, colours by action kind, curves per iteration,
busy time per node."""

from __future__ import annotations

import pytest

from mpsl.names import CPU
from mpsl.report.busy import busy_breakdown, busy_figure
from mpsl.report.colors import COLORS, category, color
from mpsl.report.curves import curves_figure
from mpsl.report.rows import ordered_rows
from mpsl.report.timeline import timeline_figure
from mpsl.trace import Event

pytest.importorskip("matplotlib")


def ev(node, resource, action, t0, t1, owner=0):
    return Event(node, resource, action, owner, 0, None, t0, t1)


MEASURED = [ev("owner0", CPU, "0F0", 0.0, 0.1), ev("owner0", "owner0->server", ">server:ACT0", 0.1,
            0.2), ev("server", CPU, "1F0", 0.2, 0.3), ev("server", CPU, "1B0", 0.3, 0.4),
            ev("owner0", "owner0->aggregator", ">aggregator:PARAMS", 0.5, 0.6),
            ev("owner0", "owner0->server", ">server:CONTROL", 0.6, 0.61),
            ev("aggregator", CPU, "AVG", 0.6, 0.7, owner=None)]
SIMULATED = [ev("owner0", CPU, "0F0", 0.0, 0.2), ev("server", CPU, "STEP1", 0.2, 0.25),
             ev("owner0", "owner0->aggregator", ">aggregator:METRICS", 0.3, 0.31)]


def test_categories_and_colours():
    assert [category(a) for a in ("1F3", "0B12", "STEP", "STEP1", "AVG1", ">server:ACT3",
                                  ">aggregator:METRICS", ">node1:CONTROL", "AGG")] == \
        ["F", "B", "STEP", "STEP", "AVG", "ACT", "METRICS", "CONTROL", "other"]
    assert {"CONTROL", "METRICS"} <= set(COLORS) and len(set(COLORS.values())) == len(COLORS)


def test_rows_processors_first_owners_by_index_chain_in_order():
    names = ["owner10", "aggregator", "b", "owner2", "owner2->a", "a->owner2", "a"]
    assert ordered_rows(names, chain=("b", "a")) == [
        "owner2", "owner10", "b", "a", "aggregator", "owner2->a", "a->owner2"]


def test_timeline_panels_share_rows_axis_and_legend():
    fig = timeline_figure([("measured", MEASURED), ("simulated", SIMULATED)])
    measured, simulated = fig.axes
    labels = [[t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes]
    assert labels[0] == labels[1] == ["owner0", "server", "aggregator", "owner0->server",
                                      "owner0->aggregator"]
    assert measured.get_xlim() == simulated.get_xlim()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(COLORS)
    # the CONTROL bar of the link row is coloured as CONTROL, not the default grey
    link_bars = [c for c in measured.collections if c.get_offsets is not None
                 and abs(c.get_paths()[0].vertices[:, 1].mean() - 3) < 0.5]
    facecolors = {tuple(fc) for c in link_bars for fc in c.get_facecolors()}
    from matplotlib.colors import to_rgba

    assert to_rgba(color("CONTROL")) in facecolors and to_rgba(color("ACT")) in facecolors


def test_curves_of_one_epoch_show_every_iteration():
    results = {"epochs": [{"epoch": 1, "wall_s": 1.0, "train_loss": 1.0, "test_loss": 1.1,
                           "test_accuracy": 0.4}],
               "losses": [{"owner": k, "iter": i, "epoch": 0, "loss": 2.0 - 0.1 * i,
                           "samples": 8} for k in (0, 1) for i in range(5)]}
    fig = curves_figure(results)
    per_iteration = fig.axes[0]
    assert [len(line.get_xdata()) for line in per_iteration.get_lines()] == [5, 5]
    assert list(per_iteration.get_lines()[0].get_xdata()) == [0, 1, 2, 3, 4]


def test_busy_breakdown_and_its_figure():
    bd = busy_breakdown(MEASURED, 1.0, ["owner0", "server", "aggregator", "owner1"])
    assert bd["server"] == pytest.approx({"F": 0.1, "B": 0.1, "idle": 0.8})
    assert bd["owner1"] == {"idle": 1.0}  # a node without events is idle all along
    assert bd["aggregator"] == pytest.approx({"AVG": 0.1, "idle": 0.9})
    fig = busy_figure([("measured", bd), ("simulated", busy_breakdown(SIMULATED, 0.5))])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        "owner0", "owner1", "server", "aggregator"]
