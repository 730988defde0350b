"""A data set cut into participants' train and held-out splits plus a global test split (and,
with ``data.validation: shared``, the task's validation set)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from flock_pipeline.config import DataConfig, PartitionConfig
from flock_pipeline.data.datasets import Dataset
from flock_pipeline.data.partition import (
    balanced_split,
    class_counts,
    partition_indices,
    split_holdout,
    stratified_split,
)
from flock_pipeline.seeding import derive_seed

__all__ = ["Federation", "ParticipantData", "build_federation", "participant_id"]


def participant_id(index: int) -> str:
    return f"p{index}"


@dataclass(frozen=True)
class ParticipantData:
    id: str
    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_holdout: npt.NDArray[np.float32]
    y_holdout: npt.NDArray[np.int64]


@dataclass(frozen=True)
class Federation:
    dataset: str
    num_classes: int
    input_shape: tuple[int, int, int]
    participants: list[ParticipantData]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]
    counts: npt.NDArray[np.int64]
    """Training samples per class per participant, shape (participants, classes)."""
    x_validation: npt.NDArray[np.float32] | None = None
    y_validation: npt.NDArray[np.int64] | None = None
    """The task's shared validation set (``data.validation: shared``), or None."""

    @property
    def shared_validation(self) -> bool:
        return self.x_validation is not None and self.y_validation is not None

    def voter_data(self, index: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """What participant ``index`` scores on as a voter: the shared validation set if the
        task has one, else its own held-out split."""
        if self.x_validation is not None and self.y_validation is not None:
            return self.x_validation, self.y_validation
        part = self.participants[index]
        return part.x_holdout, part.y_holdout


def build_federation(
    dataset: Dataset,
    num_participants: int,
    data: DataConfig,
    partition: PartitionConfig,
    seed: int,
) -> Federation:
    """Deterministic for a seed: the same participants hold the same samples everywhere."""
    x, y = dataset.x, dataset.y
    if dataset.x_test is not None and dataset.y_test is not None:
        pool = np.arange(len(y), dtype=np.int64)
        x_test, y_test = dataset.x_test, dataset.y_test
    else:
        pool, test_idx = stratified_split(y, data.test_fraction, derive_seed(seed, "test"))
        x_test, y_test = x[test_idx], y[test_idx]
    unused = np.zeros(0, dtype=np.int64)
    if data.max_samples is not None and data.max_samples < len(pool):
        rng = np.random.default_rng(derive_seed(seed, "subsample"))
        chosen = np.sort(rng.choice(pool, size=data.max_samples, replace=False))
        unused, pool = np.setdiff1d(pool, chosen), chosen
    x_val = y_val = None
    if data.validation == "shared":
        # From what the cap leaves unused when there is any (then the participants hold the
        # same data as with held-out validation), else held back from the training pool.
        capped = len(unused) > 0
        source = unused if capped else pool
        rest, held = balanced_split(
            y[source], data.validation_per_class, derive_seed(seed, "validation"),
            num_classes=dataset.num_classes, keep=not capped,
            source="the samples data.max_samples leaves unused" if capped else "the training pool",
            other_fix="lower data.max_samples or remove it" if capped else "use a larger data set",
        )  # fmt: skip
        x_val, y_val = x[source[held]], y[source[held]]
        if not capped:
            pool = pool[rest]
    parts = partition_indices(
        y[pool],
        num_participants,
        partition.scheme,
        alpha=partition.alpha,
        classes_per_participant=partition.classes_per_participant,
        quantity_alpha=partition.quantity_alpha,
        min_samples=partition.min_samples,
        seed=derive_seed(seed, "partition"),
    )
    participants = []
    train_parts = []
    for i, local in enumerate(parts):
        train, hold = split_holdout(
            pool[local], data.holdout_fraction, derive_seed(seed, "holdout", i)
        )
        train_parts.append(train)
        participants.append(
            ParticipantData(participant_id(i), x[train], y[train], x[hold], y[hold])
        )
    return Federation(
        dataset=dataset.name,
        num_classes=dataset.num_classes,
        input_shape=dataset.input_shape,
        participants=participants,
        x_test=x_test,
        y_test=y_test,
        counts=class_counts(y, train_parts, dataset.num_classes),
        x_validation=x_val,
        y_validation=y_val,
    )
