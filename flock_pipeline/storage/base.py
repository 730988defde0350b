"""What every blob store offers, and the digest rules they share.

Blobs are addressed by the same ``0x``-prefixed sha256 that participants commit on chain, so a
store never has to be trusted: every read is checked against the address it was asked for.
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol, runtime_checkable

from flock_pipeline.storage.errors import StorageError

__all__ = ["BlobStore", "blob_key", "digest_of", "normalize_digest", "verify"]

_HEX = re.compile(r"[0-9a-f]{64}")


@runtime_checkable
class BlobStore(Protocol):
    """A content-addressed store of immutable byte strings."""

    def put(self, data: bytes) -> str:
        """Store ``data`` (once: same bytes are not written again) and return its digest."""
        ...

    def get(self, digest: str) -> bytes:
        """The bytes whose sha256 is ``digest``; StorageError if missing or corrupt."""
        ...

    def exists(self, digest: str) -> bool:
        """Whether a blob with this digest is stored (its content is not checked)."""
        ...

    def size(self, digest: str) -> int | None:
        """How many bytes are stored under this digest (None: no blob), read without fetching
        them, so a reader can refuse a blob too large to be what it claims before it loads it."""
        ...

    def uri(self, digest: str) -> str:
        """Where the blob lives: a ``file://`` URI or ``s3://bucket/key``."""
        ...

    def check_writable(self) -> None:
        """Write and remove a probe, so an unwritable store fails before a task starts, not
        after its contracts and data sets exist; StorageError naming the place otherwise."""
        ...


def digest_of(data: bytes) -> str:
    """``0x`` + sha256 hex of ``data``: the same form as ``serialization.content_hash``."""
    return "0x" + hashlib.sha256(data).hexdigest()


def normalize_digest(digest: str) -> str:
    """The 64 lowercase hex characters of a digest given with or without ``0x``."""
    hex_part = digest.strip().lower().removeprefix("0x")
    if not _HEX.fullmatch(hex_part):
        raise StorageError(
            f"{digest!r} is not a blob digest: expected '0x' followed by 64 hex characters (sha256)"
        )
    return hex_part


def blob_key(hex_digest: str) -> str:
    """Relative location ``sha256/ab/<hex>``: two-character fan-out keeps folders small."""
    return f"sha256/{hex_digest[:2]}/{hex_digest}"


def verify(data: bytes, hex_digest: str, where: str) -> bytes:
    """Return ``data`` if it hashes to ``hex_digest``, else raise naming the blob and place."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != hex_digest:
        raise StorageError(
            f"blob 0x{hex_digest} at {where} is corrupt (its content hashes to 0x{actual}); "
            "delete it and upload the update again"
        )
    return data
