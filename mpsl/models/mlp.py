"""A tiny four-layer perceptron, for fast tests."""

from __future__ import annotations

from torch import nn

from mpsl.models.layers import Dense

MLP_WIDTHS = (64, 64, 32)


def build_mlp(num_classes: int, in_channels: int, image_size: int) -> nn.Sequential:
    """``fc-64`` (flatten included), ``fc-64``, ``fc-32`` (each with ReLU), ``fc-X``."""
    layers: list[nn.Module] = []
    features = in_channels * image_size * image_size
    for i, width in enumerate(MLP_WIDTHS):
        layers.append(Dense(features, width, act="relu", flatten=i == 0))
        features = width
    layers.append(Dense(features, num_classes))
    return nn.Sequential(*layers)
