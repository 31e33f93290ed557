"""The artifact store: one interface, content-addressed by sha256, streaming in both directions.

Two backends implement it: :mod:`api.storage.local` (a directory, the embedded default)
and :mod:`api.storage.s3` (S3/MinIO through the ``minio`` SDK, path-style). Blobs are
immutable and named only by their digest; a blob becomes visible only once all of its
bytes are stored and their sha256 checked, so a reader never sees a partial artifact.

Garbage collection (:mod:`api.services.gc`) lists what is stored with :meth:`ArtifactStore.iter_blobs`,
deletes with :meth:`ArtifactStore.delete`, and clears abandoned uploads (spool files, presigned staging
objects) with :meth:`ArtifactStore.remove_stale_uploads`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob in the store: its lowercase hex sha256 and its size in bytes."""

    sha256: str
    size: int

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256}"


@dataclass(frozen=True, slots=True)
class ListedBlob:
    """A published blob as a listing shows it: digest, size, and when it was written (aware UTC)."""

    sha256: str
    size: int
    modified: datetime


@dataclass(frozen=True, slots=True)
class StaleUploads:
    """What :meth:`ArtifactStore.remove_stale_uploads` found (and removed, unless it was a dry run)."""

    count: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class PresignedUpload:
    """Where an uploader may PUT a blob's bytes directly (S3), to be adopted with ``finish_upload``."""

    upload_id: str
    url: str


class BlobWriter(Protocol):
    """An upload in progress: bytes go in as they arrive; ``commit`` checks and publishes them."""

    def write(self, data: bytes) -> None: ...

    def commit(self, expected_sha256: str | None = None, expected_size: int | None = None) -> StoredBlob:
        """Publish the blob. Raises ArtifactIntegrityError (nothing published) when a declared digest
        or size differs from what was written."""
        ...

    def abort(self) -> None:
        """Drop what was written; nothing becomes visible."""
        ...


class ArtifactStore(Protocol):
    """Content-addressed blob storage."""

    url: str

    def writer(self) -> BlobWriter: ...

    def put_stream(
        self, chunks: Iterable[bytes], expected_sha256: str | None = None, expected_size: int | None = None
    ) -> StoredBlob: ...

    def put_file(self, path: Path, expected_sha256: str | None = None) -> StoredBlob: ...

    def put_bytes(self, data: bytes) -> StoredBlob: ...

    def exists(self, sha256: str) -> bool: ...

    def stat(self, sha256: str) -> int | None:
        """The blob's size, or None when it is not stored."""
        ...

    def read(self, sha256: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The blob's bytes in chunks of at most CHUNK_SIZE; NotFoundError when absent."""
        ...

    def verify(self, sha256: str) -> bool:
        """Re-read the blob and check its sha256 (False when absent or corrupted)."""
        ...

    def delete(self, sha256: str) -> None:
        """Remove the blob (nothing happens when it is absent); StorageError when the store refuses."""
        ...

    def iter_blobs(self) -> Iterator[ListedBlob]:
        """Every published blob, in no particular order; uploads still in progress (spool files, presigned
        staging objects) are not blobs and are not listed."""
        ...

    def remove_stale_uploads(self, older_than: datetime, *, dry_run: bool = False,
                             spool_older_than: datetime | None = None) -> StaleUploads:
        """Remove spool files and presigned staging objects last written before ``older_than`` (spool files:
        before ``spool_older_than`` when given, and only those no live upload locks): uploads that were
        abandoned (an upload in progress keeps writing, a presigned PUT is finished right after it)."""
        ...

    def presigned_get(self, sha256: str, expires_seconds: int = 3600, filename: str | None = None) -> str | None:
        """A URL that serves the blob without the API (S3), or None when the API must stream it (local)."""
        ...

    def presigned_upload(self, expires_seconds: int = 3600) -> PresignedUpload | None:
        """A URL a worker may PUT bytes to directly (S3), or None when uploads go through the API."""
        ...

    def finish_upload(self, upload_id: str, expected_sha256: str, expected_size: int | None = None) -> StoredBlob:
        """Adopt a presigned upload: hash what arrived, publish it under its digest, drop the staging object.
        ArtifactIntegrityError (and nothing published) when the bytes differ from what was declared."""
        ...
