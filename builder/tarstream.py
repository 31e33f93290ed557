"""Deterministic tar streams of a directory tree, compressed without timestamps.

Used for image layers and packed environments alike. The same files give the
same bytes whatever the host: members in sorted path order, parents before
children, fixed mtime, uid/gid and empty user names, permissions reduced to
0755/0644 (directories and executables, other files), hardlinks stored as
regular files (so cache hardlinks never leak into an archive), PAX format.

>>> import io, tempfile
>>> root = Path(tempfile.mkdtemp()); (root / "bin").mkdir(); _ = (root / "bin" / "tool").write_text("x")
>>> spec = TarSpec(arc_root="opt/env", mtime=0, uid=0, gid=0)
>>> out = io.BytesIO(); write_tar(out, root, ["bin/tool"], spec)
4
>>> [m.name for m in tarfile.open(fileobj=io.BytesIO(out.getvalue()))]
['opt', 'opt/env', 'opt/env/bin', 'opt/env/bin/tool']
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from envyard.builder.oci.store import HashingSink

Compression = Literal["gzip", "zstd", "none"]


@dataclass(frozen=True, slots=True)
class TarSpec:
    """Where members go in the archive and whom they belong to."""

    arc_root: str = ""
    mtime: int = 0
    uid: int = 0
    gid: int = 0
    include_root_dirs: bool = True


def tree_entries(root: Path) -> Iterator[str]:
    """Every file, symlink and empty directory below ``root``, relative, in no particular order.

    Symlinks to directories are entries, never followed.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        base = "" if rel_dir == "." else rel_dir + "/"
        yield from (base + d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))
        yield from (base + f for f in filenames)
        if not dirnames and not filenames and base:
            yield rel_dir


def _sort_key(path: str) -> tuple[str, ...]:
    return PurePosixPath(path).parts


def ancestors(paths: Iterable[str]) -> list[str]:
    """Every directory above the given relative paths, without duplicates.

    >>> ancestors(["a/b/c.txt", "a/d"])
    ['a', 'a/b']
    """
    seen: set[str] = set()
    for path in paths:
        parts = PurePosixPath(path).parts[:-1]
        for i in range(1, len(parts) + 1):
            seen.add("/".join(parts[:i]))
    return sorted(seen, key=_sort_key)


def _info(name: str, spec: TarSpec) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = spec.mtime, spec.uid, spec.gid, "", ""
    return info


def _arc(spec: TarSpec, rel: str) -> str:
    return f"{spec.arc_root}/{rel}" if spec.arc_root else rel


def write_tar(
    out: IO[bytes], root: Path, paths: Iterable[str], spec: TarSpec, sources: Mapping[str, Path] | None = None
) -> int:
    """Write ``paths`` (relative to ``root``; files, symlinks or directories) as a tar; returns members written.

    ``sources`` maps some of those paths to another file on disk to read them from.
    """
    sources = sources or {}
    rels = set(paths) | set(sources)
    parents = set(ancestors(rels))
    if spec.include_root_dirs and spec.arc_root:
        root_parts = PurePosixPath(spec.arc_root).parts
        root_dirs = ["/".join(root_parts[: i + 1]) for i in range(len(root_parts))]
    else:
        root_dirs = []
    count = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in root_dirs:
            info = _info(name, spec)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
            count += 1
        for rel in sorted(parents | rels, key=_sort_key):
            full = sources.get(rel) or root / rel
            info = _info(_arc(spec, rel), spec)
            if rel in parents:  # directories are recorded with fixed permissions, present on disk or not
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                count += 1
                continue
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(full), 0o777
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                info.mode = 0o755 if st.st_mode & 0o111 else 0o644
                info.size = st.st_size
                with open(full, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                continue
            count += 1
    return count


@contextmanager
def compressed(sink: IO[bytes], compression: Compression, level: int | None = None) -> Iterator[HashingSink]:
    """A writer that hashes what it is given, compresses it without timestamps and writes to ``sink``."""
    if compression == "gzip":
        with gzip.GzipFile(filename="", fileobj=sink, mode="wb", compresslevel=level or 6, mtime=0) as gz:
            yield HashingSink(gz)  # type: ignore[arg-type]
    elif compression == "zstd":
        import zstandard

        compressor = zstandard.ZstdCompressor(level=level or 3, write_content_size=False)
        with compressor.stream_writer(sink, closefd=False) as zw:
            yield HashingSink(zw)
    else:
        yield HashingSink(sink)
