"""The artifact store in a directory: ``<root>/blobs/sha256/<hex>``, published by atomic rename.

Writers stream into ``<root>/tmp/`` while hashing, so a blob's bytes are never held in memory and
a blob only appears under ``blobs/`` once its digest (and any declared size) has been checked.
Only files named by a digest under ``blobs/sha256/`` are blobs: :meth:`LocalArtifactStore.iter_blobs` lists
nothing else, and spool files left in ``tmp/`` by a crashed upload are removed by ``remove_stale_uploads``.
The spooling and chunked reading here are shared with :mod:`api.storage.s3`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from envyard.api.files import PRIVATE_FILE, private_dir
from envyard.api.storage.base import CHUNK_SIZE, BlobWriter, ListedBlob, PresignedUpload, StaleUploads, StoredBlob
from envyard.builder.errors import ArtifactIntegrityError, NotFoundError, StorageError

_SHA256 = re.compile(r"[0-9a-f]{64}")
SPOOL_PREFIX = "envyard-upload-"
MISSING_HINT = "the artifact was never uploaded or was garbage-collected"


def check_sha256(sha256: str) -> str:
    """``sha256`` when it is 64 lowercase hex characters; NotFoundError otherwise (no path or key is built from it)."""
    if not isinstance(sha256, str) or _SHA256.fullmatch(sha256) is None:
        raise NotFoundError(f"no artifact with digest {sha256!r}: not a sha256 (64 lowercase hex characters)",
                            hint=MISSING_HINT)
    return sha256


def check_range(offset: int, length: int | None) -> None:
    if offset < 0 or (length is not None and length < 0):
        raise ValueError(f"offset and length must not be negative (offset={offset}, length={length})")


def missing(sha256: str) -> NotFoundError:
    return NotFoundError(f"no artifact with digest sha256:{sha256}", hint=MISSING_HINT)


def is_sha256(name: str) -> bool:
    return _SHA256.fullmatch(name) is not None


def mtime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def remove_stale_spool_files(directory: Path | None, older_than: datetime, dry_run: bool = False) -> StaleUploads:
    """Remove this store's spool files (``envyard-upload-*``) in ``directory`` last written before ``older_than``
    that no live upload owns. A live upload holds an exclusive ``flock`` on its spool file (released when its
    process dies) and keeps writing to it, so an old, unlocked one belongs to an upload that died."""
    if directory is None:
        return StaleUploads()
    count = size = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return StaleUploads()
    except OSError as exc:
        raise StorageError(f"cannot list spool directory {directory}: {exc}",
                           hint="check that the directory is readable") from exc
    for entry in entries:
        if not entry.name.startswith(SPOOL_PREFIX):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or mtime(info.st_mtime) >= older_than or _owned(entry.path):
                continue
            if not dry_run:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue  # finished (renamed or discarded) meanwhile
        except OSError as exc:
            raise StorageError(f"cannot remove spool file {entry.path}: {exc}",
                               hint="check the permissions of the spool directory") from exc
        count += 1
        size += info.st_size
    return StaleUploads(count, size)


def _owned(path: str) -> bool:
    """Whether a live upload holds the lock of the spool file at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock taken just now
    return False


