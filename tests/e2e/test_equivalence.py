"""Split, micro-batched, pipelined training over real sockets equals unsplit training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from mpsl.data import batches
from mpsl.topology import load
from mpsl.trace import read_events
from mpsl.training import build_full_model, make_optimizer, owner_samples
from nodes.parts import weighted_average
from tests.e2e.conftest import owner_data, topology_doc


def train_unsplit(topo_path: Path, owner: int, iterations: int) -> dict[str, torch.Tensor]:
    """The reference: the whole model, one process, batch B, one step per batch."""
    topo = load(topo_path)
    x, y = owner_data(topo, owner)
    model = build_full_model(topo)
    opt = make_optimizer(model.parameters(), topo.training)
    order = batches(len(x), topo.training.batch_size, topo.training.seed, 0)[:iterations]
    for idx in order:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.state_dict()


def assert_same_weights(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)


def trained(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model.pt", weights_only=True)


CASES = [
    ("vgg5", "pipar", "shared", [2], 1, 4, "gpipe"),  # PiPar: two parts, N = 4 (B = 30: uneven)
    ("vgg5", "mpsl", "local", [1, 2, 4], 2, 4, "gpipe"),  # MP-SL: U-shape, two compute nodes
    ("mlp", "sfl", "shared", [1], 1, 1, "gpipe"),
    ("vgg5", "pipar", "shared", [2], 1, 4, "1f1b"),  # at most 2 micro-batches in flight
    ("vgg5", "mpsl", "local", [1, 2, 4], 2, 4, {"name": "1f1b", "max_in_flight": 2}),
    ("mlp", "mpsl", "local", [1, 2, 3], 2, 5, {"name": "1f1b", "max_in_flight": 1}),
]


@pytest.mark.parametrize("model, mode, labels, cuts, compute, n, schedule", CASES)
def test_pipelined_equals_unsplit(run_topology, tmp_path, model, mode, labels, cuts, compute, n,
                                  schedule):
    doc = topology_doc(owners=1, compute=compute, mode=mode, labels=labels,
                       model={"name": model, "norm": "none"},
                       training={"max_iterations": 3},
                       plan={"cuts": cuts, "micro_batches": n}, schedule=schedule)
    results, out = run_topology(doc)
    assert results["plan"]["micro_batches"] == [n]
    name = schedule if isinstance(schedule, str) else schedule["name"]
    assert results["schedule"] == results["plan"]["schedule"] == name
    want = train_unsplit(tmp_path / "test.yaml", 0, 3)
    assert_same_weights(trained(out), want)


def test_aggregation_is_sample_weighted_fedavg(run_topology, tmp_path):
    """K = 3 owners with unequal samples: one aggregation = weighted mean of unsplit models."""
    doc = topology_doc(owners=3, compute=1, dataset={"partition": "dirichlet", "alpha": 1.0},
                       training={"max_iterations": 2, "batch_size": 16},
                       plan={"cuts": [2], "micro_batches": 3})
    results, out = run_topology(doc)
    path = tmp_path / "test.yaml"
    counts = owner_samples(load(path))
    assert len(set(counts)) == 3, f"the partition must be unequal, got {counts}"
    assert results["summary"]["samples_per_owner"] == counts
    assert [sum(row) for row in results["partition"]["class_counts"]] == counts
    models = [train_unsplit(path, k, 2) for k in range(3)]
    want = weighted_average(models, counts)
    assert_same_weights(trained(out), want)


def test_a_failing_node_stops_every_process(run_topology, tmp_path):
    """An owner that cannot load its data fails; the launcher names it and stops the rest."""
    from nodes.launch import LaunchError

    doc = topology_doc(owners=2, dataset={"name": "mnist", "root": str(tmp_path / "empty")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(LaunchError, match=r"node (owner\d|aggregator) failed") as err:
        run_topology(doc)
    assert "mnist" in str(err.value)


def test_topology_doc_is_valid(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(topology_doc(owners=2, compute=2, labels="local",
                                                plan={"cuts": [1, 2, 3]})))
    assert load(path).chain == ("node1", "node2")


def test_a_short_last_batch_keeps_each_micro_batch_trainable(run_topology):
    """vgg5 with BatchNorm on 2x2 inputs (its second block sees 1x1 maps) trains on 2 samples
    and more, not on 1 (mpsl.geometry.smallest_batch): at N = 4 the batch of 8 goes in 4
    micro-batches of 2 and the last batch of 3 in one of 3, not in 3 of one (which a
    training-mode BatchNorm refuses: the run failed so before)."""
    doc = topology_doc(owners=1, model={"name": "vgg5", "norm": "batch"},
                       dataset={"name": "synthetic", "options": {"shape": [1, 2, 2],
                                                                 "size": 11}},
                       training={"batch_size": 8}, plan={"cuts": [2], "micro_batches": 4})
    results, out = run_topology(doc)
    assert results["plan"]["micro_batches"] == [4]
    forward = [(e.iter, e.mb) for e in read_events(out / "events.jsonl")
               if e.node == "node1" and e.action.startswith("1F")]
    assert sorted(forward) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
