"""The tracking adapter's error type."""

from __future__ import annotations

from flock_pipeline.errors import FlockError

__all__ = ["TrackingError"]


class TrackingError(FlockError):
    """The MLflow tracking/registry URI cannot be used, or a model version is missing or bad."""
