"""VGG-5/11/16/19 as a sequence of conv blocks (conv-norm-ReLU[-pool]) and dense layers."""

from __future__ import annotations

from torch import nn

from mpsl.models.layers import ConvBlock, Dense, noted

# An int is a 3x3 conv block with that many channels, "M" a 2x2 max-pool after the block
# before it (skipped where the map is already 1x1).
VGG_CONFIGS: dict[str, tuple[tuple[int | str, ...], int]] = {
    # name: (conv config, width of the hidden dense layers)
    "vgg5": ((32, "M", 64, "M", 64), 128),
    "vgg11": ((64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"), 4096),
    "vgg16": (
        (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
        4096,
    ),
    "vgg19": (
        (
            64,
            64,
            "M",
            128,
            128,
            "M",
            256,
            256,
            256,
            256,
            "M",
            512,
            512,
            512,
            512,
            "M",
            512,
            512,
            512,
            512,
            "M",
        ),  # fmt: skip
        4096,
    ),
}


def build_vgg(
    name: str, num_classes: int, in_channels: int, image_size: int, norm: str
) -> nn.Sequential:
    """VGG ``name``: its conv blocks, then ``fc-H`` (flatten included), [``fc-H``,] ``fc-X``.

    vgg5 has one hidden dense layer (``fc-128``), the others two (``fc-4096``), as in the papers.
    The first dense layer's input size is computed from the map size at build time.
    """
    config, hidden = VGG_CONFIGS[name]
    layers: list[nn.Module] = []
    channels, size = in_channels, image_size
    normed = size  # the smallest map a norm sees: a block's, before its pool
    for i, item in enumerate(config):
        if item == "M":
            continue
        assert isinstance(item, int)
        pool = i + 1 < len(config) and config[i + 1] == "M" and size >= 2
        layers.append(ConvBlock(channels, item, 3, norm=norm, act="relu", pool=pool))
        channels, normed = item, min(normed, size)
        if pool:
            size //= 2
    n_hidden = 1 if name == "vgg5" else 2
    features = channels * size * size
    for j in range(n_hidden):
        layers.append(Dense(features, hidden, act="relu", flatten=j == 0))
        features = hidden
    layers.append(Dense(features, num_classes))
    return noted(nn.Sequential(*layers), normed)
