"""Tests of the model zoo: shapes, labels, norms, splitting and micro-batch equivalence."""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mpsl.cuts import part_ranges
from mpsl.geometry import group_count
from mpsl.models import (
    MODEL_NAMES,
    NORMS,
    build_model,
    layer_labels,
    part_key_map,
    smallest_batch,
    split_model,
)
from mpsl.models.layers import SMALLEST_BATCH

# PiPar Tables II and III (mlp: ours, for tests).
LAYER_COUNTS = {
    "mlp": 4,
    "vgg5": 5,
    "vgg11": 11,
    "vgg16": 16,
    "vgg19": 19,
    "resnet18": 10,
    "resnet50": 18,
    "resnet101": 35,
    "mobilenetv3_small": 15,
    "mobilenetv3_large": 19,
}
# (in_channels, image_size): MNIST, CIFAR, Tiny ImageNet, sklearn digits.
GEOMETRIES = {"mnist": (1, 28), "cifar": (3, 32), "tiny": (3, 64), "digits": (1, 8)}
BIG = {"vgg16", "vgg19", "resnet50", "resnet101"}
SHAPE_CASES = [
    (name, geo)
    for name in MODEL_NAMES
    for geo in GEOMETRIES
    if name not in BIG or geo in ("cifar", "digits")
]


def _seeded(name: str, seed: int = 0, **kwargs: object) -> nn.Sequential:
    torch.manual_seed(seed)
    return build_model(name, **kwargs)  # type: ignore[arg-type]


@functools.cache
def _default(name: str, norm: str = "batch") -> nn.Sequential:
    """A 10-class CIFAR-geometry model, built once; for tests that only inspect it."""
    return _seeded(name, norm=norm)


@pytest.fixture(autouse=True, scope="module")
def _free_cached_models() -> Iterator[None]:
    """Drop the cached models (over a GB of weights) once this module's tests are done."""
    yield
    _default.cache_clear()


# --- structure ------------------------------------------------------------------------------


def test_model_names_are_the_zoo() -> None:
    assert set(MODEL_NAMES) == set(LAYER_COUNTS)
    assert len(MODEL_NAMES) == len(set(MODEL_NAMES))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_layer_count_and_labels(name: str) -> None:
    model = _default(name)
    assert isinstance(model, nn.Sequential)
    assert len(model) == LAYER_COUNTS[name]
    labels = layer_labels(model)
    assert len(labels) == len(model)
    assert all(isinstance(label, str) and label for label in labels)
    assert all(isinstance(layer.label, str) for layer in model)
    assert labels[-1] == "fc-10"


def test_labels_pinned() -> None:
    assert layer_labels(_default("vgg5")) == [
        "conv3-32", "conv3-64", "conv3-64", "fc-128", "fc-10",
    ]  # fmt: skip
    assert layer_labels(build_model("mlp", num_classes=3)) == ["fc-64", "fc-64", "fc-32", "fc-3"]
    assert layer_labels(_default("resnet18")) == [
        "conv3-64", "res3-64", "res3-64", "res3-128", "res3-128",
        "res3-256", "res3-256", "res3-512", "res3-512", "fc-10",
    ]  # fmt: skip
    small = layer_labels(_default("mobilenetv3_small"))
    assert small[:3] == ["conv3-16", "bneck3-16", "bneck3-24"]
    assert small[4] == "bneck5-40"
    assert small[-3:] == ["conv1-576", "fc-1024", "fc-10"]
    large = layer_labels(_default("mobilenetv3_large"))
    assert large[-3:] == ["conv1-960", "fc-1280", "fc-10"]
    assert all(label.startswith("bneck") for label in large[1:16])
    r101 = layer_labels(_default("resnet101"))
    assert r101[0] == "conv3-64" and r101[-2] == "bottle-2048"
    assert r101.count("bottle-1024") == 23
    vgg16 = layer_labels(_default("vgg16"))
    assert vgg16.count("conv3-512") == 6 and vgg16[-3:] == ["fc-4096", "fc-4096", "fc-10"]


def test_layer_labels_fall_back_to_class_name() -> None:
    assert layer_labels(nn.Sequential(nn.ReLU(), nn.Flatten())) == ["ReLU", "Flatten"]


@pytest.mark.parametrize(("name", "geo"), SHAPE_CASES)
def test_output_shape(name: str, geo: str) -> None:
    channels, size = GEOMETRIES[geo]
    model = build_model(name, num_classes=7, in_channels=channels, image_size=size)
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["vgg5", "resnet18", "mobilenetv3_small"])
def test_wrong_geometry_fails(name: str) -> None:
    # Sizing is computed at build time: the flatten / first conv must match the input.
    model = build_model(name, in_channels=3, image_size=32)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 1, 32, 32))


