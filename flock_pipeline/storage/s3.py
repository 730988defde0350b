"""Blobs in an S3 bucket (AWS, MinIO, rclone serve s3, any S3-compatible server) via boto3.

A participant need not hold credentials for the bucket: the coordinator, which does, hands it a
presigned PUT URL for exactly the key of the update it committed (:meth:`S3BlobStore.
presign_put`), and the participant uploads through that URL alone (:func:`put_presigned`). The
URL signs the key, its expiry and the blob's sha256 as ``x-amz-checksum-sha256``, so the holder
can write that one object until the URL expires and nothing else. What the server enforces
varies: AWS S3 and MinIO check the signature, the expiry and the checksum against the body;
``rclone serve s3`` (the tests' server) checks the signature, the expiry and that the signed
checksum header is sent, but not that the body matches it. Bytes that do not match their key
are refused on every read anyway (:func:`~flock_pipeline.storage.base.verify`), and can only
spoil the writer's own blob.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import html
import os
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from flock_pipeline.storage.base import blob_key, digest_of, normalize_digest, verify
from flock_pipeline.storage.errors import PresignedUrlExpired, StorageError, StoreUnreachable

__all__ = ["MAX_PRESIGN_SECONDS", "S3BlobStore", "put_presigned"]

_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
"""The longest a SigV4 presigned URL may live (AWS's limit)."""
_CHECKSUM_HEADER = "x-amz-checksum-sha256"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


_UNREACHABLE = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError,
                ReadTimeoutError)  # fmt: skip


def _error(exc: Exception, message: str) -> StorageError:
    """``StoreUnreachable`` when the server did not answer, else a plain ``StorageError``."""
    return StoreUnreachable(message) if isinstance(exc, _UNREACHABLE) else StorageError(message)


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
            # Presigned URLs in SigV4 (boto3 still presigns S3 in SigV2 by default), the only
            # form that carries its own expiry and that MinIO and rclone accept.
            "signature_version": "s3v4",
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
            raise _error(exc, f"cannot upload blob {digest} to {where}: {exc}") from None
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
            raise _error(exc, f"cannot download blob 0x{hex_digest} from {where}: {exc}") from None
        return verify(data, hex_digest, where)

    def exists(self, digest: str) -> bool:
        return self._head(self.key(digest)) is not None

    def size(self, digest: str) -> int | None:
        head = self._head(self.key(digest))
        return None if head is None else int(head["ContentLength"])

    def uri(self, digest: str) -> str:
        return f"s3://{self.bucket}/{self.key(digest)}"

    def presign_put(self, digest: str, expires_in: int = 900) -> str:
        """A URL through which whoever holds it may PUT the blob ``digest``, and only it, for
        ``expires_in`` seconds: for a participant that has no credentials of its own. Upload
        through it with :func:`put_presigned`."""
        hex_digest = normalize_digest(digest)
        if not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
            raise StorageError(
                f"a presigned URL lives 1 to {MAX_PRESIGN_SECONDS} seconds (7 days), not "
                f"{expires_in}: pick an expiry in that range"
            )
        params = {
            "Bucket": self.bucket,
            "Key": self.key(hex_digest),
            "ChecksumSHA256": base64.b64encode(bytes.fromhex(hex_digest)).decode(),
        }
        try:
            url: str = self._client.generate_presigned_url(
                "put_object", Params=params, ExpiresIn=expires_in
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot presign an upload to {self.uri(digest)}: {exc}") from None
        return url

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
            raise _error(exc, f"cannot check s3://{self.bucket}/{key}: {exc}") from None
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


def put_presigned(url: str, data: bytes, *, timeout: float = 60.0, now: float | None = None) -> str:
    """Upload ``data`` through a presigned PUT URL from :meth:`S3BlobStore.presign_put` and
    return its digest, without credentials of one's own.

    Refused by name, before anything is sent: a URL that is not a SigV4 presigned URL, one past
    its expiry by this machine's clock (``now``, default the current time), and one for another
    key than ``data``'s blob. The server's own refusals (an expired URL by its clock, a broken
    signature) are named too. The URL is a credential: messages name its key, never its query.
    """
    digest = digest_of(data)
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    path = urllib.parse.unquote(parts.path)
    where = f"{parts.scheme}://{parts.netloc}{path}"
    needed = ("X-Amz-Algorithm", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
              "X-Amz-Signature")  # fmt: skip
    if (
        parts.scheme not in {"http", "https"}
        or query.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256"
        or any(not query.get(name) for name in needed)
    ):
        raise StorageError(
            f"{where} is not a presigned S3 upload URL (SigV4, with {', '.join(needed)}): ask "
            "the coordinator for the URL of this update"
        )
    expires_at = _expiry(query, where)
    clock = time.time() if now is None else now
    if clock >= expires_at:
        raise PresignedUrlExpired(
            f"the presigned URL for {where} expired at {_iso(expires_at)} "
            f"({clock - expires_at:.0f} s ago): ask the coordinator for a new URL"
        )
    expected = blob_key(digest[2:])
    if not path.endswith("/" + expected):
        raise StorageError(
            f"the presigned URL is for {where}, not for this update's blob {digest} (key "
            f".../{expected}): ask the coordinator for the URL of this update"
        )
    headers = {"Content-Type": "application/octet-stream"}
    for name in query["X-Amz-SignedHeaders"].lower().split(";"):
        if name == _CHECKSUM_HEADER:
            headers[_CHECKSUM_HEADER] = base64.b64encode(hashlib.sha256(data).digest()).decode()
        elif name == "content-md5":
            headers["Content-MD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()
        elif name != "host":
            raise StorageError(
                f"the presigned URL for {where} signs the header {name!r}, which an upload "
                "cannot supply: ask the coordinator for a URL made by presign_put"
            )
    request = urllib.request.Request(url, data=data, method="PUT", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        code, message = _s3_error(exc.read())
        if exc.code in {400, 403} and _EXPIRED.search(message):
            raise PresignedUrlExpired(
                f"the S3 server refused the upload to {where} as expired ({code}: {message}): "
                "ask the coordinator for a new URL"
            ) from None
        raise StorageError(
            f"the S3 server refused the upload of {digest} to {where} (HTTP {exc.code} "
            f"{code}: {message}): ask the coordinator for a new URL for this update"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise StorageError(
            f"cannot reach {parts.scheme}://{parts.netloc} to upload {digest}: {exc}; check "
            "the network and retry"
        ) from None
    return digest


_EXPIRED = re.compile(r"expired|request time", re.IGNORECASE)
"""How AWS ("Request has expired"), MinIO and rclone ("... the request time and the server's
time ...") word an expired presigned URL."""


def _expiry(query: dict[str, str], where: str) -> float:
    try:
        signed_at = calendar.timegm(time.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
        lifetime = int(query["X-Amz-Expires"])
    except ValueError:
        raise StorageError(
            f"the presigned URL for {where} has a malformed X-Amz-Date or X-Amz-Expires: ask "
            "the coordinator for a new URL"
        ) from None
    return float(signed_at + lifetime)


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _s3_error(body: bytes) -> tuple[str, str]:
    """The <Code> and <Message> of an S3 error document (empty when there are none)."""
    text = body[:4_096].decode("utf-8", errors="replace")

    def element(tag: str) -> str:
        found = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
        return html.unescape(found.group(1).strip()) if found else ""

    return element("Code"), element("Message")
