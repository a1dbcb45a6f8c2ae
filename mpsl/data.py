"""Datasets and partitions: loading an image set, splitting it across data owners, batches.

The file readers live in :mod:`mpsl.datasets`; this module is the API the rest of mpsl uses.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from mpsl.datasets import (
    Arrays,
    DatasetNotFound,
    cifar100_classes,
    load_cifar10,
    load_cifar100,
    load_idx,
    load_svhn,
    load_tiny_imagenet,
)

if TYPE_CHECKING:  # torch is imported where tensors are made: labels and sizes need none
    import torch

__all__ = [
    "DATASET_NAMES",
    "SCHEMES",
    "DatasetInfo",
    "DatasetNotFound",
    "batches",
    "dataset_info",
    "load_dataset",
    "load_labels",
    "micro_batch_count",
    "micro_batches",
    "partition",
    "partition_counts",
]

SPLITS = ("train", "test")
SCHEMES = ("iid", "dirichlet")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset, known without reading any file."""

    channels: int
    image_size: int
    num_classes: int


@dataclass(frozen=True)
class _Spec:
    info: Callable[..., DatasetInfo]
    load: Callable[..., Arrays]  # (root: Path, split, **kwargs) -> (images NCHW, labels)
    kwargs: tuple[str, ...] = ()


def _data_root(root: str | os.PathLike[str] | None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get("MPSL_DATA") or "data")


# ---------------------------------------------------------------------------- offline sets


_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SEED = 0


def _digits_file() -> Path | None:
    """scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn (which
    takes most of a second), or None where this scikit-learn keeps it elsewhere."""
    spec = importlib.util.find_spec("sklearn")
    for base in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(base) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 8x8 digit images (values 0..16) and their labels, as scikit-learn's
    ``load_digits`` gives them: read from its file (one row an image, the label last)."""
    path = _digits_file()
    if path is None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def _load_digits(root: Path, split: str) -> Arrays:
    """scikit-learn's bundled 8x8 digits, split 80/20 per class with a fixed seed."""
    raw_images, raw_labels = _digits()
    images = (raw_images / 16.0).astype(np.float32)[:, None]
    labels = raw_labels.astype(np.int64)
    rng = np.random.default_rng(_DIGITS_SEED)
    test = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test[members[: round(len(members) * _DIGITS_TEST_FRACTION)]] = True
    keep = test if split == "test" else ~test
    return images[keep], labels[keep]


def _synthetic_info(shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
                    **_: Any) -> DatasetInfo:
    dims = tuple(int(s) for s in shape)
    if len(dims) != 3 or min(dims) < 1 or dims[1] != dims[2]:
        raise ValueError(f"synthetic shape must be (C, S, S) with positive sizes, not {shape}")
    if num_classes < 1:
        raise ValueError(f"synthetic num_classes must be >= 1, not {num_classes}")
    return DatasetInfo(dims[0], dims[1], int(num_classes))


