"""The zoo's geometry: the maps every norm sees, as the built models have them, and the
smallest batch read from it without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from mpsl.geometry import MODEL_NAMES, maps, smallest_batch
from mpsl.models import build_model

SIZES = (1, 2, 3, 5, 8, 28, 32)


def _norm_inputs(model: nn.Module, size: int) -> list[tuple[int, int]]:
    """(channels, side) of every BatchNorm's input in a pass at batch 1 (meta: shapes)."""
    seen: list[tuple[int, int]] = []
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.register_forward_pre_hook(
                lambda mod, inp: seen.append((inp[0].shape[1], inp[0].shape[-1])))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size, device="meta"))
    return seen


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_maps_name_every_norm_the_built_model_runs(name: str) -> None:
    """Every norm of the built model, with the channels and map side its input has: no more,
    no fewer (the forward pass also checks the strides and the last side, which the dense
    head's size comes from)."""
    for size in SIZES:
        with torch.device("meta"):
            model = build_model(name, 10, 3, size, "batch")
        assert sorted(maps(name, size).norms) == sorted(_norm_inputs(model, size)), (name, size)


def test_smallest_batch() -> None:
    """2 where a norm would see one value at batch 1: BatchNorm on a 1x1 map, GroupNorm on a
    1x1 map of a group of one channel (at most 32 channels: one group each)."""
    assert smallest_batch("vgg19", "batch", 28) == 2  # 28 -> 14 -> 7 -> 3 -> 1: 1x1 blocks
    assert smallest_batch("vgg19", "batch", 32) == 1  # its last blocks see 2x2, then the pool
    assert smallest_batch("vgg19", "group", 28) == 1  # 512 channels: 16 a group
    assert smallest_batch("mobilenetv3_small", "group", 8) == 2  # 24 channels on 1x1 maps
    assert smallest_batch("mobilenetv3_small", "group", 32) == 1
    assert smallest_batch("mobilenetv3_small", "none", 1) == 1
    assert smallest_batch("mlp", "batch", 1) == 1  # no norm at all
    with pytest.raises(ValueError, match="unknown model 'vgg7'"):
        maps("vgg7", 32)


def test_geometry_imports_no_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None; "
            "from mpsl.geometry import smallest_batch; "
            "from planner.resources import smallest_micro_batch; "
            "assert smallest_batch('mobilenetv3_small', 'batch', 32) == 2")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
