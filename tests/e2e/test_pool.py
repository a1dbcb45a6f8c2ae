"""Data owners pooled in one process (`data_owners.per_process`) train exactly as owners in a
process each: the same final weights (norm none, same seed)."""

from __future__ import annotations

import pytest
import torch

from tests.e2e.conftest import topology_doc

pytestmark = pytest.mark.timeout(180)


def _doc(per_process: int) -> dict:
    return topology_doc(owners=5, training={"epochs": 2},
                        data_owners={"count": 5, "per_process": per_process})


def test_pooled_owners_end_with_the_weights_of_one_process_each(run_topology) -> None:
    alone, out = run_topology(_doc(1))
    want = torch.load(out / "model.pt", weights_only=True)
    # owner0..owner2 and owner3..owner4, started as `mpsl node --name owner0..owner2`
    pooled, out = run_topology(_doc(3), method="subprocess")
    got = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(got[k], want[k]) for k in want)
    logs = {p.name for p in (out / "logs").iterdir()}  # both runs' (the same folder)
    assert {"owner0..owner2.log", "owner3..owner4.log"} <= logs
    assert set(pooled["nodes"]) == set(alone["nodes"])  # every owner reports on its own
    assert [e["train_loss"] for e in pooled["epochs"]] == [e["train_loss"] for e in alone["epochs"]]