def _load_synthetic(root: Path, split: str, shape: Sequence[int] = (3, 32, 32),
                    num_classes: int = 10, size: int = 1024, test_size: int | None = None,
                    seed: int = 0) -> Arrays:
    """Each class is a blocky random pattern (a 4 x 4 grid of colours) plus Gaussian noise."""
    info = _synthetic_info(shape, num_classes)
    c, s, k = info.channels, info.image_size, info.num_classes
    n = size if split == "train" else (size // 4 if test_size is None else test_size)
    if size < 1 or n < 0:
        raise ValueError(f"synthetic size must be >= 1 and test_size >= 0 ({size}, {test_size})")
    block = max(1, s // 4)
    grid = np.random.default_rng([seed, 0]).random((k, c, -(-s // block), -(-s // block)))
    protos = grid.repeat(block, 2).repeat(block, 3)[:, :, :s, :s].astype(np.float32)
    rng = np.random.default_rng([seed, 1 if split == "train" else 2])
    labels = rng.integers(0, k, n).astype(np.int64)
    images = protos[labels] + 0.25 * rng.standard_normal((n, c, s, s), dtype=np.float32)
    return np.clip(images, 0.0, 1.0, out=images), labels


# ---------------------------------------------------------------------------- public API


def _fixed(channels: int, size: int, classes: int) -> Callable[..., DatasetInfo]:
    return lambda: DatasetInfo(channels, size, classes)


_SPECS: dict[str, _Spec] = {
    "mnist": _Spec(_fixed(1, 28, 10), functools.partial(load_idx, "mnist", "MNIST")),
    "fashion_mnist": _Spec(_fixed(1, 28, 10),
                           functools.partial(load_idx, "fashion_mnist", "FashionMNIST")),
    "cifar10": _Spec(_fixed(3, 32, 10), load_cifar10),
    "cifar100": _Spec(lambda label_mode="fine": DatasetInfo(3, 32, cifar100_classes(label_mode)),
                      load_cifar100, ("label_mode",)),
    "svhn": _Spec(_fixed(3, 32, 10), load_svhn),
    "tiny_imagenet": _Spec(_fixed(3, 64, 200), load_tiny_imagenet),
    "digits": _Spec(_fixed(1, 8, 10), _load_digits),
    "synthetic": _Spec(_synthetic_info, _load_synthetic,
                       ("shape", "num_classes", "size", "test_size", "seed")),
}

DATASET_NAMES: tuple[str, ...] = tuple(_SPECS)


def _spec(name: str, kwargs: dict[str, Any]) -> _Spec:
    key = name.lower().replace("-", "_")
    if key not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    spec = _SPECS[key]
    unknown = sorted(set(kwargs) - set(spec.kwargs))
    if unknown:
        raise TypeError(f"dataset {key!r} takes no argument(s) {unknown}; "
                        f"accepted: {list(spec.kwargs) or 'none'}")
    return spec


def dataset_info(name: str, **kwargs: Any) -> DatasetInfo:
    """Channels, image size and number of classes of ``name``, without reading any file."""
    spec = _spec(name, kwargs)
    info_kwargs = {k: v for k, v in kwargs.items() if k in ("shape", "num_classes", "label_mode")}
    return spec.info(**info_kwargs)


def load_dataset(name: str, root: str | os.PathLike[str] | None = None, split: str = "train",
                 **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (float32, N x C x H x W, in [0, 1]) and labels (int64, N) of one split.

    ``root`` defaults to ``$MPSL_DATA``, else ``./data``. Missing files raise
    :class:`DatasetNotFound` naming the folders searched and the files expected; ``digits``
    (bundled with scikit-learn) and ``synthetic`` need no files.
    """
    import torch

    images, labels = _arrays(name, root, split, kwargs)
    if images.dtype == np.uint8:
        x = images.astype(np.float32, order="C")
        np.divide(x, 255.0, out=x)
    else:
        x = np.ascontiguousarray(images, dtype=np.float32)
    return torch.from_numpy(x), torch.from_numpy(np.array(labels, dtype=np.int64))


def load_labels(name: str, root: str | os.PathLike[str] | None = None, split: str = "train",
                **kwargs: Any) -> np.ndarray:
    """The labels of one split, as `load_dataset` gives them (synthetic: without images)."""
    spec = _spec(name, kwargs)
    if spec.load is _load_synthetic:
        info = _synthetic_info(kwargs.get("shape", (3, 32, 32)), kwargs.get("num_classes", 10))
        size = int(kwargs.get("size", 1024))
        test = kwargs.get("test_size")
        n = size if split == "train" else (size // 4 if test is None else int(test))
        rng = np.random.default_rng([int(kwargs.get("seed", 0)), 1 if split == "train" else 2])
        return rng.integers(0, info.num_classes, n).astype(np.int64)
    return np.array(_arrays(name, root, split, kwargs)[1], dtype=np.int64)


def _arrays(name: str, root: str | os.PathLike[str] | None, split: str,
            kwargs: dict[str, Any]) -> Arrays:
    """The split's images and labels as its reader gives them."""
    spec = _spec(name, kwargs)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return spec.load(_data_root(root), split, **kwargs)


# ---------------------------------------------------------------------------- partitions


def _as_labels(labels: torch.Tensor | np.ndarray) -> np.ndarray:
    imported = sys.modules.get("torch")  # a tensor can exist only once torch is imported
    if imported is not None and isinstance(labels, imported.Tensor):
        labels = cast("torch.Tensor", labels).detach().cpu().numpy()
    y = np.asarray(labels)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise ValueError(f"labels must be a 1-d integer array, not {y.dtype} {y.shape}")
    return y.astype(np.int64, copy=False)


_DIRICHLET_DRAWS = 10


def _dirichlet(y: np.ndarray, k: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    order = np.argsort(y, kind="stable")
    _, counts = np.unique(y, return_counts=True)
    by_class = np.split(order, np.cumsum(counts)[:-1])
    for _ in range(_DIRICHLET_DRAWS):
        shares: list[list[np.ndarray]] = [[] for _ in range(k)]
        for members in by_class:
            members = rng.permutation(members)
            p = np.nan_to_num(rng.dirichlet(np.full(k, alpha)))
            cuts = np.clip((np.cumsum(p)[:-1] * len(members)).astype(np.int64), 0, len(members))
            for owner, chunk in enumerate(np.split(members, cuts)):
                shares[owner].append(chunk)
        parts = [np.concatenate(s) for s in shares]
        if min(map(len, parts)) > 0:
            break
    else:  # still an empty owner: move one sample to it from the largest owner (n >= k)
        for j in range(k):
            if len(parts[j]) == 0:
                donor = int(np.argmax([len(p) for p in parts]))
                parts[j], parts[donor] = parts[donor][-1:], parts[donor][:-1]
    return [rng.permutation(p) for p in parts]


def partition(labels: torch.Tensor | np.ndarray, num_owners: int, scheme: str = "iid",
              alpha: float = 0.5, seed: int = 0,
              samples_per_owner: int | None = None) -> list[np.ndarray]:
    """Indices of the samples of each data owner, seeded.

    ``iid``: a shuffle cut into ``num_owners`` near-equal shares. ``dirichlet``: each class
    is spread over the owners by Dirichlet(``alpha``) proportions (small alpha, more skew); up
    to 10 draws are made until every owner has a sample, after which one sample is moved from
    the largest owner to each empty one. Shares are disjoint, cover every sample and are in
    random order. ``samples_per_owner=n`` keeps the first ``min(n, len(share))`` of each
    share: still disjoint, but no longer covering.
    """
    y = _as_labels(labels)
    if not 1 <= num_owners <= len(y):
        raise ValueError(f"num_owners must be in 1..{len(y)} (the number of samples), "
                         f"not {num_owners}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    if samples_per_owner is not None and samples_per_owner < 1:
        raise ValueError(f"samples_per_owner must be >= 1 or None, not {samples_per_owner}")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = np.array_split(rng.permutation(len(y)), num_owners)
    else:
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"dirichlet alpha must be a positive number, not {alpha}")
        parts = _dirichlet(y, num_owners, alpha, rng)
    if samples_per_owner is not None:
        parts = [p[:samples_per_owner] for p in parts]
    return [np.array(p, dtype=np.int64) for p in parts]


def partition_counts(parts: Sequence[np.ndarray], labels: torch.Tensor | np.ndarray,
                     num_classes: int) -> np.ndarray:
    """Owners x classes matrix of sample counts (int64), for the run's record."""
    y = _as_labels(labels)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1}, found {y.min()}..{y.max()}")
    counts = np.zeros((len(parts), num_classes), np.int64)
    for i, p in enumerate(parts):
        counts[i] = np.bincount(y[np.asarray(p, dtype=np.int64)], minlength=num_classes)
    return counts


# ---------------------------------------------------------------------------- batches


def batches(num_samples: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The order of one epoch: a shuffle seeded by (seed, epoch), cut into batches.

    The last batch holds the remainder and is kept, never dropped.
    """
    if num_samples < 0 or batch_size < 1 or seed < 0 or epoch < 0:
        raise ValueError(f"need num_samples >= 0, batch_size >= 1, seed >= 0, epoch >= 0; "
                         f"got {num_samples}, {batch_size}, {seed}, {epoch}")
    order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    return [order[i : i + batch_size] for i in range(0, num_samples, batch_size)]


def micro_batches(batch_size: int, n: int) -> list[int]:
    """Sizes of the ``n`` micro-batches of a batch: floor(B/n) each, plus one for the first
    B mod n (as :func:`torch.tensor_split`), so they sum to B."""
    if n < 1 or n > batch_size:
        raise ValueError(f"cannot cut a batch of {batch_size} into {n} non-empty micro-batches "
                         f"(need 1 <= n <= batch_size)")
    base, extra = divmod(batch_size, n)
    return [base + int(i < extra) for i in range(n)]


def micro_batch_count(batch_size: int, n: int, smallest: int) -> int:
    """How many micro-batches an iteration of ``batch_size`` samples has under N = ``n``: as
    many as N while each keeps ``smallest`` samples (the least the model trains on,
    `mpsl.geometry.smallest_batch`), and at least one: min(N, B // smallest). Every node and
    the planner cut a batch so (`micro_batches` of this count); a short last batch may have
    fewer than N."""
    return max(1, min(n, batch_size // smallest))
