"""The storage adapter's error types, kept in their own module so every store can raise them."""

from __future__ import annotations

from flock_pipeline.errors import FlockError

__all__ = ["PresignedUrlExpired", "StorageError", "StoreUnreachable"]


class StorageError(FlockError):
    """A blob is missing or corrupt, or the store cannot be opened or reached."""


class PresignedUrlExpired(StorageError):
    """A presigned upload URL is past its expiry: the coordinator must issue a new one."""


class StoreUnreachable(StorageError, ConnectionError):
    """The store's server did not answer (refused, dropped or timed out), after the client's
    own retries: transient, so a duty that meets it is retried (it is also an ``OSError``)."""
