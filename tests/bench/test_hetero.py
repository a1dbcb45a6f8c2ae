"""bench.hetero: a smoke run on a given profile writes its table and the README section."""

from __future__ import annotations

import json
import os

import pytest

from bench.hetero import main
from planner.profile import Profile


@pytest.mark.skipif(not os.environ.get("MPSL_SLOW"), reason="about 30 s: MPSL_SLOW=1")
def test_quick_run_on_a_profile(tmp_path):
    csv = tmp_path / "p.csv"
    Profile.synthetic(5).to_csv(csv)
    assert main(["--quick", "--profile", str(csv), "--results", str(tmp_path / "r")]) == 0
    rows = json.loads((tmp_path / "r" / "hetero.json").read_text())["rows"]
    (row,) = rows
    assert row["pipar_owner_s"] <= row["pipar_one_s"] * (1 + 1e-9)  # one plan is a candidate
    assert row["lower_bound_s"] <= row["pipar_owner_s"]
    assert row["x_fl"] == pytest.approx(row["fl_s"] / row["pipar_owner_s"])
    md = (tmp_path / "r" / "hetero.md").read_text()
    assert md.startswith("`.venv/bin/python -m bench.hetero --quick --profile")
    assert "## For bench/README" in md and "Per-owner plans over one plan: median" in md


def _made_up(plans, rounds):
    """Runs of `rounds` rounds: each plan's epoch in round k is its base time + k."""
    base = {"FL": 8.0, "SFL": 4.0, "PiPar one plan": 2.5, "PiPar per-owner": 2.0}
    return [{"round": k, "plan": p, "epoch_s": base[p] + k} for k in range(rounds)
            for p in plans]


def test_live_fixed_plans_and_the_summary_of_rounds():
    from bench import hetero_live as hl

    plans = hl.fixed(2, 32, 7.0, 1, Profile.synthetic(5))
    assert list(plans) == list(hl.PLANS)
    per_owner = plans["PiPar per-owner"][1]
    assert per_owner.for_owner(0).cuts == (2,) and per_owner.for_owner(1).cuts == (1,)
    assert plans["SFL"][1].micro_batches == (1, 1) and plans["FL"][1].cuts == ()
    assert all(est > 0 for _, _, est, _ in plans.values())
    rows = hl.summary(plans, _made_up(hl.PLANS, 3))
    fl = rows[0]
    assert fl["measured_s"] == 9.0  # the median of 8, 9, 10
    assert fl["per_owner_speedup"] == pytest.approx(9.0 / 3.0)  # median of 8/2, 9/3, 10/4
    assert fl["measured_over_estimate"] == pytest.approx(9.0 / plans["FL"][2])
    assert rows[3]["per_owner_speedup"] == 1.0
    text = hl.verdict(rows, 2)
    assert "per-owner PiPar over FL 3.00x" in text and "median of 3 rounds" in text


@pytest.mark.skipif(not os.environ.get("MPSL_SLOW"), reason="about 30 s: MPSL_SLOW=1")
def test_live_quick_run_writes_the_measured_table(tmp_path):
    assert main(["--live", "--quick", "--results", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "hetero.live.quick.json").read_text())["rows"]
    assert [r["plan"] for r in rows] == ["FL", "SFL", "PiPar one plan", "PiPar per-owner"]
    assert all(r["measured_s"] > 0 and r["estimate_s"] > 0 for r in rows)
    md = (tmp_path / "hetero.live.quick.md").read_text()
    assert md.startswith("`.venv/bin/python -m bench.hetero --live --quick`")
    assert "## For bench/README" in md and "Measured (K = 2" in md
