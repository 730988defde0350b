"""Errors a user can cause. Each message names the problem and, where there is one, the fix.

The CLI prints these without a traceback and exits non-zero; anything else is a bug.
"""

from __future__ import annotations

__all__ = [
    "AggregationError",
    "ConfigError",
    "DataError",
    "FlockError",
    "GlobalModelUnavailable",
    "LocalTrainingTimeout",
    "PrivacyBudgetExceeded",
    "SerializationError",
    "TaskFinished",
]


class FlockError(Exception):
    """Base class of every error a user can cause and fix."""


class ConfigError(FlockError):
    """A configuration value is unknown, of the wrong type or out of range."""


class DataError(FlockError):
    """A data set is missing, malformed or cannot be partitioned as asked."""


class AggregationError(FlockError):
    """Updates cannot be aggregated: NaN values, shape or architecture mismatch."""


class SerializationError(FlockError):
    """A model or update file is corrupt or not what it claims to be."""


class GlobalModelUnavailable(FlockError):
    """The task's current global model is in neither the blob store nor the model registry."""


class PrivacyBudgetExceeded(FlockError):
    """Training would push a participant past its (epsilon, delta) budget."""


class TaskFinished(FlockError):
    """A task whose every round has run is asked to run again."""


class LocalTrainingTimeout(FlockError):
    """Local training did not finish within its time limit."""
