"""The artifact store on S3 or MinIO through the ``minio`` SDK (path-style): ``<prefix>blobs/sha256/<hex>``.

Uploads through the API are spooled to a local temporary file while hashing, checked, then sent
to their final key, so a blob never appears before its digest is known to be right. Workers may
instead PUT to a presigned staging key ``<prefix>uploads/<id>``, which :meth:`S3ArtifactStore.finish_upload`
hashes and copies server-side to the final key. :meth:`S3ArtifactStore.iter_blobs` lists only the final keys
(with S3's LastModified); staging objects never finished, and this replica's spool files, are removed by
``remove_stale_uploads``.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import DictType, check_bucket_name

from envyard.api.storage.base import CHUNK_SIZE, ListedBlob, PresignedUpload, StaleUploads, StoredBlob
from envyard.api.storage.local import (
    ChunkStream,
    HashingSpool,
    StoreMixin,
    check_integrity,
    check_range,
    check_sha256,
    hash_chunks,
    is_sha256,
    missing,
    remove_stale_spool_files,
)
from envyard.builder.errors import ArtifactIntegrityError, NotFoundError, StorageError

_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"})
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_CLIENT_ERRORS = (S3Error, ServerError, InvalidResponseError, urllib3.exceptions.HTTPError, OSError, ValueError)


class S3BlobWriter:
    """An upload spooled to a local temporary file, sent to S3 by :meth:`commit` once checked."""

    def __init__(self, store: S3ArtifactStore) -> None:
        self._store = store
        self._spool = HashingSpool(store.spool_dir)

    def write(self, data: bytes) -> None:
        self._spool.write(data)

    def commit(self, expected_sha256: str | None = None, expected_size: int | None = None) -> StoredBlob:
        blob = self._spool.finish(expected_sha256, expected_size)
        try:
            self._store._publish_file(self._spool.path, blob)
        finally:
            self._spool.discard()
        return blob

    def abort(self) -> None:
        self._spool.discard()


class S3ArtifactStore(StoreMixin):
    """Content-addressed blobs in one bucket of an S3-compatible server."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        prefix: str = "",
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        *,
        spool_dir: Path | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        retries: int = 3,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
            raise StorageError(f"S3 endpoint {endpoint!r} is not an http(s) URL of a server",
                               hint="give the endpoint as http://host:port or https://host (no path)")
        self.endpoint = f"{parts.scheme}://{parts.netloc}"
        self.bucket = bucket
        try:
            check_bucket_name(bucket)
        except ValueError as exc:
            raise StorageError(f"invalid S3 bucket name {bucket!r}: {exc}", hint="use a valid S3 bucket name") from exc
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.spool_dir = spool_dir
        self._secret = secret_key or ""
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self.client = Minio(parts.netloc, access_key=access_key, secret_key=secret_key,
                            secure=parts.scheme == "https", region=region, http_client=http)
        self.ensure_bucket()

    # -- plumbing ---------------------------------------------------------------------------------

    def _error(self, action: str, exc: BaseException) -> StorageError:
        if isinstance(exc, S3Error):
            detail = f"{exc.code}: {exc.message}"
        elif isinstance(exc, urllib3.exceptions.MaxRetryError):
            detail = str(exc.reason)
        else:
            detail = str(exc) or type(exc).__name__
        if self._secret:
            detail = detail.replace(self._secret, "***")
        return StorageError(
            f"S3 {action} failed at {self.endpoint} (bucket {self.bucket}): {detail}",
            hint=f"check that the S3 endpoint {self.endpoint} is reachable, that bucket {self.bucket!r} exists "
            "and that the configured access key may use it",
        )

    @contextmanager
    def _calls(self, action: str) -> Iterator[None]:
        try:
            yield
        except _CLIENT_ERRORS as exc:
            raise self._error(action, exc) from exc

    def _key(self, sha256: str) -> str:
        return f"{self.prefix}blobs/sha256/{check_sha256(sha256)}"

    def _upload_key(self, upload_id: str) -> str:
        if not isinstance(upload_id, str) or _UPLOAD_ID.fullmatch(upload_id) is None:
            raise NotFoundError(f"no presigned upload {upload_id!r}",
                                hint="use the upload_id that presigned_upload returned")
        return f"{self.prefix}uploads/{upload_id}"

    def _stat_key(self, key: str) -> int | None:
        with self._calls(f"stat of {key}"):
            try:
                return int(self.client.stat_object(self.bucket, key).size or 0)
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    return None
                raise

    def _open(self, key: str, offset: int = 0, length: int | None = None) -> tuple[Iterator[bytes], str | None]:
        """The object's bytes as a ChunkStream, and its ETag; S3Error (``NoSuchKey``, ``InvalidRange``) passes."""
        try:
            response = self.client.get_object(self.bucket, key, offset=offset, length=length or 0)
        except S3Error:
            raise
        except _CLIENT_ERRORS as exc:
            raise self._error(f"read of {key}", exc) from exc

        def chunks() -> Iterator[bytes]:
            with self._calls(f"read of {key}"):
                yield from response.stream(CHUNK_SIZE, decode_content=False)

        def release() -> None:
            response.close()
            response.release_conn()

        return ChunkStream(chunks(), release), response.headers.get("ETag")

    def _publish_file(self, path: Path, blob: StoredBlob) -> None:
        key = self._key(blob.sha256)
        if self._stat_key(key) is None:
            with self._calls(f"upload of {key}"):
                self.client.fput_object(self.bucket, key, str(path), content_type="application/octet-stream")

    def _remove(self, key: str) -> None:
        with self._calls(f"removal of {key}"):
            self.client.remove_object(self.bucket, key)

    # -- the ArtifactStore protocol ---------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet."""
        with self._calls("bucket check"):
            if self.client.bucket_exists(self.bucket):
                return
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":  # created meanwhile by another process
                    raise

    def writer(self) -> S3BlobWriter:
        return S3BlobWriter(self)

    def stat(self, sha256: str) -> int | None:
        try:
            key = self._key(sha256)
        except NotFoundError:
            return None
        return self._stat_key(key)

    def read(self, sha256: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        key = self._key(sha256)
        check_range(offset, length)
        try:
            if length != 0:
                return self._open(key, offset, length)[0]
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise missing(sha256) from None
            if exc.code != "InvalidRange":  # an offset at or past the end: no bytes, if the blob exists
                raise self._error(f"read of {key}", exc) from exc
        if self._stat_key(key) is None:
            raise missing(sha256)
        return iter(())

    def delete(self, sha256: str) -> None:
        self._remove(self._key(sha256))

    def _list(self, prefix: str) -> Iterator[tuple[str, int, datetime]]:
        """(name after ``prefix``, size, last modified) of every object under ``prefix``."""
        with self._calls(f"listing of {prefix}"):
            for item in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                if item.object_name is None or item.is_dir:
                    continue
                modified = item.last_modified or datetime.now(UTC)  # S3 always sends it; unknown counts as new
                yield item.object_name[len(prefix):], int(item.size or 0), modified.astimezone(UTC)

    def iter_blobs(self) -> Iterator[ListedBlob]:
        for name, size, modified in self._list(f"{self.prefix}blobs/sha256/"):
            if is_sha256(name):
                yield ListedBlob(name, size, modified)

    def remove_stale_uploads(self, older_than: datetime, *, dry_run: bool = False,
                             spool_older_than: datetime | None = None) -> StaleUploads:
        prefix = f"{self.prefix}uploads/"
        stale = [(name, size) for name, size, modified in self._list(prefix)
                 if _UPLOAD_ID.fullmatch(name) and modified < older_than]
        for name, _size in stale:
            if not dry_run:
                self._remove(prefix + name)
        spooled = remove_stale_spool_files(self.spool_dir, spool_older_than or older_than, dry_run)
        return StaleUploads(len(stale) + spooled.count, sum(size for _, size in stale) + spooled.bytes)

    def presigned_get(self, sha256: str, expires_seconds: int = 3600, filename: str | None = None) -> str | None:
        key = self._key(sha256)
        if self._stat_key(key) is None:
            raise missing(sha256)
        headers: DictType | None = {"response-content-disposition": content_disposition(filename)} if filename else None
        with self._calls(f"presigning of {key}"):
            return self.client.presigned_get_object(
                self.bucket, key, expires=timedelta(seconds=expires_seconds), response_headers=headers
            )

    def presigned_upload(self, expires_seconds: int = 3600) -> PresignedUpload | None:
        upload_id = uuid.uuid4().hex
        with self._calls("presigning of an upload"):
            url = self.client.presigned_put_object(
                self.bucket, self._upload_key(upload_id), expires=timedelta(seconds=expires_seconds)
            )
        return PresignedUpload(upload_id, url)

    def finish_upload(self, upload_id: str, expected_sha256: str, expected_size: int | None = None) -> StoredBlob:
        staging = self._upload_key(upload_id)
        try:
            chunks, etag = self._open(staging)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise NotFoundError(f"no bytes have arrived for presigned upload {upload_id}",
                                    hint="PUT the bytes to the presigned URL before it expires") from None
            raise self._error(f"read of {staging}", exc) from exc
        blob = hash_chunks(chunks)
        try:
            check_integrity(blob, expected_sha256, expected_size)
        except ArtifactIntegrityError:
            self._remove(staging)
            raise
        key = self._key(blob.sha256)
        if self._stat_key(key) is None:
            with self._calls(f"copy of {staging} to {key}"):
                try:
                    self.client.copy_object(self.bucket, key, CopySource(self.bucket, staging, match_etag=etag))
                except S3Error as exc:
                    if exc.code != "PreconditionFailed":
                        raise
                    self._remove(staging)
                    raise ArtifactIntegrityError(
                        f"presigned upload {upload_id} changed while it was being checked; nothing was stored",
                        hint="PUT each presigned upload once, then finish it") from None
        self._remove(staging)
        return blob


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact name in RFC 5987 form."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
