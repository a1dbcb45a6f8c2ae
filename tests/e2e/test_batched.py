"""A run with `batch_owners: auto` ends with the weights of the same run without it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from tests.e2e.conftest import topology_doc


def _largest_call(out: Path) -> int | None:
    """The most owners the server ran in one batched call (0: none batched; None: the server
    did not batch at all, `batch_owners: off`)."""
    log = (out / "logs" / "node1.log").read_text()
    found = re.findall(r"batched calls by owners per call: (\{.*\})", log)
    return max(ast.literal_eval(found[0]), default=0) if found else None


@pytest.mark.parametrize("mode, labels, cuts", [("pipar", "shared", [2]),
                                                ("mpsl", "local", [1, 3])])
def test_batched_copies_train_as_sequential_ones(run_topology, mode, labels, cuts):
    """The server batches only what is ready at once: that depends on how the processes are
    scheduled (a loaded host once ran every task alone), so the batched run is repeated, at
    most three times, until it ran two owners or more in one call; its weights must equal
    the sequential run's."""
    weights, largest = [], []
    for batch in ("auto", "off"):
        for _ in range(3 if batch == "auto" else 1):
            doc = topology_doc(owners=4, mode=mode, labels=labels,
                               model={"name": "vgg5", "norm": "none"},
                               training={"max_iterations": 2, "batch_size": 16},
                               plan={"cuts": cuts, "micro_batches": 4})  # free ports each
            doc["name"] = f"batched_{batch}"
            # a slower server: work piles up while it computes, as when it is the bottleneck
            doc["compute_nodes"][0].update(batch_owners=batch, compute_scale=2)
            _, out = run_topology(doc)
            if (_largest_call(out) or 0) >= 2:
                break
        weights.append(torch.load(out / "model.pt", weights_only=True))
        largest.append(_largest_call(out))
    assert weights[0].keys() == weights[1].keys()
    for k in weights[1]:
        assert torch.equal(weights[0][k], weights[1][k]), k
    assert largest[0] is not None and largest[0] >= 2 and largest[1] is None  # it did batch
