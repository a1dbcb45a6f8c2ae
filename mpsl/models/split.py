"""Cutting a sequential model into parts that share its layers, and naming their parameters."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mpsl.cuts import part_ranges


def layer_labels(model: nn.Sequential) -> list[str]:
    """The ``label`` of every layer (child) of ``model``; the class name where a layer has none."""
    return [str(getattr(layer, "label", type(layer).__name__)) for layer in model.children()]


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
