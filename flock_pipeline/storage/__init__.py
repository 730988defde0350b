"""Storage adapter: content-addressed blobs (model updates) on local disk or S3.

A blob's address is the sha256 its owner commits on chain, so every read is verified and a
second upload of the same bytes is a no-op.
"""

from __future__ import annotations

from flock_pipeline.storage.base import BlobStore, digest_of
from flock_pipeline.storage.errors import StorageError, StoreUnreachable
from flock_pipeline.storage.local import LocalBlobStore
from flock_pipeline.storage.opener import open_store
from flock_pipeline.storage.s3 import S3BlobStore

__all__ = [
    "BlobStore",
    "LocalBlobStore",
    "S3BlobStore",
    "StorageError",
    "StoreUnreachable",
    "digest_of",
    "open_store",
]
