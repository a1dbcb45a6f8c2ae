"""VGG-5/11/16/19 as a sequence of conv blocks (conv-norm-ReLU[-pool]) and dense layers."""

from __future__ import annotations

from torch import nn

from mpsl.geometry import VGG_CONFIGS, maps
from mpsl.models.layers import ConvBlock, Dense


def build_vgg(
    name: str, num_classes: int, in_channels: int, image_size: int, norm: str
) -> nn.Sequential:
    """VGG ``name``: its conv blocks, then ``fc-H`` (flatten included), [``fc-H``,] ``fc-X``.

    vgg5 has one hidden dense layer (``fc-128``), the others two (``fc-4096``), as in the papers.
    The first dense layer's input size is computed from the map size at build time.
    """
    config, hidden = VGG_CONFIGS[name]
    geometry = maps(name, image_size)
    layers: list[nn.Module] = []
    channels = in_channels
    widths = [item for item in config if item != "M"]
    for width, stride in zip(widths, geometry.strides, strict=True):
        assert isinstance(width, int)
        layers.append(ConvBlock(channels, width, 3, norm=norm, act="relu", pool=stride == 2))
        channels = width
    size = geometry.last
    n_hidden = 1 if name == "vgg5" else 2
    features = channels * size * size
    for j in range(n_hidden):
        layers.append(Dense(features, hidden, act="relu", flatten=j == 0))
        features = hidden
    layers.append(Dense(features, num_classes))
    return nn.Sequential(*layers)
