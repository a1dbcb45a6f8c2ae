"""bench.paper_rows: the paper-table rows derived from a benchmark's own rows."""

from __future__ import annotations

import json
from pathlib import Path

from bench import paper_rows


def test_each_experiment_s_rows_give_its_figure_with_verdicts() -> None:
    dp = paper_rows.dp([{"mode": "FL", "overhead_s": 0.5}, {"mode": "PiPar", "overhead_s": 0.2}])
    assert [(r["metric"].split(" on ")[1][:5], r["ours"], r["verdict"]) for r in dp] == [
        ("PiPar", "+0.20 s", "not met"), ("FL, s", "+0.50 s", "not comparable")]
    rp = paper_rows.replan([{"interval_min": 1, "share_pct": 9.0, "overhead_s": 5.4},
                            {"interval_min": 10, "share_pct": 0.9, "overhead_s": 5.4}])
    assert [(r["paper"], r["ours"], r["verdict"]) for r in rp] == [
        ("up to 8.3%", "9.00%", "not met"), ("under 1%", "0.90%", "met")]
    live = paper_rows.hetero_live([{"plan": "FL", "measured_s": 8.0},
                                   {"plan": "SFL", "measured_s": 4.0},
                                   {"plan": "PiPar one plan", "measured_s": 2.0},
                                   {"plan": "PiPar per-owner", "measured_s": 2.5}])
    assert [(r["ours"], r["verdict"]) for r in live] == [
        ("4.00x", "not met"), ("2.00x", "met"), ("0.80x", "not comparable")]
    pl = paper_rows.planner([{"score": 1.0}, {"score": 0.97}, {"score": 1.0}])
    assert [(r["ours"], r["verdict"]) for r in pl] == [
        ("0.970", "met"), ("66.7% (2 of 3)", "not met")]
    assert paper_rows.planner([]) == paper_rows.hetero_live([]) == []


def test_add_to_writes_the_rows_once_and_leaves_the_rest(tmp_path: Path) -> None:
    doc = {"meta": {"date": "2026-12-06T12:00:00+00:00"},
           "rows": [{"interval_min": 60, "share_pct": 0.04, "overhead_s": 1.45}]}
    (tmp_path / "replan.json").write_text(json.dumps(doc))
    assert paper_rows.add_to(tmp_path) == ["replan.json"]
    got = json.loads((tmp_path / "replan.json").read_text())
    assert got["rows"] == doc["rows"] and got["meta"] == doc["meta"]
    assert got["paper"][0]["ours"] == "0.04%" and got["paper"][0]["verdict"] == "met"
    assert paper_rows.add_to(tmp_path) == []
