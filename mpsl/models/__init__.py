"""The model zoo: every model is an ``nn.Sequential`` of indivisible, labelled layers."""

from __future__ import annotations

from torch import nn

from mpsl.models.layers import MIN_NORM_SIDE, NORMS, check_norm
from mpsl.models.mlp import build_mlp
from mpsl.models.mobilenet import MOBILENET_CONFIGS, build_mobilenetv3
from mpsl.models.resnet import RESNET_CONFIGS, build_resnet
from mpsl.models.split import full_key, layer_labels, part_key_map, split_model
from mpsl.models.vgg import VGG_CONFIGS, build_vgg

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
        return build_vgg(name, num_classes, in_channels, image_size, norm)
    if name in RESNET_CONFIGS:
        return build_resnet(name, num_classes, in_channels, image_size, norm)
    if name in MOBILENET_CONFIGS:
        return build_mobilenetv3(name, num_classes, in_channels, image_size, norm)
    return build_mlp(num_classes, in_channels, image_size)


def smallest_batch(model: nn.Sequential, input_shape: tuple[int, ...]) -> int:
    """The smallest batch `model` trains on: 2 when a BatchNorm would see a single value per
    channel at batch 1 (1x1 maps, or a flat input), which training-mode BatchNorm refuses.

    A model of `build_model` notes the smallest map side its norms see (`MIN_NORM_SIDE`),
    which answers at once; any other is run on batch 1 on its device (a model on the meta
    device, shapes alone, will do, though torch's first meta operation imports for a second
    or more)."""
    import torch

    side = getattr(model, MIN_NORM_SIDE, None)
    if isinstance(side, int):
        batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        return 2 if batch_norm and side == 1 else 1
    device = next((p.device for p in model.parameters()), torch.device("cpu"))  # meta: shapes
    seen: list[int] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0][0, 0].numel()))
             for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return 2 if seen and min(seen) == 1 else 1
