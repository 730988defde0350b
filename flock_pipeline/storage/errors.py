"""The storage adapter's error type, kept in its own module so every store can raise it."""

from __future__ import annotations

from flock_pipeline.errors import FlockError

__all__ = ["StorageError"]


class StorageError(FlockError):
    """A blob is missing or corrupt, or the store cannot be opened or reached."""
