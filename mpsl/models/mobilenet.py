"""MobileNetV3 small and large (Howard et al. 2019, Tables 1-2), one layer per bneck block."""

from __future__ import annotations

import torch
from torch import nn

from mpsl.geometry import MOBILENET_CONFIGS, MOBILENET_STEM, BneckSpec, maps
from mpsl.models.layers import ConvBlock, Dense, conv_norm_act


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never below 90% of it (the paper's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class SqueezeExcite(nn.Module):
    """Global pool, 1x1 reduce to a quarter, ReLU, 1x1 expand, hard-sigmoid, scale the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeezed = make_divisible(channels / 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))
        return x * scale


class InvertedResidual(nn.Module):
    """A bneck: 1x1 expand, depthwise kxk, optional SE, 1x1 project, residual when the shape
    is kept; label ``bneck{k}-{C}``."""

    def __init__(self, in_ch: int, spec: BneckSpec, stride: int, norm: str) -> None:
        super().__init__()
        kernel, exp, out_ch, se, act, _ = spec
        self.label = f"bneck{kernel}-{out_ch}"
        self.expand: nn.Module = (
            conv_norm_act(in_ch, exp, 1, norm, act) if exp != in_ch else nn.Identity()
        )
        self.depthwise = conv_norm_act(exp, exp, kernel, norm, act, stride=stride, groups=exp)
        self.se: nn.Module = SqueezeExcite(exp) if se else nn.Identity()
        self.project = conv_norm_act(exp, out_ch, 1, norm, None)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return out + x if self.use_residual else out


def build_mobilenetv3(
    name: str, num_classes: int, in_channels: int, image_size: int, norm: str
) -> nn.Sequential:
    """MobileNetV3 ``name``: ``conv3-16`` stem (hard-swish), the bnecks, ``conv1-{576|960}``,
    ``fc-{1024|1280}`` (global pool + dense + hard-swish) and ``fc-X``. A stride of 2 becomes 1
    once the map is 1x1, so 8x8 inputs work."""
    rows, last_conv, hidden = MOBILENET_CONFIGS[name]
    stem, *strides = maps(name, image_size).strides
    layers: list[nn.Module] = [
        ConvBlock(in_channels, MOBILENET_STEM, 3, norm=norm, act="hardswish", stride=stem)
    ]
    channels = MOBILENET_STEM
    for spec, stride in zip(rows, strides, strict=True):
        layers.append(InvertedResidual(channels, spec, stride, norm))
        channels = spec[2]
    layers.append(ConvBlock(channels, last_conv, 1, norm=norm, act="hardswish"))
    layers.append(Dense(last_conv, hidden, act="hardswish", global_pool=True))
    layers.append(Dense(hidden, num_classes))
    return nn.Sequential(*layers)
