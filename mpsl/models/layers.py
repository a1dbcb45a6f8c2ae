"""Building blocks of the zoo: norms, activations, conv and dense layers."""

from __future__ import annotations

import torch
from torch import nn

from mpsl.geometry import group_count

NORMS: tuple[str, ...] = ("batch", "group", "none")
"""Valid values of the ``norm`` argument of :func:`mpsl.models.build_model`."""


def check_norm(norm: str) -> None:
    """Raise ValueError unless ``norm`` is one of :data:`NORMS`."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid norms: {', '.join(NORMS)}")


def make_norm(norm: str, channels: int) -> nn.Module:
    """A 2-d normalization over ``channels``: BatchNorm2d, GroupNorm or Identity."""
    check_norm(norm)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(group_count(channels), channels)
    return nn.Identity()


def make_act(act: str | None) -> nn.Module:
    """``relu``, ``hardswish`` or None (Identity); never in place, so a layer may start a part
    whose input is a leaf tensor."""
    if act is None:
        return nn.Identity()
    if act == "relu":
        return nn.ReLU()
    if act == "hardswish":
        return nn.Hardswish()
    raise ValueError(f"unknown activation {act!r}; valid: relu, hardswish, None")


# the smallest batch a built model trains on (its geometry's, `mpsl.geometry.smallest_batch`):
# `mpsl.models.smallest_batch` reads it instead of running the model
SMALLEST_BATCH = "smallest_batch"


def noted(model: nn.Sequential, batch: int) -> nn.Sequential:
    """`model` with `SMALLEST_BATCH` set to `batch`."""
    setattr(model, SMALLEST_BATCH, batch)
    return model


def conv_norm_act(
    in_ch: int,
    out_ch: int,
    kernel: int,
    norm: str,
    act: str | None,
    stride: int = 1,
    groups: int = 1,
) -> nn.Sequential:
    """conv (padding ``kernel // 2``, bias only without a norm), norm, activation."""
    return nn.Sequential(
        nn.Conv2d(
            in_ch,
            out_ch,
            kernel,
            stride=stride,
            padding=kernel // 2,
            groups=groups,
            bias=norm == "none",
        ),
        make_norm(norm, out_ch),
        make_act(act),
    )


class ConvBlock(nn.Module):
    """One layer: conv, norm, activation and an optional 2x2 max-pool; label ``conv{k}-{C}``."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        *,
        norm: str = "batch",
        act: str | None = "relu",
        stride: int = 1,
        pool: bool = False,
    ) -> None:
        super().__init__()
        self.label = f"conv{kernel}-{out_ch}"
        self.conv = nn.Conv2d(
            in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=norm == "none"
        )
        self.norm = make_norm(norm, out_ch)
        self.act = make_act(act)
        self.pool: nn.Module = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class Dense(nn.Module):
    """One layer: optional global average pool, flatten, linear, optional activation; label
    ``fc-{out}``. Never normalized, so ``group``/``none`` models keep no batch statistics."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        act: str | None = None,
        global_pool: bool = False,
        flatten: bool = False,
    ) -> None:
        super().__init__()
        self.label = f"fc-{out_features}"
        self.pool: nn.Module = nn.AdaptiveAvgPool2d(1) if global_pool else nn.Identity()
        self.flatten: nn.Module = nn.Flatten(1) if (flatten or global_pool) else nn.Identity()
        self.fc = nn.Linear(in_features, out_features)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(self.flatten(self.pool(x))))
