"""Tests of mpsl.data (and its readers in mpsl.datasets): loading, partitions, batches."""

from __future__ import annotations

import gzip
import io
import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpsl.data import (
    DATASET_NAMES,
    DatasetInfo,
    DatasetNotFound,
    batches,
    dataset_info,
    load_dataset,
    micro_batch_count,
    micro_batches,
    partition,
    partition_counts,
)
from mpsl.datasets import ArrayUnpickler

MNIST_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FILE_DATASETS = ["mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "tiny_imagenet"]


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    """An IDX file of unsigned bytes (gzipped when the name ends in .gz)."""
    array = np.asarray(array, np.uint8)
    magic = 0x0800 | array.ndim if magic is None else magic
    raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw += array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def fake_mnist(folder: Path, n: int = 5, gz: bool = False, prefix: str = "train") -> tuple:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return images, labels


# ---------------------------------------------------------------------------- real MNIST


@pytest.fixture(scope="module")
def mnist_train() -> tuple[torch.Tensor, torch.Tensor]:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST files not found in {MNIST_DIR}")
    return load_dataset("mnist", MNIST_DIR, "train")


def test_mnist_train_loads_real_files(mnist_train):
    x, y = mnist_train
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    assert y[:3].tolist() == [5, 0, 4]
    assert torch.bincount(y, minlength=10).tolist() == MNIST_TRAIN_COUNTS


def test_mnist_test_split_from_parent_folder():
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST files not found in {MNIST_DIR}")
    x, y = load_dataset("mnist", MNIST_DIR.parent, split="test")  # finds root/mnist/
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert y[:3].tolist() == [7, 2, 1]
    assert torch.bincount(y, minlength=10).tolist() == MNIST_TEST_COUNTS


# ---------------------------------------------------------------------------- IDX readers


@pytest.mark.parametrize("layout", ["", "mnist", "mnist/raw", "MNIST/raw"])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_layouts_and_exact_values(tmp_path, layout, gz):
    images, labels = fake_mnist(tmp_path / layout, gz=gz)
    x, y = load_dataset("mnist", tmp_path)
    np.testing.assert_array_equal(x.numpy(), images[:, None].astype(np.float32) / 255)
    np.testing.assert_array_equal(y.numpy(), labels)


def test_fashion_mnist_torchvision_layout_test_split(tmp_path):
    images, labels = fake_mnist(tmp_path / "FashionMNIST" / "raw", gz=True, prefix="t10k")
    x, y = load_dataset("fashion_mnist", str(tmp_path), split="test")
    assert x.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(y.numpy(), labels)


def test_missing_mnist_error_is_one_line_naming_files_and_folders(tmp_path):
    with pytest.raises(DatasetNotFound) as err:
        load_dataset("mnist", tmp_path, split="test")
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert "\n" not in message and "'mnist'" in message
    assert "t10k-images-idx3-ubyte[.gz]" in message and "t10k-labels-idx1-ubyte[.gz]" in message
    assert str(tmp_path / "MNIST" / "raw") in message


def test_root_defaults_to_env_then_data_folder(tmp_path, monkeypatch):
    fake_mnist(tmp_path / "env" / "mnist")
    monkeypatch.setenv("MPSL_DATA", str(tmp_path / "env"))
    assert load_dataset("mnist")[0].shape == (5, 1, 28, 28)
    monkeypatch.delenv("MPSL_DATA")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFound, match=f"one of: data, data{os.sep}mnist"):
        load_dataset("mnist")


def test_corrupt_idx_files_raise_clear_errors(tmp_path):
    fake_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    write_idx(images, np.zeros((5, 28, 28)), magic=0x0801)
    with pytest.raises(ValueError, match="magic number 0x00000801, expected 0x00000803"):
        load_dataset("mnist", tmp_path)
    images.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="magic number"):
        load_dataset("mnist", tmp_path)
    write_idx(images, np.zeros((5, 28, 28)))
    images.write_bytes(images.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"IDX header says \(5, 28, 28\)"):
        load_dataset("mnist", tmp_path)
    write_idx(images, np.zeros((4, 28, 28)))
    with pytest.raises(ValueError, match="4 images but 5 labels"):
        load_dataset("mnist", tmp_path)
    images.unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="corrupt gzip"):
        load_dataset("mnist", tmp_path)


