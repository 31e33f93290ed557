"""Fetch stage: every locked package archive, verified against the lock before anything is linked.

rattler links packages from its package cache but does not check a ``file://``
archive against the sha256 in the record, and would follow a package's own
idea of where its files go. So before an install, each package is either

* already extracted in one of the cache layers under a cache entry whose
  recorded sha256 equals the lock's (the warm path: only its ``paths.json``
  and symlinks are checked), or
* an archive whose bytes are hashed against the lock and whose members are
  checked to stay inside the prefix, then handed to rattler as a local file.

Both checks raise typed errors naming the package and the offending path.

>>> check_member_path("lib/libz.so", package="zlib")
>>> check_member_path("../etc/passwd", package="evil")
Traceback (most recent call last):
...
envyard.builder.errors.UnsafePackageError: ../etc/passwd: package evil writes outside the environment prefix (hint: ...)
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import shutil
import tarfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import zstandard

from envyard.builder.errors import ChannelError, PackageIntegrityError, UnsafePackageError
from envyard.builder.model import LockedCondaPackage

_CHUNK = 1 << 20
_UNSAFE_HINT = "the package is malformed or hostile; remove it from the channel and re-lock"


@dataclass(frozen=True, slots=True)
class FetchedPackage:
    """A locked package ready for linking: from a cache layer, or as a verified local archive."""

    package: LockedCondaPackage
    archive: Path | None
    cached_in: Path | None

    @property
    def local_url(self) -> str:
        return self.archive.as_uri() if self.archive is not None else self.package.url


def check_member_path(path: str, *, package: str) -> None:
    """Refuse archive members and ``paths.json`` entries that leave the prefix."""
    pure = PurePosixPath(path)
    if path.startswith("/") or pure.is_absolute() or ".." in pure.parts or "\\" in path or not path.strip("/."):
        raise UnsafePackageError(
            f"package {package} writes outside the environment prefix", file=path, hint=_UNSAFE_HINT
        )


def check_symlink_target(path: str, target: str, *, package: str) -> None:
    """Refuse symlinks whose target resolves outside the prefix (absolute, or too many ``..``)."""
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise UnsafePackageError(
            f"package {package} has a symlink to {target!r}, outside the environment prefix",
            file=path,
            hint=_UNSAFE_HINT,
        )


def cache_entry_name(package: LockedCondaPackage) -> str:
    return f"{package.name}-{package.version}-{package.build}"


def cached_sha256(layer: Path, package: LockedCondaPackage) -> str | None:
    """The archive sha256 rattler recorded for the package's cache entry in ``layer``, if any."""
    entry = layer / cache_entry_name(package)
    lock_file = layer / f"{cache_entry_name(package)}.lock"
    if not (entry / "info" / "paths.json").is_file():
        return None
    try:
        data = lock_file.read_bytes()
    except OSError:
        return None
    return data[8:40].hex() if len(data) >= 40 else None


def check_extracted(entry: Path, package: str) -> None:
    """Check an extracted cache entry's ``info/paths.json`` and its symlinks."""
    try:
        paths = json.loads((entry / "info" / "paths.json").read_text())["paths"]
    except (OSError, ValueError, KeyError) as exc:
        raise UnsafePackageError(
            f"package {package}: unreadable info/paths.json in the package cache ({exc})",
            file=entry,
            hint="delete this cache entry and install again",
        ) from None
    for item in paths:
        rel = item["_path"]
        check_member_path(rel, package=package)
        if item.get("path_type") == "softlink":
            try:
                check_symlink_target(rel, str((entry / rel).readlink()), package=package)
            except OSError:
                continue


def _members(archive: Path) -> Iterable[tarfile.TarInfo]:
    """Every tar member of a ``.conda`` (info and pkg parts) or ``.tar.bz2`` archive."""
    if archive.name.endswith(".tar.bz2"):
        with tarfile.open(archive, "r|bz2") as tar:
            yield from tar
        return
    with zipfile.ZipFile(archive) as zf:
        for name in sorted(zf.namelist()):
            if not name.endswith(".tar.zst"):
                continue
            with (
                zf.open(name) as raw,
                zstandard.ZstdDecompressor().stream_reader(raw) as stream,
                tarfile.open(fileobj=stream, mode="r|") as tar,
            ):
                yield from tar