def test_norms() -> None:
    for name in ("vgg5", "resnet18", "mobilenetv3_small"):
        batch = _default(name)
        assert any(isinstance(m, nn.BatchNorm2d) for m in batch.modules())
        for norm in ("group", "none"):
            model = _default(name, norm)
            assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
            assert list(model.buffers()) == []
            has_group = any(isinstance(m, nn.GroupNorm) for m in model.modules())
            assert has_group == (norm == "group")
    for name in MODEL_NAMES:
        model = _default(name)
        assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
        for layer in model:
            if layer.label.startswith("fc-"):
                assert not any(isinstance(m, nn.BatchNorm2d) for m in layer.modules())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_group_norm_groups_divide_channels(name: str) -> None:
    model = _default(name, "group")
    for m in model.modules():
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0
            assert m.num_groups == group_count(m.num_channels) <= 32


def test_group_count() -> None:
    assert group_count(64) == 32
    assert group_count(16) == 16
    assert group_count(40) == 8
    assert group_count(88) == 8
    assert group_count(960) == 32


@pytest.mark.parametrize("name", ["mlp", "vgg5", "resnet18", "mobilenetv3_small"])
def test_deterministic(name: str) -> None:
    a, b, c = _seeded(name, 1), _seeded(name, 1), _seeded(name, 2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


# --- errors ---------------------------------------------------------------------------------


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'vgg13'.*vgg5.*resnet101"):
        build_model("vgg13")


def test_unknown_norm() -> None:
    with pytest.raises(ValueError, match=r"unknown norm 'layer'.*batch, group, none"):
        build_model("vgg5", norm="layer")


@pytest.mark.parametrize("arg", ["num_classes", "in_channels", "image_size"])
def test_bad_sizes(arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        build_model("mlp", **{arg: 0})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cuts", "message"),
    [
        ([0], r"cut 0 is out of range.*\(0, 5\)"),
        ([5], r"cut 5 is out of range"),
        ([-1], r"cut -1 is out of range"),
        ([2, 2], r"cut 2 does not follow cut 2"),
        ([3, 1], r"cut 1 does not follow cut 3"),
        ([1, 2, 9], r"cut 9 is out of range"),
        ([1.5], r"cut 1.5 is not an integer"),
        ([True], r"cut True is not an integer"),
    ],
)
def test_split_bad_cuts(cuts: list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_model(build_model("vgg5"), cuts)  # type: ignore[arg-type]


def test_split_shares_modules() -> None:
    model = build_model("vgg5")
    parts = split_model(model, [2, 4])
    assert [len(p) for p in parts] == [2, 2, 1]
    assert [m for p in parts for m in p] == list(model)
    assert all(a is b for a, b in zip([m for p in parts for m in p], model))
    with torch.no_grad():
        parts[1][0].conv.weight.add_(1.0)
    assert torch.equal(model[2].conv.weight, parts[1][0].conv.weight)
    assert list(parts[1].state_dict())[0].startswith("0.")
    assert [len(p) for p in split_model(model, [])] == [5]
    assert part_ranges(5, [2, 4]) == [(0, 2), (2, 4), (4, 5)]


def test_part_key_map() -> None:
    model = _seeded("resnet18", norm="batch")  # batch norm: buffers must be mapped too
    cuts = [3, 7, 9]
    merged: dict[str, torch.Tensor] = {}
    for (start, _), part in zip(part_ranges(len(model), cuts), split_model(model, cuts)):
        mapping = part_key_map(start, part)
        assert set(mapping) == set(part.state_dict())
        for key, value in part.state_dict().items():
            merged[mapping[key]] = value
    full = model.state_dict()
    assert merged.keys() == full.keys()
    assert all(torch.equal(merged[k], full[k]) for k in full)
    fresh = _seeded("resnet18", seed=5, norm="batch")
    fresh.load_state_dict(merged, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], full[k]) for k in full)
    part = split_model(model, [3])[1]
    assert part_key_map(3, part)["0.conv1.weight"] == "3.conv1.weight"
    assert part_key_map(3, part)["6.fc.bias"] == "9.fc.bias"
    with pytest.raises(ValueError, match="cut_start"):
        part_key_map(-1, part)


# --- split equivalence ----------------------------------------------------------------------

Result = tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]


def _grads(model: nn.Module) -> list[torch.Tensor]:
    # No copy needed: every run starts with zero_grad(set_to_none=True), so later runs
    # allocate new gradient tensors instead of writing into these.
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    return [g for g in grads if g is not None]


