"""A content-addressed blob store laid out like an OCI image layout's ``blobs/`` directory.

The image builder writes layers and configs here once; image layouts, registry
pushes and ``--load`` read from it. Writes are atomic (temporary file, then
rename), so an interrupted build never leaves a blob whose name lies about its bytes.

>>> import tempfile
>>> store = BlobStore(Path(tempfile.mkdtemp()))
>>> d = store.put_bytes(b"{}", "application/vnd.oci.empty.v1+json")
>>> d.digest
'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a'
>>> store.read(d.digest)
b'{}'
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from envyard.builder.oci.model import Descriptor


class BlobStore:
    """``root/blobs/sha256/<hex>`` files, named by the sha256 of their content."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "blobs" / "sha256"

    def path(self, digest: str) -> Path:
        algorithm, _, hex_digest = digest.partition(":")
        if algorithm != "sha256" or len(hex_digest) != 64:
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.blob_dir / hex_digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def put_bytes(self, data: bytes, media_type: str, **extra: Any) -> Descriptor:
        descriptor = Descriptor.of(media_type, data, **extra)
        if not self.has(descriptor.digest):
            with self.writer() as out:
                out.write(data)
        return descriptor

    @contextmanager
    def writer(self) -> Iterator[HashingSink]:
        """Write a blob of unknown digest; it is named by its sha256 when the block ends without error."""
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.blob_dir, prefix=".incoming-")
        sink = HashingSink(os.fdopen(fd, "wb"))
        try:
            yield sink
            sink.close()
            os.replace(tmp, self.blob_dir / sink.hexdigest())
        except BaseException:
            sink.close()
            Path(tmp).unlink(missing_ok=True)
            raise

    def link_into(self, other: BlobStore, digest: str) -> None:
        """Make ``digest`` present in ``other`` (hardlink when on one filesystem, else copy)."""
        target = other.path(digest)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".incoming-{target.name}")
        try:
            os.link(self.path(digest), tmp)
        except OSError:
            shutil.copyfile(self.path(digest), tmp)
        os.replace(tmp, target)


class HashingSink:
    """A binary file wrapper that counts and hashes what is written through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        if not self.raw.closed:
            self.raw.close()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hexdigest()
