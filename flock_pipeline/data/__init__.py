"""Real data sets available offline and how they are split among participants."""

from flock_pipeline.data.datasets import DATASETS, Dataset, load_dataset
from flock_pipeline.data.federation import (
    Federation,
    ParticipantData,
    build_federation,
    participant_id,
)
from flock_pipeline.data.partition import class_counts, partition_indices

__all__ = [
    "DATASETS",
    "Dataset",
    "Federation",
    "ParticipantData",
    "build_federation",
    "class_counts",
    "load_dataset",
    "participant_id",
    "partition_indices",
]
