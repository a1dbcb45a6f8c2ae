"""`mpsl profile`: the CSV, JSON keys, and the table at 80 columns."""

from __future__ import annotations

from dataclasses import replace

import pytest

from planner.profile import Profile
from tests.mpsl.cli.conftest import write


def test_profile_writes_csv_and_json(cli, tmp_path):
    out = tmp_path / "host.csv"
    js = cli.json("profile", write(tmp_path), "--out", out)
    p = Profile.from_csv(out)
    assert p.names == ["fc-64", "fc-64", "fc-32", "fc-10"]
    assert {b for b, _, _ in p.layers[0].points} == {1, 2, 4, 8, 16}  # profile_sizes(16)
    assert set(js) == {"model", "layers", "wake_fwd_s", "wake_bwd_s", "step_s", "wake_step_s",
                       "out"}
    assert [r["name"] for r in js["layers"]] == p.names and js["out"] == str(out)
    assert set(js["layers"][0]) == {"layer", "name", "fwd_a", "fwd_c", "bwd_a", "bwd_c",
                                    "opt_s", "out_bytes", "param_bytes", "act_bytes"}
    assert js["layers"][2]["param_bytes"] == p.layers[2].param_bytes


def test_profile_table(cli, tmp_path, monkeypatch):
    import planner.resources

    names = ["fc-64", "fc-64", "fc-32", "fc-10"]
    monkeypatch.setattr(planner.resources, "host_profile", lambda topo, device: Profile(tuple(
        replace(lp, name=n) for lp, n in zip(Profile.synthetic(4).layers, names)),
        step_s=1.25e-3))
    rc, out, err = cli("profile", write(tmp_path))
    assert rc == 0 and err.startswith("profiling mlp on this host")
    assert "fc-32" in out and "…" not in out  # stdout is not a terminal: 80 columns
    assert "STEP 1.250 ms per part beyond opt" in " ".join(out.split())


def test_profile_on_a_missing_cuda_device_is_refused_in_one_line(cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA device")
    rc, out, err = cli("profile", write(tmp_path), "--device", "cuda:0")
    assert rc != 0 and out == ""
    assert err.strip().splitlines()[-1].endswith(
        "cannot profile on cuda:0: torch sees no CUDA device here")