class HashingSpool:
    """A temporary file that hashes what is written to it; ``finish`` checks the declared digest and size."""

    def __init__(self, directory: Path | None, *, durable: bool = False) -> None:
        self.durable = durable
        try:
            fd, name = tempfile.mkstemp(prefix=SPOOL_PREFIX, dir=directory)
        except OSError as exc:
            raise StorageError(f"cannot create a spool file in {directory or tempfile.gettempdir()}: {exc}",
                               hint="check that the directory exists, is writable and has free space") from exc
        self.path = Path(name)
        with contextlib.suppress(OSError):  # ownership for garbage collection; lost when this process dies
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            raise ValueError("write to an upload that was already committed or aborted")
        try:
            self._file.write(data)
        except OSError as exc:
            self.discard()
            raise StorageError(f"cannot write to spool file {self.path}: {exc}",
                               hint="check free space where uploads are spooled") from exc
        self._hash.update(data)
        self.size += len(data)

    def finish(self, expected_sha256: str | None, expected_size: int | None) -> StoredBlob:
        """Close the file and check it; on a mismatch the file is removed and ArtifactIntegrityError raised."""
        if self.closed:
            raise ValueError("commit of an upload that was already committed or aborted")
        try:
            self._file.flush()
            if self.durable:
                os.fsync(self._file.fileno())
            self._file.close()
        except OSError as exc:
            self.discard()
            raise StorageError(f"cannot write to spool file {self.path}: {exc}",
                               hint="check free space where uploads are spooled") from exc
        self.closed = True
        blob = StoredBlob(self._hash.hexdigest(), self.size)
        try:
            check_integrity(blob, expected_sha256, expected_size)
        except ArtifactIntegrityError:
            self.discard()
            raise
        return blob

    def discard(self) -> None:
        self.closed = True
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __del__(self) -> None:  # a writer dropped without commit or abort leaves no spool file behind
        if hasattr(self, "_file") and not self.closed:
            self.discard()


def check_integrity(blob: StoredBlob, expected_sha256: str | None, expected_size: int | None) -> None:
    """ArtifactIntegrityError naming expected and actual values when ``blob`` is not what was declared."""
    problems = []
    if expected_sha256 is not None and expected_sha256.lower() != blob.sha256:
        problems.append(f"sha256 expected {expected_sha256}, got {blob.sha256}")
    if expected_size is not None and expected_size != blob.size:
        problems.append(f"size expected {expected_size} bytes, got {blob.size}")
    if problems:
        raise ArtifactIntegrityError(
            "uploaded bytes do not match what was declared: " + "; ".join(problems) + "; nothing was stored",
            hint="the upload was corrupted or truncated in transit, or the declared digest is wrong; upload again",
            details={"expected_sha256": expected_sha256, "actual_sha256": blob.sha256,
                     "expected_size": expected_size, "actual_size": blob.size},
        )


class ChunkStream(Iterator[bytes]):
    """Chunks from an open source, at most ``length`` bytes in all; the source is closed when the
    chunks run out, on an error, by :meth:`close`, or when the stream is dropped unread."""

    def __init__(self, chunks: Iterator[bytes], close: Callable[[], None], length: int | None = None) -> None:
        self._chunks = chunks
        self._close: Callable[[], None] | None = close
        self._remaining = length

    def __next__(self) -> bytes:
        if self._close is None or self._remaining == 0:
            self.close()
            raise StopIteration
        try:
            chunk = next(self._chunks)
        except BaseException:
            self.close()
            raise
        if self._remaining is not None:
            chunk = chunk[: self._remaining]
            self._remaining -= len(chunk)
        return chunk

    def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            close()

    def __del__(self) -> None:
        if hasattr(self, "_close"):
            self.close()


def hash_chunks(chunks: Iterable[bytes]) -> StoredBlob:
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return StoredBlob(digest.hexdigest(), size)


def file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            yield chunk


