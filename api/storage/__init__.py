"""Artifact storage: pick a backend from a URL (``file:///path``, a plain path, or ``s3://bucket/prefix``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from envyard.api.storage.base import (
    CHUNK_SIZE,
    ArtifactStore,
    BlobWriter,
    ListedBlob,
    PresignedUpload,
    StaleUploads,
    StoredBlob,
)
from envyard.api.storage.local import LocalArtifactStore, LocalBlobWriter
from envyard.api.storage.s3 import S3ArtifactStore, S3BlobWriter
from envyard.builder.errors import StorageError

__all__ = [
    "CHUNK_SIZE",
    "ArtifactStore",
    "BlobWriter",
    "ListedBlob",
    "LocalArtifactStore",
    "LocalBlobWriter",
    "PresignedUpload",
    "S3ArtifactStore",
    "S3BlobWriter",
    "StaleUploads",
    "StoredBlob",
    "open_artifact_store",
]

ACCEPTED = "use file:///absolute/path, a plain directory path, or s3://bucket/optional/prefix"


def open_artifact_store(
    url: str,
    *,
    s3_endpoint: str | None,
    s3_access_key: str | None,
    s3_secret_key: str | None,
    s3_region: str = "us-east-1",
    spool_dir: Path | None = None,
) -> ArtifactStore:
    """The artifact store ``url`` names; StorageError when the URL is not one of the accepted forms."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if url and not scheme:
        return LocalArtifactStore(Path(url).expanduser().absolute())
    if scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/") and not parts.query:
        return LocalArtifactStore(Path(unquote(parts.path)))
    if scheme == "s3" and parts.netloc and not parts.query and not parts.fragment:
        if not s3_endpoint:
            raise StorageError(f"artifact store {url} is on S3 but no S3 endpoint is configured",
                               hint="set ENVYARD_S3_ENDPOINT_URL (e.g. http://minio:9000)")
        return S3ArtifactStore(s3_endpoint, parts.netloc, unquote(parts.path), s3_access_key, s3_secret_key, s3_region,
                               spool_dir=spool_dir)
    raise StorageError(f"unsupported artifact store URL {url!r}", hint=ACCEPTED)
