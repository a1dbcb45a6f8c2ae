"""What one epoch holds, for the nodes and the planner alike: every owner's samples, its
iterations, the aggregation rounds, and the optimizer a part trains with."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from mpsl.data import load_labels, partition
from mpsl.spec import DatasetSpec, Topology, TrainingSpec


def owner_indices(topo: Topology) -> list[np.ndarray]:
    """Every owner's training-sample indices: the same on every node that asks."""
    ds = topo.dataset
    labels = _labels(ds.name, ds.root, tuple(sorted(dict(ds.options).items())))
    return partition(labels, len(topo.owners), ds.partition, ds.alpha, ds.seed,
                     ds.samples_per_owner)


@functools.lru_cache(maxsize=8)
def _labels(name: str, root: str | None, options: tuple[tuple[str, object], ...]) -> np.ndarray:
    labels = load_labels(name, root, "train", **dict(options))
    labels.setflags(write=False)
    return labels


def owner_samples(topo: Topology) -> list[int]:
    """Training samples of every owner, from the data set's real size and partition."""
    return [len(p) for p in owner_indices(topo)]


def dataset_train_size(ds: DatasetSpec) -> int:
    """Samples in the training split of the topology's data set."""
    return len(_labels(ds.name, ds.root, tuple(sorted(dict(ds.options).items()))))


def iterations_per_epoch(training: TrainingSpec, samples: int) -> int:
    """ceil(samples / B): the last, partial batch is kept; capped by training.max_iterations."""
    n = math.ceil(samples / training.batch_size)
    cap = training.max_iterations
    return n if cap is None else min(n, cap)


def round_ends(iterations: Sequence[int], aggregate_every: int | None) -> list[int]:
    """Iteration counts (per epoch) that end an aggregation round; the last is the epoch end.

    Owners with fewer iterations than a round's count take part with what they have; an owner
    with no data takes part in every round with nothing.
    """
    longest = max(iterations, default=0)
    if not aggregate_every:
        return [longest]
    return list(range(aggregate_every, longest, aggregate_every)) + [longest]


def round_of(iteration_in_epoch: int, ends: Sequence[int]) -> int:
    """The round (within its epoch) of an iteration, given `round_ends`."""
    return next(r for r, end in enumerate(ends) if iteration_in_epoch < end or
                r == len(ends) - 1)


def make_optimizer(params: Iterable[torch.nn.Parameter], spec: TrainingSpec,
                   lr: float | None = None) -> torch.optim.Optimizer:
    """The optimizer of one part's copy (`lr` replaces the topology's, e.g. 0 to profile)."""
    rate = spec.lr if lr is None else lr
    params = list(params)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=rate, weight_decay=spec.weight_decay)
    return torch.optim.SGD(params, lr=rate, momentum=spec.momentum,
                           weight_decay=spec.weight_decay)
