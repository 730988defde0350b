"""Blobs in a local folder: the embedded default, no server needed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from flock_pipeline.storage.base import blob_key, digest_of, normalize_digest, verify
from flock_pipeline.storage.errors import StorageError

__all__ = ["LocalBlobStore"]


class LocalBlobStore:
    """Blobs under ``root/sha256/ab/<hex>``, written atomically (temp file + ``os.replace``).

    Readers never see a half-written blob, and a crash mid-write leaves only a temp file.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def path(self, digest: str) -> Path:
        """The file a blob lives in (whether or not it exists)."""
        return self.root / blob_key(normalize_digest(digest))

    def put(self, data: bytes) -> str:
        digest = digest_of(data)
        target = self.path(digest)
        if self._intact(target, digest):
            return digest
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as tmp:
                    tmp.write(data)
                    tmp.flush()
                    os.fsync(tmp.fileno())
                os.replace(tmp_name, target)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(f"cannot write blob {digest} to {target}: {exc}") from None
        return digest

    def get(self, digest: str) -> bytes:
        hex_digest = normalize_digest(digest)
        target = self.root / blob_key(hex_digest)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise StorageError(
                f"blob 0x{hex_digest} is not in the local store {self.root} (expected at {target})"
            ) from None
        except OSError as exc:
            raise StorageError(f"cannot read blob 0x{hex_digest} from {target}: {exc}") from None
        return verify(data, hex_digest, str(target))

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def uri(self, digest: str) -> str:
        return self.path(digest).as_uri()

    def check_writable(self) -> None:
        # The folders the probe creates go again with it: a check leaves nothing behind.
        created = [p for p in (self.root, *self.root.parents) if not p.exists()]
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
            for folder in created:
                folder.rmdir()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StorageError(
                f"the blob store folder {self.root} is not writable ({reason}): set storage.url "
                "to a folder this user can create and write"
            ) from None

    def _intact(self, target: Path, digest: str) -> bool:
        """An existing blob is kept only if its content still matches (repairs corrupt files)."""
        try:
            return digest_of(target.read_bytes()) == digest
        except OSError:
            return False
