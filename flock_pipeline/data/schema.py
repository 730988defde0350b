"""What a task's data looks like, for the built-in data sets and for a config's task.

:class:`DataSchema` (declared in ``flock_pipeline.config``, since a config may carry one as
``data.folder_schema`` and the config must not import the data package) is the contract between a
task and every participant's folder: feature shape and dtype, the classes, the smallest training
set worth a stake and, optionally, the range feature values must lie in (so that nobody trains on
0..255 pixels while the others scale to [0, 1]). It is frozen and JSON-serialisable, so it also
travels in the task's metadata (``tasks/<task>/task.json``).

Pure: no I/O, no torch. ``flock_pipeline.data.folder`` checks a folder against a schema.
"""

from __future__ import annotations

from flock_pipeline.config import DataSchema, FeatureDtype, FlockConfig
from flock_pipeline.errors import DataError

__all__ = ["BUILTIN_SCHEMAS", "DataSchema", "FeatureDtype", "schema_for_dataset", "task_schema"]

_DIGITS = tuple(str(d) for d in range(10))
_FASHION = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

BUILTIN_SCHEMAS: dict[str, DataSchema] = {
    "mnist5k": DataSchema(
        feature_shape=(1, 28, 28), num_classes=10, class_names=_DIGITS, value_range=(0.0, 1.0)
    ),
    "digits": DataSchema(
        feature_shape=(1, 8, 8), num_classes=10, class_names=_DIGITS, value_range=(0.0, 1.0)
    ),
    "fashion_mnist": DataSchema(
        feature_shape=(1, 28, 28), num_classes=10, class_names=_FASHION, value_range=(0.0, 1.0)
    ),
}
"""Must agree with ``flock_pipeline.data.datasets`` (a test loads each and compares)."""


def schema_for_dataset(name: str, min_samples: int = 1) -> DataSchema:
    """The schema of a built-in data set: what ``load_dataset(name)`` returns, unloaded."""
    try:
        schema = BUILTIN_SCHEMAS[name]
    except KeyError:
        raise DataError(
            f"no schema for dataset {name!r}; choose one of {', '.join(sorted(BUILTIN_SCHEMAS))}"
            " or declare data.folder_schema in the config"
        ) from None
    return schema.model_copy(update={"min_samples": min_samples})


def task_schema(cfg: FlockConfig) -> DataSchema:
    """The schema of a config's task: ``data.folder_schema`` if declared, else the built-in
    data set's, with ``partition.min_samples`` as the smallest folder."""
    if cfg.data.folder_schema is not None:
        return cfg.data.folder_schema
    return schema_for_dataset(cfg.data.dataset, min_samples=cfg.partition.min_samples)
