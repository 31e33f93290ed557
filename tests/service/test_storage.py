"""The artifact store: the same behaviour from the local directory and from S3 (moto_server on loopback)."""

from __future__ import annotations

import gc
import hashlib
import io
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from envyard.api.storage import (
    CHUNK_SIZE,
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    StoredBlob,
    open_artifact_store,
)
from envyard.builder.errors import ArtifactIntegrityError, NotFoundError, StorageError
from tests.servers import free_port, moto_s3

KEY = "testing"
BIG = random.Random(7).randbytes(2 * CHUNK_SIZE + 12_345)
BIG_SHA = hashlib.sha256(BIG).hexdigest()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_all(store: ArtifactStore, digest: str, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join(store.read(digest, offset, length))


def pieces(data: bytes, size: int = 100_000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("moto_server") is None:
        pytest.skip("moto_server not installed (pip install 'moto[server]')")
    with moto_s3(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


def new_s3_store(endpoint: str, tmp_path: Path) -> S3ArtifactStore:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    bucket = f"envyard-{uuid.uuid4().hex[:12]}"
    return S3ArtifactStore(endpoint, bucket, "artifacts/", KEY, KEY, spool_dir=spool, connect_timeout=2, retries=1)


@pytest.fixture()
def s3_store(moto_endpoint: str, tmp_path: Path) -> S3ArtifactStore:
    return new_s3_store(moto_endpoint, tmp_path)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "store")
    return new_s3_store(request.getfixturevalue("moto_endpoint"), tmp_path)


def leftovers(store: ArtifactStore) -> list[Path]:
    """Spooled or temporary upload files still on disk."""
    if isinstance(store, LocalArtifactStore):
        return sorted(store.tmp_dir.iterdir())
    assert isinstance(store, S3ArtifactStore) and store.spool_dir is not None
    directory = store.spool_dir
    return sorted(directory.iterdir())


def overwrite(store: ArtifactStore, digest: str, data: bytes) -> None:
    """Corrupt a stored blob behind the store's back."""
    if isinstance(store, LocalArtifactStore):
        (store.blob_dir / digest).write_bytes(data)
    else:
        assert isinstance(store, S3ArtifactStore)
        store.client.put_object(store.bucket, f"{store.prefix}blobs/sha256/{digest}", io.BytesIO(data), len(data))


def assert_absent(store: ArtifactStore, digest: str) -> None:
    assert not store.exists(digest)
    assert store.stat(digest) is None
    assert not store.verify(digest)
    with pytest.raises(NotFoundError):
        store.read(digest)
    assert leftovers(store) == []


# -- both backends ---------------------------------------------------------------------------------


def test_put_bytes_round_trip(store: ArtifactStore):
    blob = store.put_bytes(b"hello artifact")
    assert blob == StoredBlob(sha(b"hello artifact"), 14)
    assert blob.digest == f"sha256:{blob.sha256}"
    assert store.exists(blob.sha256)
    assert store.stat(blob.sha256) == 14
    assert read_all(store, blob.sha256) == b"hello artifact"
    assert store.verify(blob.sha256)
    assert leftovers(store) == []


def test_put_stream_and_put_file_check_declared_digest(store: ArtifactStore, tmp_path: Path):
    assert store.put_stream(pieces(BIG), BIG_SHA, len(BIG)) == StoredBlob(BIG_SHA, len(BIG))
    source = tmp_path / "artifact.tar.zst"
    source.write_bytes(b"file bytes" * 1000)
    blob = store.put_file(source, sha(source.read_bytes()))
    assert blob == StoredBlob(sha(source.read_bytes()), 10_000)
    assert read_all(store, blob.sha256) == source.read_bytes()


def test_empty_blob(store: ArtifactStore):
    blob = store.put_stream([], sha(b""), 0)
    assert store.stat(blob.sha256) == 0
    assert read_all(store, blob.sha256) == b""


def test_multi_chunk_read_with_offset_and_length(store: ArtifactStore):
    store.put_stream(pieces(BIG))
    chunks = list(store.read(BIG_SHA))
    assert len(chunks) >= 3 and all(len(chunk) <= CHUNK_SIZE for chunk in chunks)
    assert b"".join(chunks) == BIG
    middle = list(store.read(BIG_SHA, CHUNK_SIZE - 10, CHUNK_SIZE + 20))
    assert all(len(chunk) <= CHUNK_SIZE for chunk in middle)
    assert b"".join(middle) == BIG[CHUNK_SIZE - 10 : 2 * CHUNK_SIZE + 10]
    assert read_all(store, BIG_SHA, len(BIG) - 5) == BIG[-5:]
    assert read_all(store, BIG_SHA, 3, 4) == BIG[3:7]
    assert read_all(store, BIG_SHA, len(BIG) - 5, 100) == BIG[-5:]
    assert read_all(store, BIG_SHA, len(BIG)) == b""
    assert read_all(store, BIG_SHA, len(BIG) + 10) == b""
    assert read_all(store, BIG_SHA, 0, 0) == b""
    with pytest.raises(ValueError):
        store.read(BIG_SHA, -1)


def test_a_read_may_stop_early(store: ArtifactStore):
    store.put_bytes(BIG)
    stream = store.read(BIG_SHA)
    assert len(next(stream)) == CHUNK_SIZE
    stream.close()  # type: ignore[attr-defined]
    assert list(stream) == []
    store.read(BIG_SHA)  # opened and dropped unread
    assert read_all(store, BIG_SHA) == BIG


def test_wrong_sha256_stores_nothing(store: ArtifactStore):
    wrong = sha(b"something else")
    with pytest.raises(ArtifactIntegrityError) as caught:
        store.put_stream(pieces(BIG), wrong)
    assert wrong in caught.value.message and BIG_SHA in caught.value.message
    assert caught.value.details["actual_sha256"] == BIG_SHA
    assert_absent(store, BIG_SHA)
    assert_absent(store, wrong)


def test_wrong_size_stores_nothing(store: ArtifactStore):
    writer = store.writer()
    writer.write(b"truncated")
    with pytest.raises(ArtifactIntegrityError, match="size expected 10 bytes, got 9"):
        writer.commit(sha(b"truncated"), 10)
    assert_absent(store, sha(b"truncated"))


def test_abort_leaves_nothing(store: ArtifactStore):
    writer = store.writer()
    writer.write(b"half an upload")
    assert len(leftovers(store)) == 1  # spooled on disk, not in memory
    writer.abort()
    assert_absent(store, sha(b"half an upload"))
    with pytest.raises(ValueError):
        writer.write(b"more")


def test_a_dropped_writer_leaves_nothing(store: ArtifactStore):
    writer = store.writer()
    writer.write(b"abandoned")
    del writer
    gc.collect()
    assert_absent(store, sha(b"abandoned"))


def test_a_failing_source_aborts_the_upload(store: ArtifactStore):
    def broken() -> Iterator[bytes]:
        yield b"first part"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.put_stream(broken())
    assert_absent(store, sha(b"first part"))


def test_re_put_of_the_same_bytes_is_idempotent(store: ArtifactStore):
    first = store.put_bytes(b"same")
    assert store.put_stream([b"sa", b"me"], first.sha256, 4) == first
    assert read_all(store, first.sha256) == b"same"
    assert leftovers(store) == []


def test_missing_blob(store: ArtifactStore):
    digest = sha(b"never uploaded")
    with pytest.raises(NotFoundError) as caught:
        store.read(digest)
    assert caught.value.hint is not None and "never uploaded" in caught.value.hint
    assert_absent(store, digest)
    store.delete(digest)


@pytest.mark.parametrize("digest", ["", "abc", "A" * 64, "g" * 64, "../" * 21 + "a", "a" * 63 + "\n", "a" * 65])
def test_malformed_digest_is_not_found(store: ArtifactStore, digest: str):
    assert not store.exists(digest)
    assert store.stat(digest) is None
    assert not store.verify(digest)
    for action in (store.read, store.delete, store.presigned_get):
        with pytest.raises(NotFoundError):
            action(digest)


def test_verify_detects_corruption(store: ArtifactStore):
    blob = store.put_bytes(b"good bytes")
    assert store.verify(blob.sha256)
    overwrite(store, blob.sha256, b"evil bytes")
    assert not store.verify(blob.sha256)


def test_delete(store: ArtifactStore):
    blob = store.put_bytes(b"short-lived")
    store.delete(blob.sha256)
    assert_absent(store, blob.sha256)


# -- local only ------------------------------------------------------------------------------------


def test_local_layout_and_no_presigning(tmp_path: Path):
    store = LocalArtifactStore(tmp_path / "a")
    blob = store.put_bytes(b"x")
    assert (tmp_path / "a" / "blobs" / "sha256" / blob.sha256).read_bytes() == b"x"
    assert store.url == f"file://{tmp_path / 'a'}"
    assert store.presigned_get(blob.sha256) is None
    assert store.presigned_upload() is None
    with pytest.raises(StorageError, match="not supported"):
        store.finish_upload(uuid.uuid4().hex, blob.sha256)


# -- S3 only ---------------------------------------------------------------------------------------


def test_s3_layout(s3_store: S3ArtifactStore):
    blob = s3_store.put_bytes(b"y")
    assert s3_store.client.stat_object(s3_store.bucket, f"artifacts/blobs/sha256/{blob.sha256}").size == 1
    assert s3_store.url == f"s3://{s3_store.bucket}/artifacts"


def test_presigned_get_serves_the_bytes(s3_store: S3ArtifactStore):
    s3_store.put_bytes(BIG)
    url = s3_store.presigned_get(BIG_SHA, 60, filename="env ü.tar")
    assert url is not None
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == BIG
    # moto ignores response-content-disposition; S3 and MinIO answer with it. It is part of the signed query.
    disposition = parse_qs(urlsplit(url).query)["response-content-disposition"]
    assert disposition == ["attachment; filename=\"env _.tar\"; filename*=UTF-8''env%20%C3%BC.tar"]
    with pytest.raises(NotFoundError):
        s3_store.presigned_get(sha(b"absent"))


def uploads(store: S3ArtifactStore) -> list[str]:
    return [str(o.object_name) for o in store.client.list_objects(store.bucket, f"{store.prefix}uploads/")]


def test_presigned_upload_is_adopted(s3_store: S3ArtifactStore):
    upload = s3_store.presigned_upload(60)
    assert upload is not None
    assert httpx.put(upload.url, content=BIG).status_code == 200
    assert not s3_store.exists(BIG_SHA)
    assert s3_store.finish_upload(upload.upload_id, BIG_SHA, len(BIG)) == StoredBlob(BIG_SHA, len(BIG))
    assert read_all(s3_store, BIG_SHA) == BIG
    assert uploads(s3_store) == []
    again = s3_store.presigned_upload()
    assert again is not None and again.upload_id != upload.upload_id
    httpx.put(again.url, content=BIG).raise_for_status()
    assert s3_store.finish_upload(again.upload_id, BIG_SHA) == StoredBlob(BIG_SHA, len(BIG))
    assert uploads(s3_store) == []


@pytest.mark.parametrize("declared", [(sha(b"declared"), None), (sha(b"sent"), 99)])
def test_mismatched_presigned_upload_stores_nothing(s3_store: S3ArtifactStore, declared: tuple[str, int | None]):
    upload = s3_store.presigned_upload()
    assert upload is not None
    httpx.put(upload.url, content=b"sent").raise_for_status()
    with pytest.raises(ArtifactIntegrityError):
        s3_store.finish_upload(upload.upload_id, *declared)
    assert not s3_store.exists(sha(b"sent")) and not s3_store.exists(sha(b"declared"))
    assert uploads(s3_store) == []


def test_finish_of_an_unknown_upload(s3_store: S3ArtifactStore):
    with pytest.raises(NotFoundError, match="no bytes have arrived"):
        s3_store.finish_upload(uuid.uuid4().hex, sha(b"x"))
    with pytest.raises(NotFoundError):
        s3_store.finish_upload("../blobs/sha256/" + sha(b"x"), sha(b"x"))


def test_unreachable_endpoint_is_a_storage_error_quickly(tmp_path: Path):
    endpoint = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        S3ArtifactStore(endpoint, "artifacts", "", "access", "very-secret-key", connect_timeout=1, retries=1)
    assert time.monotonic() - started < 5
    assert caught.value.hint is not None and endpoint in caught.value.hint and "artifacts" in caught.value.hint
    assert "very-secret-key" not in caught.value.one_line()


# -- open_artifact_store ---------------------------------------------------------------------------

def open_without_s3(url: str) -> ArtifactStore:
    return open_artifact_store(url, s3_endpoint=None, s3_access_key=None, s3_secret_key=None)


def test_open_local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    by_url = open_without_s3((tmp_path / "by url").as_uri())
    assert isinstance(by_url, LocalArtifactStore) and by_url.root == tmp_path / "by url"
    by_path = open_without_s3(str(tmp_path / "by-path"))
    assert isinstance(by_path, LocalArtifactStore) and by_path.root == tmp_path / "by-path"
    monkeypatch.chdir(tmp_path)
    relative = open_without_s3("relative/store")
    assert isinstance(relative, LocalArtifactStore) and relative.root == tmp_path / "relative" / "store"
    assert open_without_s3(by_url.url).url == by_url.url


def test_open_s3_store(moto_endpoint: str, tmp_path: Path):
    opened: Callable[[str], ArtifactStore] = lambda url: open_artifact_store(  # noqa: E731
        url, s3_endpoint=moto_endpoint, s3_access_key=KEY, s3_secret_key=KEY, spool_dir=tmp_path)
    store = opened("s3://opened/some/prefix/")
    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.prefix, store.url, store.spool_dir) == ("opened", "some/prefix/",
                                                                       "s3://opened/some/prefix", tmp_path)
    assert store.client.bucket_exists("opened")
    bare = opened("s3://opened")
    assert isinstance(bare, S3ArtifactStore) and bare.prefix == "" and bare.url == "s3://opened"


def test_s3_url_needs_an_endpoint():
    with pytest.raises(StorageError) as caught:
        open_without_s3("s3://bucket/prefix")
    assert caught.value.hint is not None and "ENVYARD_S3_ENDPOINT_URL" in caught.value.hint


@pytest.mark.parametrize("url", ["", "ftp://host/x", "file://otherhost/x", "file:relative", "s3://", "s3:bucket",
                                 "s3://bucket/p?x=1", "https://example.org/artifacts"])
def test_unsupported_urls(url: str):
    with pytest.raises(StorageError) as caught:
        open_artifact_store(url, s3_endpoint="http://127.0.0.1:1", s3_access_key=None, s3_secret_key=None)
    assert repr(url) in caught.value.message
    assert caught.value.hint is not None and "s3://bucket" in caught.value.hint


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9000", "ftp://host", "http://host/path"])
def test_bad_s3_endpoint(endpoint: str):
    with pytest.raises(StorageError, match="not an http"):
        S3ArtifactStore(endpoint, "bucket")
