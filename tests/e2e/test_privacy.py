"""Differential privacy over real processes: results.json's privacy block, per epoch and per
round; and privacy at zero trains to the same bits as no privacy."""

from __future__ import annotations

import torch

from mpsl.privacy import epsilon
from tests.e2e.conftest import topology_doc


def test_a_dp_run_reports_the_epsilon_spent(run_topology):
    privacy = {"clip_norm": 1.0, "noise_multiplier": 1.1, "delta": 1e-5, "pixel_sigma": 0.1,
               "cut_sigma": 0.1, "noise_seed": 7}
    doc = topology_doc(owners=2, training={"epochs": 2, "max_iterations": 4,
                                           "aggregate_every": 2}, privacy=privacy)
    results, out = run_topology(doc)
    block = results["privacy"]
    assert block["steps"] == 4  # 2 epochs of 2 rounds: one update per owner and round
    assert block["epsilon"] == epsilon(1.1, 4, 1e-5)
    assert block["epsilon_replace_one"] == epsilon(0.55, 4, 1e-5)
    for key, value in privacy.items():
        if key != "noise_seed":
            assert block[key] == value, key
    assert block["sampling_rate"] == 1.0 and block["noise"] == "seeded"
    assert block["accountant"].startswith("rdp (dp-accounting")
    assert [r["epsilon"] for r in results["rounds"]] == [epsilon(1.1, t, 1e-5)
                                                         for t in range(1, 5)]
    assert [e["epsilon"] for e in results["epochs"]] == [epsilon(1.1, 2, 1e-5), block["epsilon"]]
    assert all(torch.isfinite(v).all() for v in trained_model(out).values())


def test_privacy_at_zero_trains_to_the_same_bits(run_topology):
    base = dict(owners=2, training={"epochs": 1, "max_iterations": 3})
    plain, out = run_topology(topology_doc(**base))
    want = trained_model(out)
    zero = {"noise_multiplier": 0, "pixel_sigma": 0, "cut_sigma": 0}
    results, out = run_topology(topology_doc(**base, privacy=zero))
    got = trained_model(out)
    assert "privacy" not in results and "privacy" not in plain
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)


def trained_model(out):
    return torch.load(out / "model.pt", weights_only=True)
