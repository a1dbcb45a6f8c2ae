"""Cutting a sequential model into parts that share its layers, and naming their parameters."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from itertools import pairwise

from torch import nn


def layer_labels(model: nn.Sequential) -> list[str]:
    """The ``label`` of every layer (child) of ``model``; the class name where a layer has none."""
    return [str(getattr(layer, "label", type(layer).__name__)) for layer in model.children()]


def check_cuts(num_layers: int, cuts: Sequence[int]) -> list[int]:
    """Validate ``cuts`` for a model of ``num_layers`` layers and return them as ints.

    Cuts are the indices of the first layer of every part but the first: strictly increasing,
    each in ``(0, num_layers)``. Raises ValueError naming the first bad cut.
    """
    checked: list[int] = []
    for cut in cuts:
        if isinstance(cut, bool):
            raise ValueError(f"cut {cut!r} is not an integer")
        try:
            index = operator.index(cut)
        except TypeError:
            raise ValueError(f"cut {cut!r} is not an integer") from None
        if not 0 < index < num_layers:
            raise ValueError(
                f"cut {index} is out of range: cuts must lie in (0, {num_layers}) "
                f"for a model of {num_layers} layers"
            )
        if checked and index <= checked[-1]:
            raise ValueError(
                f"cut {index} does not follow cut {checked[-1]}: cuts must be strictly increasing"
            )
        checked.append(index)
    return checked


def part_ranges(num_layers: int, cuts: Sequence[int]) -> list[tuple[int, int]]:
    """The half-open layer ranges ``[start, stop)`` of the parts made by ``cuts``."""
    bounds = [0, *check_cuts(num_layers, cuts), num_layers]
    return list(pairwise(bounds))


def split_model(model: nn.Sequential, cuts: Sequence[int]) -> list[nn.Sequential]:
    """Cut ``model`` before each layer index in ``cuts``: ``len(cuts) + 1`` parts.

    The parts hold the very modules of ``model`` (no copy), renumbered from 0, so training a
    part trains the model. Use :func:`part_key_map` to name a part's entries as the model does.
    """
    layers = list(model.children())
    return [nn.Sequential(*layers[a:b]) for a, b in part_ranges(len(layers), cuts)]


def full_key(cut_start: int, key: str) -> str:
    """The full model's name of a part's state_dict ``key``: the leading index plus
    ``cut_start`` (``0.conv.weight`` of a part starting at 3 is ``3.conv.weight``)."""
    head, dot, rest = key.partition(".")
    if not head.isdigit():
        raise ValueError(f"state_dict key {key!r} does not start with a layer index")
    return f"{int(head) + cut_start}{dot}{rest}"


def part_key_map(cut_start: int, part: nn.Sequential) -> dict[str, str]:
    """Map every key of ``part.state_dict()`` (parameters and buffers) to the full model's key,
    for a part whose first layer is layer ``cut_start`` of the model."""
    if cut_start < 0:
        raise ValueError(f"cut_start must be >= 0, got {cut_start}")
    return {key: full_key(cut_start, key) for key in part.state_dict()}
