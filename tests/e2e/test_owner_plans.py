"""Owners with their own cuts and N, and an FL owner beside split owners, train over real
sockets to the sample-weighted average of the unsplit models (norm none)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mpsl.data import batches
from mpsl.topology import load
from mpsl.training import build_full_model, make_optimizer, owner_samples
from nodes.parts import weighted_average
from tests.e2e.conftest import owner_data, topology_doc
from tests.e2e.test_equivalence import assert_same_weights, trained

ROUNDS, EVERY = 2, 1  # two aggregations: the second starts from the first's global model


def fedavg_unsplit(path: Path) -> dict[str, torch.Tensor]:
    """The reference: every owner trains the whole model with its own optimizer, one step per
    batch; after each round the sample-weighted average replaces every owner's model."""
    topo = load(path)
    counts = owner_samples(topo)
    models = [build_full_model(topo) for _ in counts]
    opts = [make_optimizer(m.parameters(), topo.training) for m in models]
    data = [owner_data(topo, k) for k in range(len(counts))]
    t = topo.training
    for r in range(ROUNDS):
        for k, (model, opt) in enumerate(zip(models, opts)):
            x, y = data[k]
            for idx in batches(len(x), t.batch_size, t.seed, 0)[r * EVERY:(r + 1) * EVERY]:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
        avg = weighted_average([m.state_dict() for m in models], counts)
        for m in models:
            m.load_state_dict(avg)
    return avg


SLOW = pytest.mark.skipif(not os.environ.get("MPSL_SLOW"), reason="set MPSL_SLOW=1")
CASES = [  # model, mode, labels, compute nodes, common cuts, per-owner overrides
    ("mlp", "pipar", "shared", 1, [2],  # the owners pooled in one process
     [{"index": 1, "cuts": [1], "micro_batches": 2}, {"index": 2, "mode": "fl"},
      {"index": 3, "cuts": [3], "micro_batches": 3}]),
    pytest.param("vgg5", "mpsl", "local", 2, [1, 2, 4],  # U-shape, two compute nodes
                 [{"index": 0, "cuts": [1, 3, 4], "micro_batches": 2}, {"index": 1, "mode": "fl"},
                  {"index": 2, "cuts": [2, 3, 4]}], marks=SLOW),
]


@pytest.mark.parametrize("model, mode, labels, compute, cuts, overrides", CASES)
def test_owner_plans_train_to_the_unsplit_average(run_topology, tmp_path, model, mode, labels,
                                                  compute, cuts, overrides):
    owners = len(overrides) + 1
    doc = topology_doc(owners=owners, compute=compute, mode=mode, labels=labels,
                       model={"name": model, "norm": "none"},
                       dataset={"partition": "dirichlet", "alpha": 1.0},
                       training={"max_iterations": ROUNDS * EVERY, "aggregate_every": EVERY,
                                 "batch_size": 12},
                       plan={"cuts": cuts, "micro_batches": 4})
    doc["data_owners"]["overrides"] = overrides
    if model == "mlp":
        doc["data_owners"]["per_process"] = owners
    results, out = run_topology(doc)
    path = tmp_path / "test.yaml"
    assert len(set(owner_samples(load(path)))) == owners  # unequal weights
    plan = results["plan"]
    assert len(plan["owner_cuts"]) == len(overrides)
    assert len(results["rounds"]) == ROUNDS
    assert_same_weights(trained(out), fedavg_unsplit(path))


@SLOW
@pytest.mark.timeout(300)
def test_a_killed_compute_node_resumes_with_owner_plans(tmp_path):
    """failure.checkpoint under per-owner plans: node2 killed mid-run resumes from the last
    commit (its copies as averaged by the aggregator), every node rolls back with it, and the
    run ends with the weights of the same run without the kill."""
    from tests.e2e.conftest import run_killing

    def doc():
        d = topology_doc(owners=3, compute=2, mode="mpsl", labels="local",
                         model={"name": "vgg5", "norm": "none"},
                         training={"epochs": 2, "aggregate_every": 4, "batch_size": 12},
                         plan={"cuts": [1, 2, 4], "micro_batches": 3},
                         failure={"heartbeat_s": 0.25, "timeout_s": 2.0, "restart": True,
                                  "checkpoint": True}, runtime={"timeout_s": 30})
        d["data_owners"]["overrides"] = [{"index": 0, "cuts": [1, 3, 4], "micro_batches": 2},
                                         {"index": 2, "mode": "fl"}]
        return d

    (tmp_path / "quiet").mkdir()
    run_killing(tmp_path / "quiet", doc(), None, 0)
    want = trained(tmp_path / "quiet" / "run")
    results = run_killing(tmp_path, doc(), "node2", 14)
    (back,) = results["failures"]["rollbacks"]
    assert back["node"] == "node2"
    got = trained(tmp_path / "run")
    assert all(torch.equal(got[k], want[k]) for k in want), "weights differ from the quiet run"