def _run_whole(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> Result:
    model.zero_grad(set_to_none=True)
    leaf = x.clone().requires_grad_(True)
    out = model(leaf)
    F.cross_entropy(out, y).backward()
    assert leaf.grad is not None
    return out.detach(), leaf.grad, _grads(model)


def _run_split(model: nn.Sequential, cuts: list[int], x: torch.Tensor, y: torch.Tensor) -> Result:
    """As the runtime does: each part's output is detached and sent on as a leaf that requires
    grad; the loss is taken after the last part; each boundary gradient is fed back upstream."""
    model.zero_grad(set_to_none=True)
    parts = split_model(model, cuts)
    leaves = [x.clone().requires_grad_(True)]
    outputs = []
    for part in parts:
        outputs.append(part(leaves[-1]))
        leaves.append(outputs[-1].detach().requires_grad_(True))
    F.cross_entropy(outputs[-1], y).backward()
    for i in range(len(parts) - 2, -1, -1):
        grad = leaves[i + 1].grad
        assert grad is not None
        outputs[i].backward(grad)
    assert leaves[0].grad is not None
    return outputs[-1].detach(), leaves[0].grad, _grads(model)


def _assert_identical(a: Result, b: Result) -> None:
    # Same ops on the same tensors in the same order: bitwise equal, not merely close.
    assert torch.isfinite(a[0]).all()
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert len(a[2]) == len(b[2])
    assert all(torch.equal(ga, gb) for ga, gb in zip(a[2], b[2]))


# The cheap models at CIFAR size, the others at 8x8x1 (sklearn digits) to stay fast.
SPLIT_GEOMETRY = {
    name: (3, 32) if name in ("mlp", "vgg5", "mobilenetv3_small") else (1, 8)
    for name in MODEL_NAMES
}


# A full sweep of single cuts over the heavy models (tens of millions of parameters, or a
# 4096x4096 layer whose 67 MB gradient glibc maps and unmaps on every backward: slow on VMs)
# costs ~0.1-1 s per pass at any image size; the default run takes a spread of cuts there and
# MPSL_SLOW=1 takes them all.
SLOW = os.environ.get("MPSL_SLOW") == "1"
HEAVY = BIG | {"vgg11"}


def _single_cuts(name: str, num_layers: int, every: bool) -> list[int]:
    """Every cut, or for the heavy models a spread: both ends, the quarters and the middle."""
    if every or name not in HEAVY:
        return list(range(1, num_layers))
    n = num_layers
    return sorted({1, n // 4, n // 2, 3 * n // 4, n - 1})


def _check_split_equivalence(name: str, every: bool) -> None:
    channels, size = SPLIT_GEOMETRY[name]
    norm = "group" if name != "mlp" else "none"
    model = _seeded(name, num_classes=5, in_channels=channels, image_size=size, norm=norm)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, channels, size, size, generator=gen)
    y = torch.tensor([1, 3])
    whole = _run_whole(model, x, y)
    assert any(g.abs().sum() > 0 for g in whole[2])
    n = len(model)
    for cut in range(1, n):  # the parts of every cut are the model's layers, in order
        head, tail = split_model(model, [cut])
        assert [*head, *tail] == list(model) and len(head) == cut
    for cut in _single_cuts(name, n, every):
        _assert_identical(whole, _run_split(model, [cut], x, y))
    # Every layer its own part (a boundary at every cut at once), and a 3-cut split.
    _assert_identical(whole, _run_split(model, list(range(1, n)), x, y))
    _assert_identical(whole, _run_split(model, [1, n // 2, n - 1], x, y))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_split_equivalence(name: str) -> None:
    # Every single cut for the light models; the heavy ones get a spread of single cuts here.
    _check_split_equivalence(name, every=False)


@pytest.mark.skipif(not SLOW, reason="slow (15-30 s): every cut of the heavy models; MPSL_SLOW=1")
@pytest.mark.parametrize("name", sorted(HEAVY))
def test_split_equivalence_every_cut_heavy_models(name: str) -> None:
    _check_split_equivalence(name, every=True)


def test_split_equivalence_detects_a_wrong_boundary_gradient() -> None:
    # The comparison can fail: feeding a scaled gradient upstream changes the result.
    model = _seeded("vgg5", norm="group")
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    whole = _run_whole(model, x, y)
    model.zero_grad(set_to_none=True)
    head, tail = split_model(model, [2])
    mid = head(x)
    leaf = mid.detach().requires_grad_(True)
    F.cross_entropy(tail(leaf), y).backward()
    assert leaf.grad is not None
    mid.backward(leaf.grad * 2)
    assert not torch.equal(_grads(model)[0], whole[2][0])


# --- micro-batch equivalence ----------------------------------------------------------------

OptFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
LR = {"sgd": 0.1, "adam": 1e-3}
OPTIMIZERS: dict[str, OptFactory] = {
    "sgd": lambda params: torch.optim.SGD(params, lr=LR["sgd"], momentum=0.9),
    "adam": lambda params: torch.optim.Adam(params, lr=LR["adam"]),
}


def _batch(
    name: str, size: int, dtype: torch.dtype = torch.float32, batch: int = 23
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    channels = 3 if name != "mlp" else 1
    x = torch.randn(batch, channels, size, size, generator=gen, dtype=dtype)
    y = torch.randint(0, 10, (batch,), generator=gen)
    return x, y


def _step_whole(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, opt: str) -> None:
    optimizer = OPTIMIZERS[opt](list(model.parameters()))
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def _step_micro(
    model: nn.Sequential,
    x: torch.Tensor,
    y: torch.Tensor,
    n: int,
    opt: str,
    cut: int | None = None,
    weighted: bool = True,
) -> None:
    """One iteration of ``n`` micro-batches and one step; with ``cut``, PiPar's order: all
    device forwards, then the server's forward+backward per micro-batch, then device backwards."""
    optimizer = OPTIMIZERS[opt](list(model.parameters()))
    optimizer.zero_grad()
    xs, ys = torch.tensor_split(x, n), torch.tensor_split(y, n)

    def weight(yb: torch.Tensor) -> float:
        return len(yb) / len(y) if weighted else 1 / n

    if cut is None:
        for xb, yb in zip(xs, ys):
            (F.cross_entropy(model(xb), yb) * weight(yb)).backward()
    else:
        device, server = split_model(model, [cut])
        sent = [device(xb) for xb in xs]
        grads = []
        for act, yb in zip(sent, ys):
            leaf = act.detach().requires_grad_(True)
            (F.cross_entropy(server(leaf), yb) * weight(yb)).backward()
            grads.append(leaf.grad)
        for act, grad in zip(sent, grads):
            act.backward(grad)
    optimizer.step()


def _assert_same_weights(
    a: nn.Module, b: nn.Module, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=rtol, atol=atol)


def _assert_same_grads(a: nn.Module, b: nn.Module, rtol: float, atol: float) -> None:
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert pa.grad is not None and pb.grad is not None
        torch.testing.assert_close(pa.grad, pb.grad, rtol=rtol, atol=atol)


MICRO_CASES = [
    (name, norm, opt, dtype)
    for name, norm in (("mlp", "none"), ("vgg5", "none"), ("vgg5", "group"))
    for opt, dtype in (("sgd", torch.float32), ("adam", torch.float32), ("adam", torch.float64))
]


def _tolerances(opt: str, dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for the weights after one step.

    float32 SGD: rounding of the gradient sums, scaled by the learning rate. float32 Adam: its
    first step is lr * g / (|g| + eps), which turns rounding noise on gradients near zero
    (|g| ~ 1e-10, error ~ 1e-9) into weight differences up to lr * error / eps ~ lr / 10; so
    float32 Adam is held to that bound (the gradients themselves are checked tightly), and
    float64 Adam, where the noise is ~1e-18, to a tight one.
    """
    if dtype == torch.float64:
        return 1e-10, 1e-12
    if opt == "adam":
        return 1e-5, LR["adam"] / 10
    return 1e-5, 1e-6


def test_micro_batch_sizes() -> None:
    sizes = [len(t) for t in torch.tensor_split(torch.arange(23), 5)]
    assert sizes == [5, 5, 5, 4, 4]


@pytest.mark.parametrize(("name", "norm", "opt", "dtype"), MICRO_CASES)
@pytest.mark.parametrize("n", [1, 2, 4, 5])
def test_micro_batch_equivalence(
    name: str, norm: str, opt: str, dtype: torch.dtype, n: int
) -> None:
    size = 16 if name == "vgg5" else 8
    channels = 3 if name != "mlp" else 1
    initial = _seeded(name, in_channels=channels, image_size=size, norm=norm).to(dtype)
    x, y = _batch(name, size, dtype)
    reference = copy.deepcopy(initial)
    _step_whole(reference, x, y, opt)
    assert not torch.equal(next(reference.parameters()), next(initial.parameters()))
    rtol, atol = _tolerances(opt, dtype)
    grad_tol = (1e-5, 1e-7) if dtype == torch.float32 else (1e-10, 1e-14)
    micro = copy.deepcopy(initial)
    _step_micro(micro, x, y, n, opt)
    _assert_same_grads(reference, micro, *grad_tol)
    _assert_same_weights(reference, micro, rtol, atol)
    if n == 1:  # one micro-batch is the batch: bitwise equal
        sr, sm = reference.state_dict(), micro.state_dict()
        assert all(torch.equal(sr[k], sm[k]) for k in sr)
    split = copy.deepcopy(initial)
    _step_micro(split, x, y, n, opt, cut=2)
    _assert_same_grads(reference, split, *grad_tol)
    _assert_same_weights(reference, split, rtol, atol)


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_unweighted_micro_batch_mean_differs(opt: str) -> None:
    # The weighting by b_n / B matters when N does not divide B: a plain mean of the
    # micro-batch losses is a different update, and the comparison catches it.
    reference = _seeded("vgg5", in_channels=3, image_size=16, norm="none")
    x, y = _batch("vgg5", 16)
    unweighted = copy.deepcopy(reference)
    _step_whole(reference, x, y, opt)
    _step_micro(unweighted, x, y, 5, opt, weighted=False)
    with pytest.raises(AssertionError):
        _assert_same_weights(reference, unweighted)


def test_batch_norm_breaks_micro_batch_equivalence() -> None:
    # Batch statistics depend on the micro-batch: why the equivalence needs group/none norms.
    reference = _seeded("vgg5", in_channels=3, image_size=16, norm="batch")
    x, y = _batch("vgg5", 16)
    micro = copy.deepcopy(reference)
    _step_whole(reference, x, y, "sgd")
    _step_micro(micro, x, y, 4, "sgd")
    with pytest.raises(AssertionError):
        _assert_same_weights(reference, micro)


def test_smallest_batch() -> None:
    """Training-mode BatchNorm refuses one value per channel: 1x1 maps need 2 samples; so does
    GroupNorm a group of one channel on a 1x1 map (mobilenetv3_small's 24 channels on 8x8
    digits)."""
    bn = build_model("mobilenetv3_small", 10, 3, 32, "batch")
    assert smallest_batch(bn, (3, 32, 32)) == 2
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn.train()(torch.zeros(1, 3, 32, 32))
    bn(torch.zeros(2, 3, 32, 32))  # two samples train
    assert bn.training  # left in the mode it was in
    assert smallest_batch(build_model("mobilenetv3_small", 10, 3, 32, "group"), (3, 32, 32)) == 1
    assert smallest_batch(build_model("vgg5", 10, 3, 32, "batch"), (3, 32, 32)) == 1
    gn = build_model("mobilenetv3_small", 10, 1, 8, "group")
    assert smallest_batch(gn, (1, 8, 8)) == 2
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        gn(torch.zeros(1, 1, 8, 8))
    gn(torch.zeros(2, 1, 8, 8))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_build_model_notes_the_smallest_batch_a_run_finds(name: str) -> None:
    """`SMALLEST_BATCH`, noted from the model's geometry, is what smallest_batch finds by
    running the model (on the meta device: shapes alone), for every norm and at sizes from
    1x1 maps on."""
    for size in (1, 2, 3, 5, 8, 28, 32):
        for norm in NORMS:
            with torch.device("meta"):
                model = build_model(name, 10, 3, size, norm)
            noted = getattr(model, SMALLEST_BATCH)
            delattr(model, SMALLEST_BATCH)
            assert smallest_batch(model, (3, size, size)) == noted, (name, size, norm)


@pytest.mark.parametrize(("name", "shape"), [("mobilenetv3_small", (3, 32, 32)),
                                             ("vgg19", (1, 28, 28)), ("vgg19", (3, 32, 32)),
                                             ("resnet18", (1, 8, 8))])
def test_smallest_batch_of_a_meta_model_is_the_real_ones(name: str, shape: tuple[int, ...]
                                                         ) -> None:
    """A model on the meta device (no weights drawn), run: the real one's answer."""
    real = build_model(name, 10, shape[0], shape[1], "batch")
    with torch.device("meta"):
        meta = build_model(name, 10, shape[0], shape[1], "batch")
    for model in (real, meta):
        delattr(model, SMALLEST_BATCH)  # run it: not its geometry's answer
    assert smallest_batch(meta, shape) == smallest_batch(real, shape)
    real = smallest_batch(real, shape)
    assert {"vgg19": {28: 2, 32: 1}, "mobilenetv3_small": {32: 2}, "resnet18": {8: 2}}[
        name][shape[1]] == real