def check_archive(archive: Path, package: str) -> None:
    """Refuse an archive with members outside the prefix, device files, or symlinks/hardlinks out."""
    try:
        for member in _members(archive):
            check_member_path(member.name, package=package)
            if member.issym():
                check_symlink_target(member.name, member.linkname, package=package)
            elif member.islnk():
                check_member_path(member.linkname, package=package)
            elif not (member.isfile() or member.isdir()):
                raise UnsafePackageError(
                    f"package {package} contains a device, fifo or other special file",
                    file=member.name,
                    hint=_UNSAFE_HINT,
                )
    except (tarfile.TarError, zipfile.BadZipFile, zstandard.ZstdError, OSError, EOFError) as exc:
        raise PackageIntegrityError(
            f"package {package}: the archive cannot be read ({exc})", file=archive, hint="re-fetch it"
        ) from None


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(package: LockedCondaPackage, actual: str, where: Path) -> None:
    if package.sha256 and actual != package.sha256:
        raise PackageIntegrityError(
            f"package {package.name} {package.version} ({package.file_name}) has sha256 {actual}, "
            f"but the lock pins {package.sha256}",
            file=where,
            hint="the channel's copy changed after locking: re-lock, or restore the original archive",
        )


def _download(url: str, dest: Path, package: LockedCondaPackage) -> str:
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:  # noqa: S310
            _copy_hashing(response, out, digest)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ChannelError(
            f"cannot download {package.name} from {url}: {exc}", hint="check the channel URL and your network"
        ) from None
    partial.replace(dest)
    return digest.hexdigest()


def _copy_hashing(src: IO[bytes] | io.BufferedIOBase, out: IO[bytes], digest: hashlib._Hash) -> None:
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        out.write(chunk)


def fetch_package(package: LockedCondaPackage, cache_layers: Sequence[Path]) -> FetchedPackage:
    """Find ``package`` in a cache layer, or fetch and verify its archive into the first layer."""
    for layer in cache_layers:
        if package.sha256 and cached_sha256(layer, package) == package.sha256:
            check_extracted(layer / cache_entry_name(package), package.name)
            return FetchedPackage(package, None, layer)
    parsed = urllib.parse.urlsplit(package.url)
    if parsed.scheme == "file":
        archive = Path(urllib.request.url2pathname(parsed.path))
        if not archive.is_file():
            raise ChannelError(
                f"package {package.name}: {archive} does not exist", hint="the local channel moved; re-lock"
            )
        _verify(package, _hash_file(archive), archive)
    elif parsed.scheme in ("http", "https"):
        archive = cache_layers[0] / "archives" / (package.sha256 or "unhashed") / package.file_name
        if not (archive.is_file() and package.sha256 and _hash_file(archive) == package.sha256):
            _verify(package, _download(package.url, archive, package), archive)
    else:  # s3:// and other schemes go through rattler's own authenticated client
        return FetchedPackage(package, None, None)
    check_archive(archive, package.name)
    return FetchedPackage(package, archive, None)


def fetch_packages(packages: Sequence[LockedCondaPackage], cache_layers: Sequence[Path]) -> list[FetchedPackage]:
    """Fetch, verify and check every package (in parallel threads: hashing and zstd release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    if not cache_layers:
        raise ValueError("at least one package cache layer is needed")
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda p: fetch_package(p, cache_layers), packages))


def remove_archive_copies(fetched: Iterable[FetchedPackage], cache_layer: Path) -> None:
    """Drop downloaded archives once they are extracted (rattler keeps the extracted copy)."""
    root = cache_layer / "archives"
    for item in fetched:
        if item.archive is not None and root in item.archive.parents:
            shutil.rmtree(item.archive.parent, ignore_errors=True)
