"""A participant's own data folder: the format, the check against a task's schema, the loading.

The folder holds one training file and, optionally, the participant's own validation split, in
one of two ordinary formats (docs/data.md):

- NumPy: ``train.npz`` with arrays ``x`` (N, *feature_shape) and ``y`` (N,) integer labels,
  as ``np.savez(path, x=x, y=y)`` writes it; optional ``holdout.npz`` alike.
- Parquet: ``train.parquet`` with exactly two columns, ``features`` (a list of
  prod(feature_shape) numbers per row, the sample flattened in C order) and ``label`` (an
  integer 0 .. K-1, or a class name when the schema names its classes); optional
  ``holdout.parquet`` alike.

Without a holdout file the holdout is cut from the training file with ``split_holdout``, seeded by
the training samples: the same data splits the same way in either format and on every machine.

Everything is read once into memory: the folder's content hash (DVC's ``<md5>.dir``, what
``dvc add`` records for it) and the arrays come from the same bytes. A folder that does not fit
the schema raises :class:`DataFolderError` naming the file, the problem and the fix.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from flock_pipeline.config import DataSchema
from flock_pipeline.data.federation import ParticipantData
from flock_pipeline.data.partition import split_holdout
from flock_pipeline.errors import DataError
from flock_pipeline.snapshots.store import content_hash, folder_files

__all__ = [
    "FORMATS",
    "DataFolderError",
    "FolderData",
    "FolderReport",
    "Problem",
    "check_folder",
    "read_folder",
]

Format = Literal["npz", "parquet"]
FORMATS: tuple[Format, ...] = ("npz", "parquet")
Problem = Literal[
    "no_data",  # no folder, or no train file in it
    "both_formats",  # .npz and .parquet files side by side
    "unreadable",  # cannot be read, or not a valid file of its format
    "layout",  # arrays or columns other than the format's
    "feature_shape",
    "dtype",  # a dtype that does not cast to the schema's without changing values
    "non_finite",  # NaN, inf or missing feature values
    "value_range",  # values outside the schema's value_range
    "labels",  # labels of the wrong kind or shape, or missing
    "unknown_label",  # a label outside the schema's classes
    "length_mismatch",  # x and y of different lengths
    "too_few_samples",
]
_FLOAT32_EXACT = 2**24  # integers up to this magnitude are exact in float32
_SHOWN = 5  # offending values an error lists
_ZIP_MAGIC, _NPY_MAGIC = b"PK\x03\x04", b"\x93NUMPY"


class DataFolderError(DataError):
    """A participant's data folder does not fit the task's schema."""

    def __init__(self, problem: Problem, file: Path, message: str) -> None:
        self.problem, self.file = problem, file
        super().__init__(f"{file}: {message}")


class FolderReport(BaseModel):
    """What ``flock participant check`` reports about a folder that fits the schema."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    folder: str
    format: Format
    train_file: str
    holdout_file: str | None
    """None: the holdout is cut from the training file."""
    samples: int
    """Rows of the training file."""
    train_samples: int
    holdout_samples: int
    label_counts: list[int]
    """Rows of the training file per class, 0 .. num_classes - 1."""
    content_hash: str
    """DVC's md5 of the whole folder (``<md5>.dir``), what ``dvc add`` records for it."""

    @property
    def classes_present(self) -> list[int]:
        return [c for c, n in enumerate(self.label_counts) if n > 0]


@dataclass(frozen=True)
class FolderData:
    """A checked folder: its report and the arrays training takes."""

    report: FolderReport
    data: ParticipantData


def check_folder(path: Path, schema: DataSchema, holdout_fraction: float = 0.2) -> FolderReport:
    """Validate the folder at ``path`` against ``schema``; raise DataFolderError if it does not
    fit. ``holdout_fraction`` is the share cut from train when there is no holdout file."""
    return read_folder(path, schema, holdout_fraction=holdout_fraction).report


