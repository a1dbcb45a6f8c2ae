"""File readers of the usual image datasets: numpy uint8 N x C x H x W images, int64 labels.

Each ``load_*`` takes the data root and a split ("train" or "test") and looks for its files in
a few usual folders under the root; :mod:`mpsl.data` turns the arrays into tensors.
"""

from __future__ import annotations

import gzip
import math
import pickle
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

Arrays = tuple[np.ndarray, np.ndarray]


class DatasetNotFound(FileNotFoundError):
    """A dataset's files are missing; the message names the directories and files looked for."""


def _gz(name: str) -> tuple[str, str]:
    return (name, name + ".gz")


def _show(alternatives: tuple[str, ...]) -> str:
    if len(alternatives) == 2 and alternatives[1] == alternatives[0] + ".gz":
        return f"{alternatives[0]}[.gz]"
    return " or ".join(alternatives)


def _exists(folder: Path, name: str) -> bool:
    return (folder / name).is_dir() if name.endswith("/") else (folder / name).is_file()


def find_folder(name: str, split: str, dirs: Sequence[Path],
                need: Sequence[tuple[str, ...]]) -> Path:
    """The first of ``dirs`` holding one of each group of alternative names (``x/`` a folder)."""
    for d in dirs:
        if all(any(_exists(d, alt) for alt in group) for group in need):
            return d
    expected = ", ".join(_show(group) for group in need)
    searched = ", ".join(str(d) for d in dirs)
    raise DatasetNotFound(
        f"dataset {name!r} ({split}) not found: expected {expected} in one of: {searched} "
        f"(pass root= or set MPSL_DATA; 'digits' and 'synthetic' need no files)"
    )


# ---------------------------------------------------------------------------- MNIST (IDX)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with ``ndim`` dimensions, gzipped or not."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt gzip file ({e})") from e
    header = 4 + 4 * ndim
    magic = 0x0800 | ndim  # two zero bytes, type 0x08 (unsigned byte), number of dimensions
    got = int.from_bytes(raw[:4], "big")
    if len(raw) < header or got != magic:
        raise ValueError(
            f"{path}: not an IDX file of {ndim}-d unsigned bytes "
            f"(magic number 0x{got:08x}, expected 0x{magic:08x}); the file is corrupt or wrong"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = math.prod(dims)
    if len(raw) - header != count:
        raise ValueError(
            f"{path}: IDX header says {dims} = {count} bytes, found {len(raw) - header}"
        )
    return np.frombuffer(raw, np.uint8, count, header).reshape(dims)


def load_idx(name: str, torch_dir: str, root: Path, split: str) -> Arrays:
    """MNIST-like IDX files in root, root/<name>[/raw] or root/<torch_dir>/raw (torchvision)."""
    prefix = "train" if split == "train" else "t10k"
    need = [_gz(f"{prefix}-images-idx3-ubyte"), _gz(f"{prefix}-labels-idx1-ubyte")]
    dirs = [root, root / name, root / name / "raw", root / torch_dir / "raw"]
    d = find_folder(name, split, dirs, need)
    paths = [next(d / alt for alt in group if (d / alt).is_file()) for group in need]
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    if len(images) != len(labels):
        raise ValueError(f"{d}: {len(images)} images but {len(labels)} labels")
    return images[:, None], labels


# ---------------------------------------------------------------------------- CIFAR (pickle)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # as written by numpy 1.x
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # as written by numpy 2.x
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler for plain data and numpy arrays, nothing else.

    A pickle can call any importable function while loading (``os.system``, say), so a file
    is never trusted with the full unpickler. The CIFAR files hold only dicts, lists, bytes,
    ints and uint8 arrays; rebuilding an array takes exactly the three numpy names allowed
    here (``_reconstruct`` spelled as numpy 1 and numpy 2 write it), which only build arrays
    and dtypes. Every other global is refused.
    """

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays and plain data "
                "are allowed in a dataset pickle"
            ) from None


def load_pickle(path: Path) -> Any:
    """A pickle's content through :class:`ArrayUnpickler` (bytes stay bytes)."""
    with open(path, "rb") as f:
        try:
            return ArrayUnpickler(f, encoding="bytes").load()
        except EOFError as e:
            raise ValueError(f"{path}: truncated pickle") from e


def _cifar_batch(path: Path, label_key: str) -> Arrays:
    batch = load_pickle(path)
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict, found {type(batch).__name__}")

    def get(key: str) -> Any:
        for k in (key.encode(), key):
            if k in batch:
                return batch[k]
        raise ValueError(f"{path}: no {key!r} entry (has {sorted(map(str, batch))})")

    data, labels = np.asarray(get("data")), np.asarray(get(label_key), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: data is {data.dtype} {data.shape}, expected uint8 N x 3072")
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: {len(data)} images but labels of shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root: Path, split: str) -> Arrays:
    """The python version's ``cifar-10-batches-py/``: data_batch_1..5 or test_batch."""
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    folder = "cifar-10-batches-py"
    dirs = [root / folder, root / "cifar10" / folder, root]
    d = find_folder("cifar10", split, dirs, [(f,) for f in files])
    parts = [_cifar_batch(d / f, "labels") for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_cifar100(root: Path, split: str, label_mode: str = "fine") -> Arrays:
    """The python version's ``cifar-100-python/``: train or test, fine or coarse labels."""
    cifar100_classes(label_mode)
    folder = "cifar-100-python"
    dirs = [root / folder, root / "cifar100" / folder, root]
    d = find_folder("cifar100", split, dirs, [(split,)])
    return _cifar_batch(d / split, f"{label_mode}_labels")


def cifar100_classes(label_mode: str = "fine") -> int:
    classes = {"fine": 100, "coarse": 20}
    if label_mode not in classes:
        raise ValueError(f"cifar100 label_mode must be 'fine' or 'coarse', not {label_mode!r}")
    return classes[label_mode]


# ---------------------------------------------------------------------------- SVHN, Tiny ImageNet


def load_svhn(root: Path, split: str) -> Arrays:
    """SVHN's cropped digits, ``train_32x32.mat`` or ``test_32x32.mat``; label 10 becomes 0."""
    file = f"{split}_32x32.mat"
    d = find_folder("svhn", split, [root, root / "svhn", root / "SVHN"], [(file,)])
    from scipy.io import loadmat  # lazy: scipy comes with scikit-learn

    mat = loadmat(d / file, variable_names=("X", "y"))
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise ValueError(f"{d / file}: expected X of 32 x 32 x 3 x N and y")
    labels = y.reshape(-1).astype(np.int64)
    labels[labels == 10] = 0  # SVHN writes the digit 0 as class 10
    if len(labels) != x.shape[3]:
        raise ValueError(f"{d / file}: {x.shape[3]} images but {len(labels)} labels")
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1), dtype=np.uint8), labels