def test_bad_names_splits_and_arguments():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*mnist.*synthetic"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset_info("imagenet")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="val")
    with pytest.raises(TypeError, match="sizes"):
        load_dataset("synthetic", sizes=3)
    with pytest.raises(TypeError, match="accepted: none"):
        dataset_info("mnist", shape=(1, 28, 28))


@pytest.mark.parametrize("name", FILE_DATASETS)
def test_every_file_dataset_reports_missing_files(tmp_path, name):
    expected = {"mnist": "train-images", "fashion_mnist": "train-labels", "cifar10":
                "data_batch_5", "cifar100": "train", "svhn": "train_32x32.mat",
                "tiny_imagenet": "wnids.txt"}[name]
    with pytest.raises(DatasetNotFound) as err:
        load_dataset(name, tmp_path)
    assert "\n" not in str(err.value)
    assert f"'{name}'" in str(err.value) and expected in str(err.value)


# ---------------------------------------------------------------------------- CIFAR, SVHN


def fake_cifar_batch(path: Path, n: int, seed: int, label_keys=(b"labels",)) -> dict:
    rng = np.random.default_rng(seed)
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"batch_label": b"fake"}
    for key in label_keys:
        batch[key] = rng.integers(0, 10, n).tolist()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=4)
    return batch


def test_cifar10_reads_fake_batches_end_to_end(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    train = [fake_cifar_batch(folder / f"data_batch_{i}", 2, i) for i in range(1, 6)]
    test = fake_cifar_batch(folder / "test_batch", 3, 9)
    x, y = load_dataset("cifar10", tmp_path)
    assert x.shape == (10, 3, 32, 32) and y.dtype == torch.int64
    data = np.concatenate([b[b"data"] for b in train]).reshape(10, 3, 32, 32)
    np.testing.assert_array_equal(x.numpy(), data.astype(np.float32) / 255)
    assert y.tolist() == sum((b[b"labels"] for b in train), [])
    x, y = load_dataset("cifar10", tmp_path, split="test")
    assert x.shape == (3, 3, 32, 32) and y.tolist() == test[b"labels"]


def test_cifar100_fine_and_coarse_labels(tmp_path):
    batch = fake_cifar_batch(tmp_path / "cifar-100-python" / "train", 4, 0,
                             (b"fine_labels", b"coarse_labels"))
    assert load_dataset("cifar100", tmp_path)[1].tolist() == batch[b"fine_labels"]
    y = load_dataset("cifar100", tmp_path, label_mode="coarse")[1]
    assert y.tolist() == batch[b"coarse_labels"]
    with pytest.raises(ValueError, match="label_mode"):
        load_dataset("cifar100", tmp_path, label_mode="medium")


class _Shell:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_restricted_unpickler_refuses_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    fake_cifar_batch(folder / "test_batch", 1, 0)
    marker = tmp_path / "pwned"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": _Shell(f"touch {marker}"), b"labels": [0]}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global .*system"):
        load_dataset("cifar10", tmp_path, split="test")
    assert not marker.exists()


