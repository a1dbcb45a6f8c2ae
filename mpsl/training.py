"""What a run trains, for the nodes and the planner alike: the model with the run's initial
weights and its input, every owner's samples and iterations, the aggregation rounds, and the
optimizer a part trains with."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from mpsl.data import dataset_info, load_labels, partition
from mpsl.geometry import smallest_batch
from mpsl.spec import DatasetSpec, Topology, TrainingSpec

if TYPE_CHECKING:  # torch is imported where a model or optimizer is made, not for sizes
    import torch


def input_shape(topo: Topology) -> tuple[tuple[int, int, int], int]:
    """(C, H, W) of one sample of the topology's data set, and its number of classes."""
    info = dataset_info(topo.dataset.name, **dict(topo.dataset.options))
    return (info.channels, info.image_size, info.image_size), info.num_classes


def smallest_micro_batch(topo: Topology) -> int:
    """The smallest micro-batch the topology's model trains on, from its geometry
    (`mpsl.geometry.smallest_batch`: no model built, no torch imported)."""
    return smallest_batch(topo.model.name, topo.model.norm, input_shape(topo)[0][1])


def build_full_model(topo: Topology) -> torch.nn.Sequential:
    """The whole model with the run's initial weights: every node builds the same one."""
    import torch

    from mpsl.models import build_model

    (channels, size, _), classes = input_shape(topo)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(topo.training.seed)
        return build_model(topo.model.name, num_classes=classes, in_channels=channels,
                           image_size=size, norm=topo.model.norm)


def num_layers(topo: Topology) -> int:
    """Layers of the topology's model (what a plan cuts)."""
    from mpsl.models import build_model

    (channels, size, _), classes = input_shape(topo)
    return len(build_model(topo.model.name, classes, channels, size, topo.model.norm))


def owner_indices(topo: Topology) -> list[np.ndarray]:
    """Every owner's training-sample indices: the same on every node that asks."""
    ds = topo.dataset
    labels = _labels(ds.name, ds.root, json.dumps(dict(ds.options), sort_keys=True))
    return partition(labels, len(topo.owners), ds.partition, ds.alpha, ds.seed,
                     ds.samples_per_owner)


@functools.lru_cache(maxsize=8)
def _labels(name: str, root: str | None, options: str) -> np.ndarray:
    """The training labels, cached per data set (`options` as JSON: a hashable key)."""
    labels = load_labels(name, root, "train", **json.loads(options))
    labels.setflags(write=False)
    return labels


def owner_samples(topo: Topology) -> list[int]:
    """Training samples of every owner, from the data set's real size and partition."""
    return [len(p) for p in owner_indices(topo)]


def dataset_train_size(ds: DatasetSpec) -> int:
    """Samples in the training split of the topology's data set."""
    return len(_labels(ds.name, ds.root, json.dumps(dict(ds.options), sort_keys=True)))


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


def mode_round_ends(mode: str, iterations: Sequence[int],
                    aggregate_every: int | None) -> list[int]:
    """`round_ends`, but for SL, whose owners take turns: one round per epoch."""
    if mode == "sl":
        return [max(iterations, default=0)]
    return round_ends(iterations, aggregate_every)


def round_of(iteration_in_epoch: int, ends: Sequence[int]) -> int:
    """The round (within its epoch) of an iteration, given `round_ends`."""
    return next(r for r, end in enumerate(ends) if iteration_in_epoch < end or
                r == len(ends) - 1)


def round_start(iterations: int, ends: Sequence[int], round_id: int) -> int:
    """The first iteration (counted over the run) of round `round_id` for an owner with
    `iterations` per epoch, given `round_ends` (an owner rejoining at that round starts
    there)."""
    epoch, r = divmod(round_id, len(ends))
    return epoch * iterations + (min(ends[r - 1], iterations) if r else 0)


def make_optimizer(params: Iterable[torch.nn.Parameter], spec: TrainingSpec,
                   lr: float | None = None) -> torch.optim.Optimizer:
    """The optimizer of one part's copy (`lr` replaces the topology's, e.g. 0 to profile)."""
    import torch

    rate = spec.lr if lr is None else lr
    params = list(params)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=rate, weight_decay=spec.weight_decay)
    return torch.optim.SGD(params, lr=rate, momentum=spec.momentum,
                           weight_decay=spec.weight_decay)