def read_folder(
    path: Path,
    schema: DataSchema,
    *,
    participant: str | None = None,
    holdout_fraction: float = 0.2,
) -> FolderData:
    """Check and load the folder at ``path``: features in the schema's dtype (float32 for every
    built-in data set, as ``train_local`` takes them), int64 labels 0 .. num_classes - 1."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataFolderError(
            "no_data", folder, "no such folder; pass the folder that holds train.npz or "
            "train.parquet (docs/data.md)",
        )  # fmt: skip
    try:
        files = folder_files(folder)
    except OSError as exc:
        raise DataFolderError(
            "unreadable", folder, f"cannot read the folder ({exc}); fix its permissions"
        ) from None
    fmt = _format(folder, files)
    train_name, holdout_name = f"train.{fmt}", f"holdout.{fmt}"
    x, y = _split(folder / train_name, files[train_name], fmt, schema)
    if len(y) < schema.min_samples:
        raise DataFolderError(
            "too_few_samples", folder / train_name,
            f"{len(y)} training samples, the task needs at least {schema.min_samples}; add "
            "samples (a folder this small is not worth a stake)",
        )  # fmt: skip
    if holdout_name in files:
        x_hold, y_hold = _split(folder / holdout_name, files[holdout_name], fmt, schema)
        if len(y_hold) == 0:
            raise DataFolderError(
                "too_few_samples", folder / holdout_name,
                f"no samples; add some, or delete {holdout_name} to cut the holdout from "
                f"{train_name}",
            )  # fmt: skip
        x_train, y_train = x, y
    else:
        # Seeded by the samples, not the file's bytes: the same data cuts the same holdout in
        # either format and on every machine.
        digest = hashlib.sha256(np.ascontiguousarray(x).tobytes())
        digest.update(np.ascontiguousarray(y).tobytes())
        seed = int.from_bytes(digest.digest()[:4], "big") & 0x7FFFFFFF
        train, hold = split_holdout(np.arange(len(y), dtype=np.int64), holdout_fraction, seed)
        x_train, y_train, x_hold, y_hold = x[train], y[train], x[hold], y[hold]
    report = FolderReport(
        folder=str(folder),
        format=fmt,
        train_file=train_name,
        holdout_file=holdout_name if holdout_name in files else None,
        samples=len(y),
        train_samples=len(y_train),
        holdout_samples=len(y_hold),
        label_counts=np.bincount(y, minlength=schema.num_classes).astype(int).tolist(),
        content_hash=content_hash(files),
    )
    data = ParticipantData(
        participant or folder.resolve().name,
        np.ascontiguousarray(x_train),
        np.ascontiguousarray(y_train),
        np.ascontiguousarray(x_hold),
        np.ascontiguousarray(y_hold),
    )
    return FolderData(report, data)


def _format(folder: Path, files: dict[str, bytes]) -> Format:
    present = {fmt: [f"{stem}.{fmt}" for stem in ("train", "holdout") if f"{stem}.{fmt}" in files]
               for fmt in FORMATS}  # fmt: skip
    used = [fmt for fmt in FORMATS if present[fmt]]
    if len(used) > 1:
        names = ", ".join(present["npz"] + present["parquet"])
        raise DataFolderError(
            "both_formats", folder,
            f"holds {names}: one folder uses one format; keep either the .npz or the .parquet "
            "files",
        )  # fmt: skip
    if not used or f"train.{used[0]}" not in files:
        found = sorted(files)
        listed = ", ".join(found[:_SHOWN]) + (" ..." if len(found) > _SHOWN else "")
        raise DataFolderError(
            "no_data", folder,
            f"no train.npz or train.parquet (found: {listed or 'nothing'}); write the training "
            "data to one of them (docs/data.md)",
        )  # fmt: skip
    return used[0]


def _split(
    file: Path, blob: bytes, fmt: Format, schema: DataSchema
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """One file's (features, labels), checked and cast to the schema."""
    raw_x, raw_y = _read_npz(file, blob) if fmt == "npz" else _read_parquet(file, blob, schema)
    x = _features(file, raw_x, schema, fmt)
    y = _labels(file, raw_y, schema)
    if len(x) != len(y):
        raise DataFolderError(
            "length_mismatch", file,
            f"x holds {len(x)} samples, y {len(y)} labels; give every sample exactly one label",
        )  # fmt: skip
    return x, y