@pytest.mark.parametrize("obj", [np.float64(1.0), Counter(a=1), print])
def test_restricted_unpickler_refuses_every_other_global(obj):
    stream = io.BytesIO(pickle.dumps({"x": obj}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        ArrayUnpickler(stream, encoding="bytes").load()


def test_restricted_unpickler_loads_arrays_and_plain_data():
    stream = io.BytesIO(pickle.dumps({"x": [np.arange(3), b"ab", 1.5]}, protocol=4))
    loaded = ArrayUnpickler(stream, encoding="bytes").load()
    np.testing.assert_array_equal(loaded["x"][0], np.arange(3))
    assert loaded["x"][1:] == [b"ab", 1.5]
    # the real CIFAR files were written by numpy 1.x, which spells the module numpy.core
    reconstruct = ArrayUnpickler(io.BytesIO()).find_class("numpy.core.multiarray", "_reconstruct")
    assert reconstruct.__name__ == "_reconstruct"


def test_cifar_wrong_content_is_a_clear_error(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, f, protocol=4)
    with pytest.raises(ValueError, match="expected uint8 N x 3072"):
        load_dataset("cifar10", tmp_path, split="test")


def test_svhn_reads_fake_mat_file(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    y = np.array([[10], [1], [9], [10]], np.uint8)
    (tmp_path / "svhn").mkdir()
    scipy_io.savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x, "y": y})
    images, labels = load_dataset("svhn", tmp_path, split="test")
    assert images.shape == (4, 3, 32, 32) and labels.tolist() == [0, 1, 9, 0]
    assert images[2, 1, 5, 7].item() == pytest.approx(x[5, 7, 1, 2] / 255)


def test_tiny_imagenet_reads_fake_jpegs(tmp_path):
    image = pytest.importorskip("PIL.Image")
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01"]  # class index follows the sorted wnids: n01 -> 0, n02 -> 1
    colours = {"n01": (255, 0, 0), "n02": (0, 0, 255)}
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        (root / "train" / w / "images").mkdir(parents=True)
        for i in range(2):
            image.new("RGB", (64, 64), colours[w]).save(root / "train" / w / "images" /
                                                        f"{w}_{i}.JPEG")
    image.new("L", (64, 64), 128).save(root / "val" / "images" / "val_0.JPEG")  # grey
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t63\t63\n")
    x, y = load_dataset("tiny_imagenet", tmp_path)
    assert x.shape == (4, 3, 64, 64) and y.tolist() == [0, 0, 1, 1]
    assert x[0, 0].mean() > 0.9 and x[0, 2].mean() < 0.1 and x[2, 2].mean() > 0.9
    x, y = load_dataset("tiny_imagenet", tmp_path, split="test")
    assert x.shape == (1, 3, 64, 64) and y.tolist() == [1]


# ---------------------------------------------------------------------------- info, offline sets


def test_dataset_info_needs_no_files():
    expected = {"mnist": (1, 28, 10), "fashion_mnist": (1, 28, 10), "cifar10": (3, 32, 10),
                "cifar100": (3, 32, 100), "svhn": (3, 32, 10), "tiny_imagenet": (3, 64, 200),
                "digits": (1, 8, 10), "synthetic": (3, 32, 10)}
    assert set(DATASET_NAMES) == set(expected)
    for name, (c, s, k) in expected.items():
        assert dataset_info(name) == DatasetInfo(channels=c, image_size=s, num_classes=k)
    assert dataset_info("synthetic", shape=(1, 16, 16), num_classes=3, size=7) == \
        DatasetInfo(1, 16, 3)
    assert dataset_info("cifar100", label_mode="coarse").num_classes == 20
    assert dataset_info("Fashion-MNIST").image_size == 28
    with pytest.raises(ValueError, match="shape"):
        dataset_info("synthetic", shape=(3, 32, 16))


def test_digits_split_is_fixed_disjoint_and_covering():
    from sklearn.datasets import load_digits

    x, y = load_dataset("digits")
    xt, yt = load_dataset("digits", split="test")
    assert x.shape == (1438, 1, 8, 8) and xt.shape == (359, 1, 8, 8)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    assert torch.bincount(yt).tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    again = load_dataset("digits")
    assert torch.equal(again[0], x) and torch.equal(again[1], y)
    rows = Counter((r.tobytes(), int(c)) for r, c in zip(x.numpy(), y.numpy(), strict=True))
    rows_test = Counter((r.tobytes(), int(c)) for r, c in zip(xt.numpy(), yt.numpy(), strict=True))
    full = load_digits()
    everything = Counter(((im / 16.0).astype(np.float32)[None].tobytes(), int(c))
                         for im, c in zip(full.images, full.target, strict=True))
    assert rows + rows_test == everything


def test_digits_are_read_without_importing_scikit_learn(monkeypatch):
    """The digits come from scikit-learn's file, as its load_digits gives them, without
    importing scikit-learn (most of a second); where the file is not found, through it."""
    import sys

    from sklearn.datasets import load_digits

    import mpsl.data as data

    full = load_digits()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # importing it now fails
    images, labels = data._digits()
    assert np.array_equal(images, full.images) and np.array_equal(labels, full.target)
    assert images.dtype == full.images.dtype and labels.dtype == np.int64
    monkeypatch.delitem(sys.modules, "sklearn.datasets")
    monkeypatch.setattr(data, "_digits_file", lambda: None)
    images, labels = data._digits()
    assert np.array_equal(images, full.images) and np.array_equal(labels, full.target)


def test_synthetic_shapes_seeds_and_learnability():
    x, y = load_dataset("synthetic")
    assert x.shape == (1024, 3, 32, 32) and y.shape == (1024,)
    assert load_dataset("synthetic", split="test")[0].shape == (256, 3, 32, 32)
    assert x.min().item() >= 0.0 and x.max().item() <= 1.0 and y.max().item() < 10
    kw = {"shape": (1, 8, 8), "num_classes": 4, "size": 200, "test_size": 50}
    a, b = load_dataset("synthetic", **kw), load_dataset("synthetic", **kw)
    assert a[0].shape == (200, 1, 8, 8) and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    other = load_dataset("synthetic", seed=1, **kw)
    assert not torch.equal(a[0], other[0])
    xt, yt = load_dataset("synthetic", split="test", **kw)
    assert xt.shape == (50, 1, 8, 8) and not torch.equal(xt, a[0][:50])
    # learnable: the nearest class mean of the training set gets the test set right
    means = torch.stack([a[0][a[1] == c].mean(0) for c in range(4)]).flatten(1)
    guess = torch.cdist(xt.flatten(1), means).argmin(1)
    assert (guess == yt).float().mean().item() > 0.9


# ---------------------------------------------------------------------------- partitions


def check_partition(parts, n, covering=True):
    flat = np.concatenate(parts)
    assert all(p.dtype == np.int64 for p in parts)
    assert len(np.unique(flat)) == len(flat), "shares overlap"
    if covering:
        assert np.array_equal(np.sort(flat), np.arange(n))


def test_iid_partition_is_balanced_seeded_and_covering():
    labels = np.repeat(np.arange(10), 101)
    parts = partition(labels, 4)
    check_partition(parts, len(labels))
    assert sorted(map(len, parts)) == [252, 252, 253, 253]
    assert all(np.array_equal(a, b) for a, b in zip(parts, partition(labels, 4), strict=True))
    assert not np.array_equal(parts[0], partition(labels, 4, seed=1)[0])
    torch_parts = partition(torch.from_numpy(labels), 4)
    assert all(np.array_equal(a, b) for a, b in zip(parts, torch_parts, strict=True))
    counts = partition_counts(parts, labels, 10)
    assert counts.shape == (4, 10) and counts.dtype == np.int64
    assert counts.sum(0).tolist() == [101] * 10 and counts.sum(1).tolist() == list(map(len, parts))


def test_dirichlet_small_alpha_is_skewed_but_no_owner_is_empty():
    labels = np.repeat(np.arange(10), 100)
    skewed = partition(labels, 10, "dirichlet", alpha=0.05, seed=3)
    check_partition(skewed, len(labels))
    assert min(map(len, skewed)) >= 1
    def top_share(parts):
        counts = partition_counts(parts, labels, 10)
        return float(np.mean(counts.max(1) / counts.sum(1)))
    assert top_share(skewed) > 0.6 > 0.3 > top_share(partition(labels, 10))
    again = partition(labels, 10, "dirichlet", alpha=0.05, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(skewed, again, strict=True))


def test_dirichlet_fix_up_gives_every_owner_a_sample():
    labels = np.zeros(6, np.int64)  # one class, tiny alpha: every draw gives it to one owner
    for seed in range(5):
        parts = partition(labels, 6, "dirichlet", alpha=1e-3, seed=seed)
        check_partition(parts, 6)
        assert sorted(map(len, parts)) == [1] * 6


def test_samples_per_owner_takes_a_prefix_of_each_share():
    labels = np.arange(100) % 3
    full = partition(labels, 3, "dirichlet", alpha=0.3, seed=2)
    small = partition(labels, 3, "dirichlet", alpha=0.3, seed=2, samples_per_owner=20)
    for f, s in zip(full, small, strict=True):
        assert np.array_equal(s, f[: min(20, len(f))])
    check_partition(small, 100, covering=False)
    # shares are shuffled, so a prefix is a random sample of the share, not its first class
    labels = np.repeat(np.arange(3), 100)
    for share in partition(labels, 3, "dirichlet", alpha=100.0, samples_per_owner=30):
        assert len(np.unique(labels[share])) == 3


def test_partition_rejects_bad_arguments():
    labels = np.arange(10)
    for kwargs in ({"num_owners": 0}, {"num_owners": 11}, {"num_owners": 2, "scheme": "zipf"},
                   {"num_owners": 2, "scheme": "dirichlet", "alpha": 0.0},
                   {"num_owners": 2, "samples_per_owner": 0}):
        with pytest.raises(ValueError):
            partition(labels, **kwargs)
    with pytest.raises(ValueError, match="1-d integer"):
        partition(labels.reshape(2, 5), 2)
    with pytest.raises(ValueError, match="labels must be in 0..4"):
        partition_counts([labels], labels, 5)


@settings(max_examples=60, deadline=None)
@given(st.data(), st.integers(1, 150), st.sampled_from(["iid", "dirichlet"]),
       st.integers(0, 2**32 - 1), st.sampled_from([0.01, 0.1, 1.0, 100.0]),
       st.integers(1, 8))
def test_partition_properties(data, n, scheme, seed, alpha, num_classes):
    k = data.draw(st.integers(1, n), label="owners")
    labels = np.random.default_rng(seed).integers(0, num_classes, n)
    parts = partition(labels, k, scheme, alpha=alpha, seed=seed)
    assert len(parts) == k and min(map(len, parts)) >= 1
    check_partition(parts, n)
    counts = partition_counts(parts, labels, num_classes)
    assert counts.sum(1).tolist() == [len(p) for p in parts]
    assert np.array_equal(counts.sum(0), np.bincount(labels, minlength=num_classes))
    if scheme == "iid":
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


# ---------------------------------------------------------------------------- batches


def test_batches_keep_the_last_partial_batch_and_are_seeded():
    epoch0 = batches(10, 3, seed=7, epoch=0)
    assert [len(b) for b in epoch0] == [3, 3, 3, 1]
    assert np.array_equal(np.sort(np.concatenate(epoch0)), np.arange(10))
    assert all(np.array_equal(a, b)
               for a, b in zip(epoch0, batches(10, 3, seed=7, epoch=0), strict=True))
    assert not np.array_equal(np.concatenate(epoch0), np.concatenate(batches(10, 3, 7, 1)))
    assert not np.array_equal(np.concatenate(epoch0), np.concatenate(batches(10, 3, 8, 0)))
    assert [len(b) for b in batches(5, 8, 0, 0)] == [5]
    assert batches(0, 4, 0, 0) == []
    with pytest.raises(ValueError):
        batches(10, 0, 0, 0)


def test_micro_batch_count_keeps_the_smallest_micro_batch():
    """N micro-batches while each keeps `smallest` samples, else fewer, never none."""
    assert micro_batch_count(32, 4, 1) == 4 and micro_batch_count(3, 4, 1) == 3
    assert micro_batch_count(8, 4, 2) == 4  # 2 each
    assert micro_batch_count(3, 4, 2) == 1  # one of 3, not 3 of one
    assert micro_batch_count(7, 4, 2) == 3  # 3, 2, 2
    assert micro_batch_count(1, 4, 2) == 1  # a batch below the smallest: one micro-batch
    for b in range(2, 40):
        for n in range(1, 20):
            sizes = micro_batches(b, micro_batch_count(b, n, 2))
            assert min(sizes) >= 2 and len(sizes) <= n
            assert len(sizes) == n or len(sizes) + 1 > b // 2  # as many as allowed


def test_micro_batches_match_tensor_split():
    assert micro_batches(10, 3) == [4, 3, 3]
    assert micro_batches(8, 4) == [2, 2, 2, 2]
    assert micro_batches(5, 5) == [1] * 5
    for b in range(1, 40):
        for n in range(1, b + 1):
            expected = [len(t) for t in torch.tensor_split(torch.arange(b), n)]
            assert micro_batches(b, n) == expected
    with pytest.raises(ValueError, match="batch of 3 into 4"):
        micro_batches(3, 4)
    with pytest.raises(ValueError):
        micro_batches(3, 0)


@given(st.integers(1, 10_000), st.data())
def test_micro_batches_sum_to_b_and_differ_by_at_most_one(b, data):
    n = data.draw(st.integers(1, b))
    sizes = micro_batches(b, n)
    assert len(sizes) == n and sum(sizes) == b and max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True) and min(sizes) == b // n
