"""Blobs in an S3 bucket (AWS, MinIO, rclone serve s3, any S3-compatible server) via boto3."""

from __future__ import annotations

import os
import secrets
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from flock_pipeline.storage.base import blob_key, digest_of, normalize_digest, verify
from flock_pipeline.storage.errors import StorageError

__all__ = ["S3BlobStore"]

_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3BlobStore:
    """Blobs at ``s3://bucket/prefix/sha256/ab/<hex>``.

    Credentials come from the usual AWS environment variables or config files. botocore's
    ``standard`` retry mode retries transient errors (throttling, 5xx, dropped connections) a few
    times with backoff. The bucket is checked once here, so a wrong endpoint, bucket or key fails
    at open time with a clear message instead of deep inside a round.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        create_bucket: bool = False,
        max_attempts: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        if not bucket:
            raise StorageError("an S3 blob store needs a bucket name: use s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        common: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            # S3-compatible servers often reject the newer default checksum trailers; content is
            # verified against the sha256 address on every read anyway.
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            "s3": {"addressing_style": "path" if endpoint_url else "auto"},
        }
        session = boto3.session.Session()
        self._client: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region or "us-east-1",
            config=Config(retries={"mode": "standard", "max_attempts": max_attempts}, **common),
        )
        # The open-time probe does not retry: an unreachable endpoint should fail in seconds.
        probe: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region or "us-east-1",
            config=Config(retries={"mode": "standard", "max_attempts": 1}, **common),
        )
        self._check_bucket(probe, create_bucket)

    def __repr__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"S3BlobStore({self._location()!r}{where})"

    def key(self, digest: str) -> str:
        """The object key of a blob."""
        key = blob_key(normalize_digest(digest))
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, data: bytes) -> str:
        digest = digest_of(data)
        key = self.key(digest)
        head = self._head(key)
        if head is not None and int(head.get("ContentLength", -1)) == len(data):
            return digest
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType="application/octet-stream",
                Metadata={"sha256": digest[2:]},
            )
        except (ClientError, BotoCoreError) as exc:
            where = self.uri(digest)
            raise StorageError(f"cannot upload blob {digest} to {where}: {exc}") from None
        return digest

    def get(self, digest: str) -> bytes:
        hex_digest = normalize_digest(digest)
        key = self.key(hex_digest)
        where = f"s3://{self.bucket}/{key}"
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            data: bytes = response["Body"].read()
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise StorageError(
                    f"blob 0x{hex_digest} is not in {self._location()} (expected at {where})"
                ) from None
            raise StorageError(f"cannot download blob 0x{hex_digest} from {where}: {exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"cannot download blob 0x{hex_digest} from {where}: {exc}") from None
        return verify(data, hex_digest, where)

    def exists(self, digest: str) -> bool:
        return self._head(self.key(digest)) is not None

    def uri(self, digest: str) -> str:
        return f"s3://{self.bucket}/{self.key(digest)}"

    def check_writable(self) -> None:
        name = f".probe-{secrets.token_hex(8)}"
        key = f"{self.prefix}/{name}" if self.prefix else name
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=b"")
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(
                f"cannot write to {self._location()} ({exc}): check that the credentials may "
                "write this bucket"
            ) from None

    def _location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise StorageError(f"cannot check s3://{self.bucket}/{key}: {exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"cannot check s3://{self.bucket}/{key}: {exc}") from None
        return head

    def _check_bucket(self, probe: Any, create: bool) -> None:
        endpoint = self.endpoint_url or "the default AWS endpoint"
        try:
            probe.head_bucket(Bucket=self.bucket)
            return
        except NoCredentialsError:
            raise StorageError(
                f"no S3 credentials for {self._location()}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or an AWS profile)"
            ) from None
        except ClientError as exc:
            code = _code(exc)
            if code not in _MISSING:
                raise StorageError(
                    f"cannot use bucket {self.bucket!r} at {endpoint} (error {code}): check the "
                    "credentials and that they may read and write this bucket"
                ) from None
        except BotoCoreError as exc:
            raise StorageError(
                f"cannot reach the S3 endpoint {endpoint} for {self._location()}: {exc}; check "
                "the endpoint URL and that the server is running"
            ) from None
        if not create:
            raise StorageError(
                f"bucket {self.bucket!r} does not exist at {endpoint}: create it, or open the "
                "store with create_bucket=True"
            )
        try:
            probe.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise StorageError(
                    f"cannot create bucket {self.bucket!r} at {endpoint}: {exc}"
                ) from None
        except BotoCoreError as exc:
            raise StorageError(
                f"cannot create bucket {self.bucket!r} at {endpoint}: {exc}"
            ) from None
