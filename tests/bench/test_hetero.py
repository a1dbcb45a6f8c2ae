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
