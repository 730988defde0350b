"""Tracking adapter: round models in the MLflow registry (SQLite file by default, or a server)."""

from __future__ import annotations

from flock_pipeline.tracking.errors import TrackingError
from flock_pipeline.tracking.registry import (
    ARCHITECTURE_TAG,
    HASH_TAG,
    ROUND_TAG,
    WEIGHTS_ARTIFACT,
    ModelRegistry,
    ModelVersionRef,
    preload_model_flavor,
)

__all__ = [
    "ARCHITECTURE_TAG",
    "HASH_TAG",
    "ROUND_TAG",
    "WEIGHTS_ARTIFACT",
    "ModelRegistry",
    "ModelVersionRef",
    "TrackingError",
    "preload_model_flavor",
]
