"""A participant's own data folder: both formats load the same data, and every way a folder can
miss the task's schema is refused by name (file, problem, fix), also by the CLI's check."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flock_pipeline.config import DataSchema, load_config
from flock_pipeline.data import load_dataset
from flock_pipeline.data.folder import DataFolderError, check_folder, read_folder
from flock_pipeline.data.schema import BUILTIN_SCHEMAS, schema_for_dataset, task_schema
from flock_pipeline.errors import DataError
from flock_pipeline.snapshots import DatasetSnapshots

SCHEMA = DataSchema(
    feature_shape=(1, 4, 4),
    num_classes=3,
    class_names=("cat", "dog", "owl"),
    min_samples=8,
    value_range=(0.0, 1.0),
)
N = 30


def _samples(n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 4, 4), dtype=np.float32)
    y = np.arange(n, dtype=np.int64) % 3
    return x, y


def _npz(folder: Path, name: str = "train", **arrays: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{name}.npz", **arrays)
    return folder


def _parquet(folder: Path, features: Any, label: Any, name: str = "train", **extra: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({"features": features, "label": label, **extra}), folder / f"{name}.parquet"
    )
    return folder


def _flat(x: np.ndarray) -> list[np.ndarray]:
    return list(x.reshape(len(x), -1))


# -- good folders ------------------------------------------------------------------------------


def test_an_npz_and_a_parquet_folder_of_the_same_data_load_the_same_arrays(tmp_path):
    # Prepare
    x, y = _samples()
    npz = _npz(tmp_path / "npz", x=x, y=y)
    parquet = _parquet(tmp_path / "parquet", _flat(x), y)
    # Execute
    a, b = read_folder(npz, SCHEMA), read_folder(parquet, SCHEMA)
    # Assert
    for field in ("x_train", "y_train", "x_holdout", "y_holdout"):
        assert np.array_equal(getattr(a.data, field), getattr(b.data, field)), field
    assert a.data.x_train.dtype == np.float32 and a.data.y_train.dtype == np.int64
    assert a.data.x_train.shape[1:] == (1, 4, 4)
    assert (a.report.format, b.report.format) == ("npz", "parquet")
    assert a.report.samples == b.report.samples == N
    assert a.report.train_samples + a.report.holdout_samples == N
    assert a.report.holdout_samples == round(N * 0.2) and a.report.holdout_file is None
    assert a.report.label_counts == b.report.label_counts == [10, 10, 10]
    assert a.report.classes_present == [0, 1, 2]
    # The split covers the file exactly once.
    both = np.concatenate([a.data.x_train, a.data.x_holdout]).reshape(N, -1)
    assert sorted(map(bytes, both)) == sorted(map(bytes, x.reshape(N, -1)))


def test_the_holdout_cut_is_a_function_of_the_data_and_the_fraction(tmp_path):
    x, y = _samples()
    one = read_folder(_npz(tmp_path / "one", x=x, y=y), SCHEMA, holdout_fraction=0.3)
    two = read_folder(_npz(tmp_path / "two", x=x, y=y), SCHEMA, holdout_fraction=0.3)
    assert np.array_equal(one.data.x_holdout, two.data.x_holdout)
    assert one.report.holdout_samples == 9
    none = read_folder(tmp_path / "one", SCHEMA, holdout_fraction=0.0)
    assert none.report.holdout_samples == 0 and none.report.train_samples == N


def test_a_holdout_file_is_the_participants_own_validation_split(tmp_path):
    x, y = _samples()
    xh, yh = _samples(6, seed=1)
    folder = _npz(tmp_path / "f", x=x, y=y)
    _npz(folder, "holdout", x=xh, y=yh)
    loaded = read_folder(folder, SCHEMA, participant="p7")
    assert loaded.data.id == "p7"
    assert np.array_equal(loaded.data.x_train, x) and np.array_equal(loaded.data.x_holdout, xh)
    assert loaded.report.holdout_file == "holdout.npz" and loaded.report.holdout_samples == 6


def test_parquet_labels_may_be_class_names_and_uint8_features_cast_exactly(tmp_path):
    x, y = _samples()
    names = [SCHEMA.class_names[i] for i in y]  # type: ignore[index]
    folder = _parquet(tmp_path / "names", _flat(x), pa.array(names).dictionary_encode())
    assert np.array_equal(read_folder(folder, SCHEMA, holdout_fraction=0).data.y_train, y)
    pixels = np.random.default_rng(0).integers(0, 256, (N, 1, 4, 4)).astype(np.uint8)
    raw = SCHEMA.model_copy(update={"value_range": None})
    loaded = read_folder(_npz(tmp_path / "u8", x=pixels, y=y), raw, holdout_fraction=0)
    assert loaded.data.x_train.dtype == np.float32
    assert np.array_equal(loaded.data.x_train, pixels.astype(np.float32))
    wide = read_folder(
        _npz(tmp_path / "f64", x=x.astype(np.float64), y=y), SCHEMA, holdout_fraction=0
    )
    assert np.array_equal(wide.data.x_train, x)


def test_integer_code_features_load_as_int64(tmp_path):
    codes = DataSchema(feature_shape=(5,), dtype="int64", num_classes=2)
    x = np.arange(40, dtype=np.int16).reshape(8, 5)
    loaded = read_folder(_npz(tmp_path / "c", x=x, y=np.arange(8) % 2), codes, holdout_fraction=0)
    assert loaded.data.x_train.dtype == np.int64 and np.array_equal(loaded.data.x_train, x)


def test_the_content_hash_is_the_one_dvc_records_for_the_folder(tmp_path):
    # Prepare
    x, y = _samples()
    folder = _parquet(tmp_path / "root" / "mine", _flat(x), y)
    (folder / "README.txt").write_text("my data, collected 2026\n")
    # Execute
    report = check_folder(folder, SCHEMA)
    snapshot = DatasetSnapshots(tmp_path / "root").snapshot("mine")
    # Assert
    assert report.content_hash == snapshot.hash
    (folder / "README.txt").write_text("changed\n")
    assert check_folder(folder, SCHEMA).content_hash != snapshot.hash


# -- bad folders -------------------------------------------------------------------------------


def _bad(case: str, folder: Path) -> Path:
    """Write the folder of one bad case; return the path to check."""
    x, y = _samples()
    if case == "missing_folder":
        return folder / "absent"
    if case == "empty":
        folder.mkdir()
    elif case == "only_holdout":
        _npz(folder, "holdout", x=x, y=y)
    elif case == "both":
        _npz(folder, x=x, y=y)
        _parquet(folder, _flat(x), y)
    elif case == "mixed":
        _npz(folder, x=x, y=y)
        _parquet(folder, _flat(x), y, name="holdout")
    elif case == "garbage_npz":
        folder.mkdir()
        (folder / "train.npz").write_bytes(b"not a zip archive at all" * 10)
    elif case == "truncated_npz":
        _npz(folder, x=x, y=y)
        blob = (folder / "train.npz").read_bytes()
        (folder / "train.npz").write_bytes(blob[: len(blob) // 2])
    elif case == "corrupt_member":
        folder.mkdir()
        np.savez_compressed(folder / "train.npz", x=x, y=y)
        blob = bytearray((folder / "train.npz").read_bytes())
        blob[200:260] = bytes(60)  # inside x's compressed bytes: the zip directory stays intact
        (folder / "train.npz").write_bytes(bytes(blob))
    elif case == "npy_as_npz":
        folder.mkdir()
        with (folder / "train.npz").open("wb") as f:
            np.save(f, x)
    elif case == "pickled":
        _npz(folder, x=np.array([{"a": 1}] * N, dtype=object), y=y)
    elif case == "garbage_parquet":
        folder.mkdir()
        (folder / "train.parquet").write_bytes(b"PAR1" + b"\x00" * 64)
    elif case == "missing_y":
        _npz(folder, x=x)
    elif case == "extra_array":
        _npz(folder, x=x, y=y, ids=np.arange(N))
    elif case == "extra_column":
        _parquet(folder, _flat(x), y, weight=np.ones(N))
    elif case == "features_not_list":
        _parquet(folder, np.ones(N), y)
    elif case == "wrong_shape":
        _npz(folder, x=x.reshape(N, 16), y=y)
    elif case == "wrong_list_length":
        _parquet(folder, [row[:15] for row in _flat(x)], y)
    elif case == "text_features":
        _npz(folder, x=np.full((N, 1, 4, 4), "a"), y=y)
    elif case == "huge_ints":
        _npz(folder, x=np.full((N, 1, 4, 4), 2**40, dtype=np.int64), y=y)
    elif case == "float_overflow":
        _npz(folder, x=np.full((N, 1, 4, 4), 1e300), y=y)
    elif case == "nan":
        x[4, 0, 1, 1] = np.nan
        _npz(folder, x=x, y=y)
    elif case == "inf_parquet":
        x[2, 0, 0, 0] = np.inf
        _parquet(folder, _flat(x), y)
    elif case == "null_features":
        rows: list[Any] = _flat(x)
        rows[3] = None
        _parquet(folder, rows, y)
    elif case == "null_value":
        rows = [list(map(float, r)) for r in _flat(x)]
        rows[3][2] = None
        _parquet(folder, rows, y)
    elif case == "out_of_range":
        _npz(folder, x=x * 255, y=y)
    elif case == "unknown_label":
        y[[5, 9]] = [3, 7]
        _npz(folder, x=x, y=y)
    elif case == "negative_label":
        y[0] = -1
        _parquet(folder, _flat(x), y)
    elif case == "unknown_name":
        names = ["cat"] * (N - 1) + ["horse"]
        _parquet(folder, _flat(x), names)
    elif case == "float_labels":
        _npz(folder, x=x, y=y.astype(np.float64))
    elif case == "column_labels":
        _npz(folder, x=x, y=y.reshape(N, 1))
    elif case == "null_label":
        _parquet(folder, _flat(x), pa.array([0, None] * (N // 2), type=pa.int64()))
    elif case == "too_few":
        _npz(folder, x=x[:5], y=y[:5])
    elif case == "length_mismatch":
        _npz(folder, x=x, y=y[:-2])
    elif case == "empty_holdout":
        _npz(folder, x=x, y=y)
        _npz(folder, "holdout", x=x[:0], y=y[:0])
    else:  # pragma: no cover
        raise AssertionError(case)
    return folder


BAD_CASES = [
    # case, problem, the file the message names, words of the message (problem and fix)
    ("missing_folder", "no_data", "absent", "no such folder"),
    ("empty", "no_data", "f", "no train.npz or train.parquet"),
    ("only_holdout", "no_data", "f", "found: holdout.npz"),
    ("both", "both_formats", "f", "keep either the .npz or the .parquet"),
    ("mixed", "both_formats", "f", "holdout.parquet"),
    ("garbage_npz", "unreadable", "train.npz", "not an .npz archive"),
    ("truncated_npz", "unreadable", "train.npz", "np.savez"),
    ("corrupt_member", "unreadable", "train.npz", "array x cannot be read"),
    ("npy_as_npz", "unreadable", "train.npz", "single .npy array"),
    ("pickled", "unreadable", "train.npz", "array x holds Python objects"),
    ("garbage_parquet", "unreadable", "train.parquet", "not a readable Parquet file"),
    ("missing_y", "layout", "train.npz", "no array y"),
    ("extra_array", "layout", "train.npz", "unknown array(s) ids"),
    ("extra_column", "layout", "train.parquet", "columns features, label, weight"),
    ("features_not_list", "layout", "train.parquet", "not a list"),
    ("wrong_shape", "feature_shape", "train.npz", "x has shape [30, 16]"),
    ("wrong_list_length", "feature_shape", "train.parquet", "holds 15 feature values"),
    ("text_features", "dtype", "train.npz", "store numbers"),
    ("huge_ints", "dtype", "train.npz", "beyond ±2^24"),
    ("float_overflow", "dtype", "train.npz", "exceed float32's range"),
    ("nan", "non_finite", "train.npz", "first in sample 4"),
    ("inf_parquet", "non_finite", "train.parquet", "NaN or infinite"),
    ("null_features", "non_finite", "train.parquet", "no features (first: row 3)"),
    ("null_value", "non_finite", "train.parquet", "missing (null)"),
    ("out_of_range", "value_range", "train.npz", "x / 255"),
    ("unknown_label", "unknown_label", "train.npz", "labels 3, 7 (2 samples, first 5)"),
    ("negative_label", "unknown_label", "train.parquet", "outside the task's classes 0..2"),
    ("unknown_name", "unknown_label", "train.parquet", "'horse'"),
    ("float_labels", "labels", "train.npz", "y.astype('int64')"),
    ("column_labels", "labels", "train.npz", "y.reshape(-1)"),
    ("null_label", "labels", "train.parquet", "have no label"),
    ("too_few", "too_few_samples", "train.npz", "at least 8"),
    ("length_mismatch", "length_mismatch", "train.npz", "x holds 30 samples, y 28"),
    ("empty_holdout", "too_few_samples", "holdout.npz", "delete holdout.npz"),
]


@pytest.mark.parametrize(
    ("case", "problem", "file", "words"), BAD_CASES, ids=[c[0] for c in BAD_CASES]
)
def test_a_folder_that_misses_the_schema_is_refused_by_name(tmp_path, case, problem, file, words):
    path = _bad(case, tmp_path / "f")
    with pytest.raises(DataFolderError) as info:
        check_folder(path, SCHEMA)
    err = info.value
    assert isinstance(err, DataError)
    assert err.problem == problem
    assert err.file.name == file and str(err).startswith(str(err.file))
    assert words in str(err)
    assert "; " in str(err)  # the problem, then the fix
    assert "allow_pickle" not in str(err)  # never advise loading pickles


def test_text_labels_need_a_schema_that_names_its_classes(tmp_path):
    x, _ = _samples()
    folder = _parquet(tmp_path / "f", _flat(x), ["cat"] * N)
    with pytest.raises(DataFolderError, match="names no classes") as info:
        check_folder(folder, SCHEMA.model_copy(update={"class_names": None}))
    assert info.value.problem == "labels"


# -- schemas -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist5k", "digits"])
def test_a_builtin_schema_describes_what_its_dataset_loads(name):
    ds, schema = load_dataset(name), schema_for_dataset(name, min_samples=3)
    assert schema.feature_shape == ds.x.shape[1:] and schema.num_classes == ds.num_classes
    assert schema.dtype == str(ds.x.dtype) and schema.min_samples == 3
    assert schema.value_range is not None
    assert schema.value_range[0] <= ds.x.min() and ds.x.max() <= schema.value_range[1]
    assert set(BUILTIN_SCHEMAS) == {"mnist5k", "digits", "fashion_mnist"}


def test_an_unknown_dataset_has_no_schema():
    with pytest.raises(DataError, match="no schema for dataset 'cifar'"):
        DataSchema.for_dataset("cifar")


def test_the_tasks_schema_is_the_declared_one_else_the_datasets(tmp_path):
    default = task_schema(load_config(overrides={"partition.min_samples": 5}))
    assert default == schema_for_dataset("mnist5k", min_samples=5)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        "data:\n  folder_schema:\n    feature_shape: [3, 16, 16]\n    num_classes: 4\n"
    )
    assert task_schema(load_config(cfg_file)).feature_shape == (3, 16, 16)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("    feature_shape: [0, 4]\n    num_classes: 3\n", "data.folder_schema.feature_shape"),
        ("    feature_shape: [4]\n    num_classes: 1\n", "data.folder_schema.num_classes"),
        ("    feature_shape: [4]\n    num_classes: 2\n    class_names: [a]\n", "lists 1 names"),
        ("    feature_shape: [4]\n    num_classes: 2\n    value_range: [1, 0]\n", "low < high"),
        ("    feature_shape: [4]\n    num_classes: 2\n    dtype: complex\n", "dtype"),
        ("    feature_shape: [4]\n    num_classes: 2\n    colour: red\n", "colour: unknown key"),
    ],
)
def test_a_bad_declared_schema_is_refused_at_config_load(tmp_path, schema, message):
    from flock_pipeline.errors import ConfigError

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model:\n  name: custom_models:tiny\ndata:\n  folder_schema:\n" + schema)
    with pytest.raises(ConfigError, match=r"data\.folder_schema") as info:
        load_config(cfg_file)
    assert message in str(info.value)


# -- the CLI -----------------------------------------------------------------------------------


def _check(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flock_pipeline", "participant", "check", *args],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )  # fmt: skip


def _task(data_dir: Path, name: str, schema: DataSchema | None) -> None:
    """A task folder as flows/world.py writes it (only the keys the check reads matter)."""
    folder = data_dir / "tasks" / name
    folder.mkdir(parents=True)
    meta: dict[str, Any] = {"name": name, "task_id": 1, "complete": False}
    if schema is not None:
        meta["schema"] = schema.model_dump(mode="json")
    (folder / "task.json").write_text(json.dumps(meta, indent=2))


def test_the_check_command_reports_a_good_folder_and_refuses_a_bad_one(tmp_path):
    # Prepare
    data_dir = tmp_path / "state"
    _task(data_dir, "t1", SCHEMA)
    _task(data_dir, "old", None)
    x, y = _samples()
    good = _npz(tmp_path / "good", x=x, y=y)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    _npz(bad, x=x, y=np.where(y == 2, 5, y))
    # Execute
    ok = _check("--task", "t1", "--data", str(good), "--data-dir", str(data_dir), cwd=tmp_path)
    refused = _check("--task", "t1", "--data", str(bad), "--data-dir", str(data_dir), cwd=tmp_path)
    old = _check("--task", "old", "--data", str(good), "--data-dir", str(data_dir), cwd=tmp_path)
    # Assert
    assert ok.returncode == 0, ok.stderr
    line = json.loads(ok.stdout.strip().splitlines()[-1])
    assert line["samples"] == N and line["classes_present"] == [0, 1, 2]
    assert line["label_counts"] == [10, 10, 10]
    assert line["content_hash"] == check_folder(good, SCHEMA).content_hash
    assert "owl" in ok.stderr and line["content_hash"] in ok.stderr
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "train.npz" in refused.stderr and "labels 5" in refused.stderr
    assert old.returncode == 2 and "Traceback" not in old.stderr
    assert "declares no data schema" in old.stderr and "-c" in old.stderr


def test_the_check_command_takes_the_schema_from_a_config_or_names_what_is_missing(tmp_path):
    ds = schema_for_dataset("digits")
    pixels = np.random.default_rng(0).random((20, *ds.feature_shape), dtype=np.float32)
    folder = _parquet(tmp_path / "digits", _flat(pixels), [str(v % 10) for v in range(20)])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data:\n  dataset: digits\n  holdout_fraction: 0.5\npartition:\n  min_samples: 4\n"
    )
    ok = _check("-c", str(cfg), "--data", str(folder), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.strip().splitlines()[-1])["holdout_samples"] == 10
    neither = _check("--data", str(folder), cwd=tmp_path)
    assert (
        neither.returncode == 2 and "--task" in neither.stderr and "Traceback" not in neither.stderr
    )
    unknown = _check(
        "--task", "nope", "--data", str(folder), "--data-dir", str(tmp_path), cwd=tmp_path
    )
    assert unknown.returncode == 2 and "no task 'nope'" in unknown.stderr
    sneaky = _check("--task", "../x", "--data", str(folder), cwd=tmp_path)
    assert sneaky.returncode == 2 and "invalid task name" in sneaky.stderr
