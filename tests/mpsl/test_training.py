"""Tests of mpsl.training: owner samples from the real data set, iterations, rounds, optimizer."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from mpsl.data import load_dataset, load_labels
from mpsl.spec import TrainingSpec
from mpsl.topology import parse
from mpsl.training import (
    dataset_train_size,
    iterations_per_epoch,
    make_optimizer,
    owner_indices,
    owner_samples,
    round_ends,
    round_of,
)

DOC: dict[str, Any] = {
    "model": {"name": "mlp"},
    "dataset": {"name": "digits"},
    "plan": {"cuts": [1], "micro_batches": 2},
    "data_owners": {"count": 4},
    "compute_nodes": [{"name": "server", "address": "tcp://127.0.0.1:5590"}],
}


def topo(**dataset: Any):  # noqa: ANN201
    doc = copy.deepcopy(DOC)
    doc["dataset"].update(dataset)
    return parse(doc, "t.yaml")


def test_owner_samples_come_from_the_real_data_set() -> None:
    n = len(load_dataset("digits", split="train")[1])
    assert sum(owner_samples(topo())) == n == dataset_train_size(topo().dataset)
    assert owner_samples(topo()) == [len(p) for p in owner_indices(topo())]
    assert owner_samples(topo(samples_per_owner=50)) == [50] * 4
    skewed = owner_samples(topo(partition="dirichlet", alpha=0.3, seed=1))
    assert sum(skewed) == n and len(set(skewed)) > 1


def test_synthetic_labels_without_images_equal_the_loaded_ones() -> None:
    opts = {"shape": [3, 8, 8], "size": 300, "num_classes": 5, "seed": 3}
    for split in ("train", "test"):
        full = load_dataset("synthetic", None, split, **opts)[1].numpy()
        assert (load_labels("synthetic", None, split, **opts) == full).all()
    assert owner_samples(topo(name="synthetic", options={"size": 50000})) == [12500] * 4
    shaped = topo(name="synthetic", options={"size": 80, "shape": [3, 32, 32]})  # a list option
    assert owner_samples(shaped) == [20] * 4


def test_iterations_keep_the_partial_batch_and_honour_the_cap() -> None:
    spec = TrainingSpec(batch_size=32)
    assert iterations_per_epoch(spec, 64) == 2 and iterations_per_epoch(spec, 65) == 3
    assert iterations_per_epoch(spec, 0) == 0
    assert iterations_per_epoch(TrainingSpec(batch_size=32, max_iterations=2), 1000) == 2


def test_round_ends() -> None:
    assert round_ends([10, 12, 7], None) == [12]
    assert round_ends([10, 12, 7], 5) == [5, 10, 12]
    assert round_ends([10], 5) == [5, 10]
    assert round_ends([3], 5) == [3]
    assert [round_of(j, [5, 10, 12]) for j in (0, 4, 5, 11)] == [0, 0, 1, 2]


def test_make_optimizer_follows_the_training_spec() -> None:
    params = [torch.nn.Parameter(torch.ones(3))]
    sgd = make_optimizer(params, TrainingSpec(lr=0.5, momentum=0.9, weight_decay=0.1))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["lr"] == 0.5 and sgd.defaults["momentum"] == 0.9
    assert sgd.defaults["weight_decay"] == 0.1
    adam = make_optimizer(params, TrainingSpec(optimizer="adam"), lr=0.0)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["lr"] == 0.0


@pytest.mark.parametrize("name", ["o", "owner", "owner1x", "server"])
def test_owner_index_of_other_names_is_none(name: str) -> None:
    from mpsl.names import owner_index, owner_name

    assert owner_index(name) is None
    assert owner_index(owner_name(12)) == 12
