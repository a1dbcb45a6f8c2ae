"""The model zoo: every model is an ``nn.Sequential`` of indivisible, labelled layers."""

from __future__ import annotations

from torch import nn

from mpsl import geometry
from mpsl.geometry import MOBILENET_CONFIGS, MODEL_NAMES, RESNET_CONFIGS, VGG_CONFIGS
from mpsl.models.layers import NORMS, SMALLEST_BATCH, check_norm, noted
from mpsl.models.mlp import build_mlp
from mpsl.models.mobilenet import build_mobilenetv3
from mpsl.models.resnet import build_resnet
from mpsl.models.split import full_key, layer_labels, part_key_map, split_model
from mpsl.models.vgg import build_vgg

__all__ = [
    "MODEL_NAMES",
    "NORMS",
    "build_model",
    "full_key",
    "layer_labels",
    "part_key_map",
    "smallest_batch",
    "split_model",
]


def build_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    norm: str = "batch",
) -> nn.Sequential:
    """Build model ``name`` for square ``in_channels`` x ``image_size`` x ``image_size`` inputs.

    Every child is one layer with a short ``label`` (``conv3-64``, ``res3-128``, ``bneck5-40``,
    ``fc-10``); a cut may fall between any two. ``norm`` is ``batch`` (BatchNorm2d), ``group``
    (GroupNorm) or ``none``; dense layers are never normalized (so the mlp ignores ``norm``),
    and nothing uses dropout. Weights come from torch's
    default initialization, so the same seed gives the same model.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    check_norm(norm)
    for arg, value in (
        ("num_classes", num_classes),
        ("in_channels", in_channels),
        ("image_size", image_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    if name in VGG_CONFIGS:
        model = build_vgg(name, num_classes, in_channels, image_size, norm)
    elif name in RESNET_CONFIGS:
        model = build_resnet(name, num_classes, in_channels, image_size, norm)
    elif name in MOBILENET_CONFIGS:
        model = build_mobilenetv3(name, num_classes, in_channels, image_size, norm)
    else:
        model = build_mlp(num_classes, in_channels, image_size)
    return noted(model, geometry.smallest_batch(name, norm, image_size))


def smallest_batch(model: nn.Sequential, input_shape: tuple[int, ...]) -> int:
    """The smallest batch `model` trains on: 2 when at batch 1 a norm would normalize a single
    value, which torch refuses: a BatchNorm (in training) a channel's 1x1 map or a flat input,
    a GroupNorm a group of one channel on a 1x1 map.

    A model of `build_model` notes the answer of its geometry (`SMALLEST_BATCH`,
    `mpsl.geometry.smallest_batch`); any other is run on batch 1 on its device (a model on
    the meta device, shapes alone, will do, though torch's first meta operation imports for
    a second or more)."""
    import torch

    noted_batch = getattr(model, SMALLEST_BATCH, None)
    if isinstance(noted_batch, int):
        return noted_batch
    device = next((p.device for p in model.parameters()), torch.device("cpu"))  # meta: shapes

    def single(mod: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        """Stop the pass at a norm whose unit (channel, group) holds one value at batch 1."""
        x = inp[0]
        groups = mod.num_groups if isinstance(mod, nn.GroupNorm) else x.shape[1]
        if x[0, 0].numel() * (x.shape[1] // groups) == 1:
            raise _SingleValue

    norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)
    hooks = [m.register_forward_pre_hook(single) for m in model.modules() if isinstance(m, norms)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    except _SingleValue:
        return 2
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return 1


class _SingleValue(Exception):
    """A norm would normalize a single value (`smallest_batch`'s pass stops there)."""