def load_tiny_imagenet(root: Path, split: str) -> Arrays:
    """``tiny-imagenet-200/``: train/<wnid>/images or, for "test", the labelled val set.

    Class i is the i-th of the sorted wnids of wnids.txt. Decoding needs Pillow.
    """
    folder = "tiny-imagenet-200"
    need = [("wnids.txt",), ("train/",)] if split == "train" else [
        ("wnids.txt",), ("val/val_annotations.txt",), ("val/images/",)]
    dirs = [root / folder, root / "tiny_imagenet" / folder, root]
    d = find_folder("tiny_imagenet", split, dirs, need)
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("tiny_imagenet needs an image decoder: pip install pillow") from e
    wnids = sorted(set((d / "wnids.txt").read_text().split()))
    index = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        items = [(p, i) for w, i in index.items()
                 for p in sorted((d / "train" / w / "images").glob("*.JPEG"))]
    else:
        items = []
        for line in (d / "val" / "val_annotations.txt").read_text().splitlines():
            fields = line.split("\t")
            if len(fields) < 2:
                continue
            if fields[1] not in index:
                raise ValueError(f"{d}: val image {fields[0]} has unknown wnid {fields[1]}")
            items.append((d / "val" / "images" / fields[0], index[fields[1]]))
    if not items:
        raise DatasetNotFound(f"dataset 'tiny_imagenet' ({split}): no images found under {d}")
    images: np.ndarray | None = None
    for n, (path, _) in enumerate(items):
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"))
        if images is None:
            images = np.empty((len(items), *pixels.shape), np.uint8)
        if pixels.shape != images.shape[1:]:
            raise ValueError(f"{path}: size {pixels.shape}, expected {images.shape[1:]}")
        images[n] = pixels
    assert images is not None
    return images.transpose(0, 3, 1, 2), np.array([i for _, i in items], np.int64)


