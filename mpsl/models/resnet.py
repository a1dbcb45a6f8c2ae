"""ResNet-18/50/101 (CIFAR-style 3x3 stem): stem, one layer per residual block, dense head."""

from __future__ import annotations

import torch
from torch import nn

from mpsl.geometry import EXPANSION, RESNET_CONFIGS, RESNET_STEM, STAGE_WIDTHS, maps
from mpsl.models.layers import ConvBlock, Dense, make_norm


def _shortcut(in_ch: int, out_ch: int, stride: int, norm: str) -> nn.Module:
    """Identity, or a strided 1x1 projection with a norm where the shape changes."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=norm == "none"),
        make_norm(norm, out_ch),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; label ``res3-{C}``."""

    expansion = EXPANSION["basic"]

    def __init__(self, in_ch: int, width: int, stride: int, norm: str) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.label = f"res3-{out_ch}"
        bias = norm == "none"
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride=stride, padding=1, bias=bias)
        self.norm1 = make_norm(norm, width)
        self.conv2 = nn.Conv2d(width, out_ch, 3, padding=1, bias=bias)
        self.norm2 = make_norm(norm, out_ch)
        self.relu = nn.ReLU()
        self.shortcut = _shortcut(in_ch, out_ch, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand by 4, residual; label ``bottle-{C}``."""

    expansion = EXPANSION["bottleneck"]

    def __init__(self, in_ch: int, width: int, stride: int, norm: str) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.label = f"bottle-{out_ch}"
        bias = norm == "none"
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=bias)
        self.norm1 = make_norm(norm, width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=bias)
        self.norm2 = make_norm(norm, width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=bias)
        self.norm3 = make_norm(norm, out_ch)
        self.relu = nn.ReLU()
        self.shortcut = _shortcut(in_ch, out_ch, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def build_resnet(
    name: str, num_classes: int, in_channels: int, image_size: int, norm: str
) -> nn.Sequential:
    """ResNet ``name``: ``conv3-64`` stem (stride 1, no max-pool), the residual blocks (each
    stage after the first halves the map while it is at least 2x2), ``fc-X`` with global
    average pooling."""
    kind, blocks = RESNET_CONFIGS[name]
    block_cls: type[BasicBlock | Bottleneck] = BasicBlock if kind == "basic" else Bottleneck
    layers: list[nn.Module] = [ConvBlock(in_channels, RESNET_STEM, 3, norm=norm, act="relu")]
    strides = iter(maps(name, image_size).strides)
    channels = RESNET_STEM
    for width, count in zip(STAGE_WIDTHS, blocks):
        for _ in range(count):
            layers.append(block_cls(channels, width, next(strides), norm))
            channels = width * block_cls.expansion
    layers.append(Dense(channels, num_classes, global_pool=True))
    return nn.Sequential(*layers)
