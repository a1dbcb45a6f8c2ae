"""A run with `batch_owners: auto` ends with the weights of the same run without it."""

from __future__ import annotations

import ast
import re

import pytest
import torch

from tests.e2e.conftest import topology_doc


@pytest.mark.parametrize("mode, labels, cuts", [("pipar", "shared", [2]),
                                                ("mpsl", "local", [1, 3])])
def test_batched_copies_train_as_sequential_ones(run_topology, mode, labels, cuts):
    weights, calls = [], []
    for batch in ("auto", "off"):
        doc = topology_doc(owners=4, mode=mode, labels=labels,
                           model={"name": "vgg5", "norm": "none"},
                           training={"max_iterations": 2, "batch_size": 16},
                           plan={"cuts": cuts, "micro_batches": 4})
        doc["name"] = f"batched_{batch}"
        # a slower server: work piles up while it computes, as when it is the bottleneck
        doc["compute_nodes"][0].update(batch_owners=batch, compute_scale=2)
        _, out = run_topology(doc)
        weights.append(torch.load(out / "model.pt", weights_only=True))
        log = (out / "logs" / "node1.log").read_text()
        calls.append(re.findall(r"batched calls by owners per call: (\{.*\})", log))
    assert weights[0].keys() == weights[1].keys()
    for k in weights[1]:
        assert torch.equal(weights[0][k], weights[1][k]), k
    assert len(calls[0]) == 1 and calls[1] == []
    assert max(ast.literal_eval(calls[0][0])) >= 2  # owners per call: it did batch
