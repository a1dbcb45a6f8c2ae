"""The zoo's architectures as plain data, and the map sizes they give, without torch.

`mpsl.models` builds its layers from these configs and strides; the planner reads here the
smallest batch a model trains on (`smallest_batch`) without building it, so a command given a
profile need not import torch (about a second). Maps are square: a size is a side in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MODEL_NAMES: tuple[str, ...] = (
    "mlp",
    "vgg5",
    "vgg11",
    "vgg16",
    "vgg19",
    "resnet18",
    "resnet50",
    "resnet101",
    "mobilenetv3_small",
    "mobilenetv3_large",
)

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
        (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"),
        4096,
    ),
}

# name: (block kind, blocks per stage)
RESNET_CONFIGS: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)
RESNET_STEM = 64  # the stem conv's channels
EXPANSION = {"basic": 1, "bottleneck": 4}  # a block's output channels over its width

# One bneck per row: (kernel, expansion width, output width, squeeze-excite, activation, stride)
BneckSpec = tuple[int, int, int, bool, str, int]

MOBILENET_SMALL: tuple[BneckSpec, ...] = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 2),
    (5, 240, 40, True, "hardswish", 1),
    (5, 240, 40, True, "hardswish", 1),
    (5, 120, 48, True, "hardswish", 1),
    (5, 144, 48, True, "hardswish", 1),
    (5, 288, 96, True, "hardswish", 2),
    (5, 576, 96, True, "hardswish", 1),
    (5, 576, 96, True, "hardswish", 1),
)
MOBILENET_LARGE: tuple[BneckSpec, ...] = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2),
    (3, 200, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 480, 112, True, "hardswish", 1),
    (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2),
    (5, 960, 160, True, "hardswish", 1),
    (5, 960, 160, True, "hardswish", 1),
)
MOBILENET_STEM = 16  # the stem conv's channels
# name: (bneck rows, last conv width, hidden dense width)
MOBILENET_CONFIGS: dict[str, tuple[tuple[BneckSpec, ...], int, int]] = {
    "mobilenetv3_small": (MOBILENET_SMALL, 576, 1024),
    "mobilenetv3_large": (MOBILENET_LARGE, 960, 1280),
}


def conv_out_size(size: int, kernel: int, stride: int) -> int:
    """Spatial size after a convolution with padding ``kernel // 2``."""
    pad = kernel // 2
    return (size + 2 * pad - kernel) // stride + 1


def down_stride(size: int) -> int:
    """2 where the map can still be halved (``size >= 2``), else 1, so maps never vanish."""
    return 2 if size >= 2 else 1


def group_count(channels: int, max_groups: int = 32) -> int:
    """Number of GroupNorm groups for ``channels``: min(32, C), or gcd(32, C) if that does not
    divide C."""
    groups = min(max_groups, channels)
    if channels % groups:
        groups = math.gcd(max_groups, channels)
    return groups


@dataclass(frozen=True)
class Maps:
    """A model's maps on ``image_size`` inputs: ``strides`` per downsampling place (VGG: per
    conv block, 2 where a max-pool follows it; ResNet: per residual block; MobileNetV3: the
    stem, then per bneck; the mlp: none), ``norms`` the (channels, side) of every norm's input
    (the mlp has none; with norm ``none`` they are Identity) and ``last`` the side of the map
    the dense head takes."""

    strides: tuple[int, ...]
    norms: tuple[tuple[int, int], ...]
    last: int


def maps(name: str, image_size: int) -> Maps:
    """The maps of model ``name`` (one of `MODEL_NAMES`) on ``image_size`` inputs."""
    if name in VGG_CONFIGS:
        return _vgg(VGG_CONFIGS[name][0], image_size)
    if name in RESNET_CONFIGS:
        return _resnet(*RESNET_CONFIGS[name], image_size)
    if name in MOBILENET_CONFIGS:
        rows, last_conv, _ = MOBILENET_CONFIGS[name]
        return _mobilenet(rows, last_conv, image_size)
    if name == "mlp":
        return Maps((), (), image_size)
    raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")


def smallest_batch(name: str, norm: str, image_size: int) -> int:
    """The smallest batch model ``name`` trains on: 2 where at batch 1 one of its norms would
    normalize a single value, which torch refuses (BatchNorm in training: a channel's 1x1
    map; GroupNorm: a group of one channel on a 1x1 map), else 1."""
    for channels, side in maps(name, image_size).norms:
        if side == 1 and (norm == "batch" or norm == "group" and group_count(channels) == channels):
            return 2
    return 1


def _vgg(config: tuple[int | str, ...], size: int) -> Maps:
    strides: list[int] = []
    norms: list[tuple[int, int]] = []
    for i, item in enumerate(config):
        if item == "M":
            continue
        assert isinstance(item, int)
        norms.append((item, size))  # a block's norm sees its map before its pool
        pool = i + 1 < len(config) and config[i + 1] == "M" and size >= 2
        strides.append(2 if pool else 1)
        size //= strides[-1]
    return Maps(tuple(strides), tuple(norms), size)


def _resnet(kind: str, blocks: tuple[int, ...], size: int) -> Maps:
    expansion = EXPANSION[kind]
    strides: list[int] = []
    norms = [(RESNET_STEM, size)]  # the stem's
    channels = RESNET_STEM
    for stage, (width, count) in enumerate(zip(STAGE_WIDTHS, blocks)):
        for i in range(count):
            stride = down_stride(size) if stage > 0 and i == 0 else 1
            out, out_ch = conv_out_size(size, 3, stride), width * expansion
            norms += [(width, out), (out_ch, out)] if kind == "basic" else \
                [(width, size), (width, out), (out_ch, out)]
            if stride != 1 or channels != out_ch:  # the shortcut's projection
                norms.append((out_ch, out))
            strides.append(stride)
            channels, size = out_ch, out
    return Maps(tuple(strides), tuple(norms), size)


def _mobilenet(rows: tuple[BneckSpec, ...], last_conv: int, size: int) -> Maps:
    strides = [down_stride(size)]  # the stem's
    size = conv_out_size(size, 3, strides[0])
    norms = [(MOBILENET_STEM, size)]
    channels = MOBILENET_STEM
    for kernel, exp, out_ch, _, _, stride in rows:
        strides.append(down_stride(size) if stride == 2 else 1)
        if exp != channels:  # the 1x1 expansion
            norms.append((exp, size))
        size = conv_out_size(size, kernel, strides[-1])
        norms += [(exp, size), (out_ch, size)]  # depthwise, projection
        channels = out_ch
    norms.append((last_conv, size))
    return Maps(tuple(strides), tuple(norms), size)
