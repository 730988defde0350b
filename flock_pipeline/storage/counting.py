"""A blob store that counts the bytes a participant sends to and receives from another.

``put`` of bytes the store already holds (the same digest and length: the aggregate another
voter stored first) is not counted: every store asks before it uploads (S3: a HEAD; the local
store: the file) and then sends nothing."""

from __future__ import annotations

from dataclasses import dataclass

from flock_pipeline.storage.base import BlobStore, digest_of

__all__ = ["CountingStore"]


@dataclass
class CountingStore:
    inner: BlobStore
    sent: int = 0
    received: int = 0

    def count(self, sent: int = 0, received: int = 0) -> None:
        """Where the bytes go: this store's totals (a subclass may count elsewhere)."""
        self.sent += sent
        self.received += received

    def put(self, data: bytes) -> str:
        if self.inner.size(digest_of(data)) != len(data):
            self.count(sent=len(data))
        return self.inner.put(data)

    def get(self, digest: str) -> bytes:
        data = self.inner.get(digest)
        self.count(received=len(data))
        return data

    def exists(self, digest: str) -> bool:
        return self.inner.exists(digest)

    def size(self, digest: str) -> int | None:
        return self.inner.size(digest)

    def uri(self, digest: str) -> str:
        return self.inner.uri(digest)

    def check_writable(self) -> None:
        self.inner.check_writable()
