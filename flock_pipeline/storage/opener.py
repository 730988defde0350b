"""One URL picks the store, so config, CLI and flows share a single setting."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from flock_pipeline.storage.base import BlobStore
from flock_pipeline.storage.errors import StorageError
from flock_pipeline.storage.local import LocalBlobStore
from flock_pipeline.storage.s3 import S3BlobStore

__all__ = ["open_store"]

_FORMS = (
    "empty (local folder <data_dir>/blobs), a folder path, file:///absolute/path, "
    "or s3://bucket/prefix"
)


def open_store(
    url: str | None,
    data_dir: Path,
    endpoint_url: str | None = None,
    *,
    create_bucket: bool = False,
) -> BlobStore:
    """Open the blob store a URL names; S3 stores are checked (bucket reachable) right here.

    ``None`` or ``""`` gives the embedded default ``<data_dir>/blobs``. ``endpoint_url`` points
    S3 at MinIO, ``rclone serve s3`` or any S3-compatible server (botocore also reads
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` when it is not given).
    """
    if url is None or not url.strip():
        return LocalBlobStore(Path(data_dir) / "blobs")
    url = url.strip()
    if "://" not in url:
        return LocalBlobStore(Path(url))
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path:
            raise StorageError(
                f"blob store URL {url!r} is not a local file URL: use file:///absolute/path"
            )
        return LocalBlobStore(Path(unquote(parsed.path)))
    if scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"blob store URL {url!r} names no bucket: use s3://bucket/prefix")
        return S3BlobStore(
            parsed.netloc,
            unquote(parsed.path).strip("/"),
            endpoint_url=endpoint_url,
            create_bucket=create_bucket,
        )
    raise StorageError(f"unsupported blob store URL {url!r}: use {_FORMS}")