def _read_npz(file: Path, blob: bytes) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    fix = "write it with np.savez(path, x=x, y=y) from numeric arrays"
    if not blob.startswith((_ZIP_MAGIC, _NPY_MAGIC)):
        # np.load would take it for a pickle and suggest allow_pickle, which is never the fix.
        raise DataFolderError("unreadable", file, f"not an .npz archive (no zip header); {fix}")
    try:
        loaded = np.load(io.BytesIO(blob), allow_pickle=False)
    except Exception as exc:  # numpy raises many kinds on corrupt input; all mean unreadable
        raise DataFolderError(
            "unreadable", file, f"not a readable .npz archive ({exc}); {fix}"
        ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataFolderError(
            "unreadable", file, f"holds a single .npy array, not an .npz archive; {fix}"
        )
    with loaded:
        names = sorted(loaded.files)
        missing = [n for n in ("x", "y") if n not in names]
        extra = [n for n in names if n not in ("x", "y")]
        if missing or extra:
            what = "; ".join(
                part for part in (
                    f"no array {' or '.join(missing)}" if missing else "",
                    f"unknown array(s) {', '.join(extra)}" if extra else "",
                ) if part
            )  # fmt: skip
            raise DataFolderError(
                "layout", file,
                f"{what} (it holds {', '.join(names) or 'nothing'}); the format has exactly x "
                "(features) and y (labels): save them as np.savez(path, x=x, y=y)",
            )  # fmt: skip
        arrays = []
        for name in ("x", "y"):
            try:
                arrays.append(loaded[name])
            except ValueError as exc:
                if "allow_pickle" not in str(exc):
                    raise DataFolderError(
                        "unreadable", file, f"array {name} cannot be read ({exc}); {fix}"
                    ) from None
                raise DataFolderError(
                    "unreadable", file,
                    f"array {name} holds Python objects (pickled), which are never loaded; {fix}",
                ) from None  # fmt: skip
            except Exception as exc:  # a corrupt member: zlib, CRC, truncation ...
                raise DataFolderError(
                    "unreadable", file, f"array {name} cannot be read ({exc}); {fix}"
                ) from None
        return arrays[0], arrays[1]


def _read_parquet(
    file: Path, blob: bytes, schema: DataSchema
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.compute as pc  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    try:
        table = pq.read_table(pa.BufferReader(blob))
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... on corrupt input
        raise DataFolderError(
            "unreadable", file, f"not a readable Parquet file ({exc}); write it again "
            "(pyarrow.parquet.write_table or DataFrame.to_parquet)",
        ) from None  # fmt: skip
    names = table.column_names
    if sorted(names) != ["features", "label"]:
        raise DataFolderError(
            "layout", file,
            f"columns {', '.join(names) or 'none'}; the format has exactly two: features (a "
            "list of numbers per row) and label",
        )  # fmt: skip
    features = table.column("features").combine_chunks()
    kind = features.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)
            or pa.types.is_fixed_size_list(kind)):  # fmt: skip
        raise DataFolderError(
            "layout", file,
            f"column features is {kind}, not a list; store each sample as one list of "
            f"{schema.num_features} numbers (the sample flattened in C order)",
        )  # fmt: skip
    if features.null_count:
        row = int(np.flatnonzero(features.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataFolderError(
            "non_finite", file,
            f"{features.null_count} rows have no features (first: row {row}); drop them or "
            "fill them in",
        )  # fmt: skip
    lengths = pc.list_value_length(features).to_numpy(zero_copy_only=False)
    wrong = np.flatnonzero(lengths != schema.num_features)
    if len(wrong):
        raise DataFolderError(
            "feature_shape", file,
            f"row {int(wrong[0])} holds {int(lengths[wrong[0]])} feature values, the task's "
            f"feature_shape {list(schema.feature_shape)} needs {schema.num_features} per row "
            f"({len(wrong)} rows differ); flatten each sample to {schema.num_features} values",
        )  # fmt: skip
    values = features.flatten()
    if values.null_count:
        raise DataFolderError(
            "non_finite", file,
            f"{values.null_count} feature values are missing (null); fill them in or drop "
            "those rows",
        )  # fmt: skip
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
            or pa.types.is_boolean(values.type)):  # fmt: skip
        raise DataFolderError(
            "dtype",
            file,
            f"features are lists of {values.type}, not numbers; store numeric features",
        )
    x = values.to_numpy(zero_copy_only=False).reshape(len(table), *schema.feature_shape)
    label = table.column("label").combine_chunks()
    if label.null_count:
        row = int(np.flatnonzero(label.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataFolderError(
            "labels", file,
            f"{label.null_count} rows have no label (first: row {row}); label them or drop them",
        )  # fmt: skip
    if pa.types.is_dictionary(label.type):
        label = label.dictionary_decode()
    return x, label.to_numpy(zero_copy_only=False)


def _features(
    file: Path, raw: npt.NDArray[Any], schema: DataSchema, fmt: Format
) -> npt.NDArray[Any]:
    shape = tuple(schema.feature_shape)
    if raw.ndim < 1 or tuple(raw.shape[1:]) != shape:
        n = raw.shape[0] if raw.ndim >= 1 else "N"
        raise DataFolderError(
            "feature_shape", file,
            f"x has shape {list(raw.shape)}, the task's samples have shape {list(shape)}; "
            f"store x as ({n}, {', '.join(map(str, shape))}), e.g. x.reshape(len(x), "
            f"{', '.join(map(str, shape))})",
        )  # fmt: skip
    if raw.dtype.kind not in "fiub":
        raise DataFolderError(
            "dtype", file,
            f"features of dtype {raw.dtype}, the task takes {schema.dtype}; store numbers "
            f"(e.g. x.astype('{schema.dtype}'))",
        )  # fmt: skip
    if raw.dtype.kind == "f":
        bad = ~np.isfinite(raw)
        if bad.any():
            row = int(np.flatnonzero(bad.reshape(len(raw), -1).any(axis=1))[0])
            raise DataFolderError(
                "non_finite", file,
                f"{int(bad.sum())} feature values are NaN or infinite (first in sample {row}); "
                "drop or repair those samples",
            )  # fmt: skip
    x = _cast(file, raw, schema.dtype)
    if schema.value_range is not None and x.size:
        low, high = schema.value_range
        lo, hi = float(x.min()), float(x.max())
        if lo < low or hi > high:
            hint = " (x / 255 for 8-bit pixels)" if hi > 1 and high <= 1 else ""
            raise DataFolderError(
                "value_range", file,
                f"feature values span [{lo:g}, {hi:g}], the task's value_range is "
                f"[{low:g}, {high:g}]; scale them into it{hint}",
            )  # fmt: skip
    return x


def _cast(file: Path, raw: npt.NDArray[Any], dtype: str) -> npt.NDArray[Any]:
    """``raw`` in ``dtype`` if no value changes on the way (float to float32: none overflows)."""
    target = np.dtype(dtype)
    if raw.dtype == target:
        return raw
    if target.kind == "f":
        if raw.dtype.kind == "f":
            with np.errstate(over="ignore"):
                out = raw.astype(target)
            if not np.isfinite(out).all():
                raise DataFolderError(
                    "dtype", file,
                    f"some {raw.dtype} features exceed {dtype}'s range; scale them down",
                )  # fmt: skip
            return out
        if raw.size and int(np.abs(raw.astype(np.float64)).max()) > _FLOAT32_EXACT:
            raise DataFolderError(
                "dtype", file,
                f"{raw.dtype} features beyond ±2^24 do not cast to {dtype} without changing "
                "values; scale them, or use a schema of int64 codes with a model that embeds "
                "them",
            )  # fmt: skip
        return raw.astype(target)
    if raw.dtype.kind == "f":
        raise DataFolderError(
            "dtype", file,
            f"features of dtype {raw.dtype}, the task takes integer codes ({dtype}); store "
            "integers (x.astype('int64') if every value is whole)",
        )  # fmt: skip
    if raw.dtype == np.uint64 and raw.size and int(raw.max()) > np.iinfo(np.int64).max:
        raise DataFolderError(
            "dtype", file, f"uint64 features beyond int64's range; {dtype} codes only"
        )
    return raw.astype(target)


def _labels(file: Path, raw: npt.NDArray[Any], schema: DataSchema) -> npt.NDArray[np.int64]:
    k = schema.num_classes
    if raw.ndim != 1:
        raise DataFolderError(
            "labels", file,
            f"y has shape {list(raw.shape)}; labels are one integer per sample, shape (N,): "
            "store y.reshape(-1)",
        )  # fmt: skip
    if raw.dtype.kind in "iu":
        if raw.dtype == np.uint64 and raw.size and int(raw.max()) > np.iinfo(np.int64).max:
            y = np.full(raw.shape, -1, dtype=np.int64)  # all reported as unknown below
            values = raw
        else:
            y = raw.astype(np.int64)
            values = y
        unknown = (y < 0) | (y >= k)
        if unknown.any():
            shown = sorted({int(v) for v in values[unknown]})[:_SHOWN]
            raise DataFolderError(
                "unknown_label", file,
                f"labels {', '.join(map(str, shown))} ({int(unknown.sum())} samples, first "
                f"{int(np.flatnonzero(unknown)[0])}) are outside the task's classes 0..{k - 1}; "
                "relabel or drop those samples",
            )  # fmt: skip
        return y
    if raw.dtype.kind in "USO":
        names = schema.class_names
        if names is None:
            raise DataFolderError(
                "labels", file,
                f"labels are text, but the task's schema names no classes; store integer "
                f"labels 0..{k - 1}",
            )  # fmt: skip
        index = {name: i for i, name in enumerate(names)}
        as_text = [v.decode() if isinstance(v, bytes) else v for v in raw.tolist()]
        y = np.array([index.get(v, -1) if isinstance(v, str) else -1 for v in as_text],
                     dtype=np.int64)  # fmt: skip
        unknown = y < 0
        if unknown.any():
            strange = sorted({repr(v) for v, u in zip(as_text, unknown, strict=True) if u})
            raise DataFolderError(
                "unknown_label", file,
                f"labels {', '.join(strange[:_SHOWN])} ({int(unknown.sum())} samples) are not "
                f"among the task's classes ({', '.join(names)}); relabel or drop those samples",
            )  # fmt: skip
        return y
    raise DataFolderError(
        "labels",
        file,
        f"labels of dtype {raw.dtype}; labels are integers 0..{k - 1}"
        + (" or class names" if schema.class_names else "")
        + " (y.astype('int64') if every value is whole)",
    )


def write_folder(path: Path, data: ParticipantData) -> Path:
    """Write ``data`` as a participant folder (``train.npz`` and ``holdout.npz``) that
    :func:`read_folder` reads back to the same arrays."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for name, x, y in (("train", data.x_train, data.y_train),
                       ("holdout", data.x_holdout, data.y_holdout)):  # fmt: skip
        buffer = io.BytesIO()
        np.savez(buffer, x=x, y=y)
        tmp = folder / f".{name}.npz.tmp"
        tmp.write_bytes(buffer.getvalue())
        tmp.replace(folder / f"{name}.npz")
    return folder