class StoreMixin:
    """The ArtifactStore methods both backends share, built on their ``writer``, ``stat`` and ``read``."""

    def writer(self) -> BlobWriter:
        raise NotImplementedError

    def stat(self, sha256: str) -> int | None:
        raise NotImplementedError

    def read(self, sha256: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        raise NotImplementedError

    def exists(self, sha256: str) -> bool:
        return self.stat(sha256) is not None

    def verify(self, sha256: str) -> bool:
        try:
            return hash_chunks(self.read(sha256)).sha256 == sha256
        except NotFoundError:
            return False

    def put_stream(
        self, chunks: Iterable[bytes], expected_sha256: str | None = None, expected_size: int | None = None
    ) -> StoredBlob:
        writer = self.writer()
        try:
            for chunk in chunks:
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        return writer.commit(expected_sha256, expected_size)

    def put_file(self, path: Path, expected_sha256: str | None = None) -> StoredBlob:
        return self.put_stream(file_chunks(path), expected_sha256)

    def put_bytes(self, data: bytes) -> StoredBlob:
        return self.put_stream([data])


class LocalBlobWriter:
    """An upload into ``<root>/tmp/``, renamed into ``<root>/blobs/sha256/`` by :meth:`commit`."""

    def __init__(self, store: LocalArtifactStore) -> None:
        self._store = store
        self._spool = HashingSpool(store.tmp_dir, durable=True)

    def write(self, data: bytes) -> None:
        self._spool.write(data)

    def commit(self, expected_sha256: str | None = None, expected_size: int | None = None) -> StoredBlob:
        blob = self._spool.finish(expected_sha256, expected_size)
        target = self._store.blob_dir / blob.sha256
        try:
            if target.is_file():
                self._spool.discard()
            else:
                os.chmod(self._spool.path, PRIVATE_FILE)  # mkstemp's 0600, stated: blobs are the server's alone
                os.replace(self._spool.path, target)
        except OSError as exc:
            self._spool.discard()
            raise StorageError(f"cannot publish blob sha256:{blob.sha256} in {self._store.root}: {exc}",
                               hint="check that the artifact directory is writable") from exc
        return blob

    def abort(self) -> None:
        self._spool.discard()


class LocalArtifactStore(StoreMixin):
    """Content-addressed blobs in a directory (the embedded default)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.blob_dir = self.root / "blobs" / "sha256"
        self.tmp_dir = self.root / "tmp"
        try:
            for directory in (self.root, self.root / "blobs", self.blob_dir, self.tmp_dir):
                private_dir(directory)
        except OSError as exc:
            raise StorageError(f"cannot create the artifact directory {self.root}: {exc}",
                               hint="point the artifact store at a writable directory") from exc
        self.url = self.root.as_uri()

    def _path(self, sha256: str) -> Path:
        return self.blob_dir / check_sha256(sha256)

    def writer(self) -> LocalBlobWriter:
        return LocalBlobWriter(self)

    def stat(self, sha256: str) -> int | None:
        try:
            return self._path(sha256).stat().st_size
        except (NotFoundError, FileNotFoundError):
            return None

    def read(self, sha256: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        path = self._path(sha256)
        check_range(offset, length)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the ChunkStream
        except FileNotFoundError:
            raise missing(sha256) from None
        handle.seek(offset)
        return ChunkStream(iter(lambda: handle.read(CHUNK_SIZE), b""), handle.close, length)

    def delete(self, sha256: str) -> None:
        path = self._path(sha256)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete blob sha256:{sha256} in {self.root}: {exc}",
                               hint="check that the artifact directory is writable") from exc

    def iter_blobs(self) -> Iterator[ListedBlob]:
        try:
            entries = os.scandir(self.blob_dir)
        except OSError as exc:
            raise StorageError(f"cannot list the artifact directory {self.blob_dir}: {exc}",
                               hint="check that the artifact directory exists and is readable") from exc
        with entries:
            for entry in entries:
                if not is_sha256(entry.name):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted meanwhile
                if stat.S_ISREG(info.st_mode):
                    yield ListedBlob(entry.name, info.st_size, mtime(info.st_mtime))

    def remove_stale_uploads(self, older_than: datetime, *, dry_run: bool = False,
                             spool_older_than: datetime | None = None) -> StaleUploads:
        return remove_stale_spool_files(self.tmp_dir, spool_older_than or older_than, dry_run)

    def presigned_get(self, sha256: str, expires_seconds: int = 3600, filename: str | None = None) -> str | None:
        check_sha256(sha256)
        return None

    def presigned_upload(self, expires_seconds: int = 3600) -> PresignedUpload | None:
        return None

    def finish_upload(self, upload_id: str, expected_sha256: str, expected_size: int | None = None) -> StoredBlob:
        raise StorageError("presigned uploads are not supported by the local artifact store",
                           hint="upload the bytes through the API (presigned_upload returned None)")
